"""The `hintflow` command: one name for the project's entry points (`[project.scripts]` in pyproject.toml).

    hintflow run SPEC [--set KEY=VALUE ...] [--output-dir DIR] [--resume DIR] [--check] ...
    hintflow compare DIR [DIR ...] [--output DIR]
    hintflow score --model M --data D [--workers N] [--keep-above X | --keep-fraction F] ...
    hintflow bench [--quick] [--only NAME ...] ...       (from a clone of the repository)
    hintflow study --model DIR | --report ...            (from a clone of the repository)
    hintflow spec [FIELD]

Each subcommand hands the rest of the command line, unchanged, to the module it names (jobs.run,
jobs.outputs.compare, jobs.score, bench, bench.seed_study) and exits with its exit code; `python -m jobs.run` and the
others keep working on their own. `hintflow spec` prints jobs/spec_reference.py's reference of every
spec field, or one field or section of it.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

PROG = "hintflow"


@dataclass(frozen=True)
class Command:
    usage: str
    summary: str
    handler: Callable[[list[str]], int]


def _run(argv: list[str]) -> int:
    from jobs.run import main

    return main(argv)


def _compare(argv: list[str]) -> int:
    from jobs.outputs.compare import main

    return main(argv)


def _from_clone(module: str, command: str):
    """Import a module of bench/, which is not installed with hintflow: it is found from a clone's root.

    A console script's sys.path holds the installed packages, not the current directory, so the
    clone's root is added when the current directory is one. None (after one line on stderr) otherwise.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != "bench":
            raise
    here = Path.cwd()
    if (here / "bench" / "__init__.py").is_file():
        sys.path.insert(0, str(here))
        return importlib.import_module(module)
    print(f"{PROG} {command}: bench/ is not installed with hintflow; it runs from a clone of the repository "
          f"(cd into the clone and run `{PROG} {command}` again)", file=sys.stderr)
    return None


def _bench(argv: list[str]) -> int:
    module = _from_clone("bench.__main__", "bench")
    if module is None:
        return 2
    # bench's main() reads sys.argv itself.
    saved = sys.argv
    sys.argv = [f"{PROG} bench", *argv]
    try:
        return module.main()
    finally:
        sys.argv = saved


def _study(argv: list[str]) -> int:
    module = _from_clone("bench.seed_study", "study")
    if module is None:
        return 2
    return module.main(argv)


def _score(argv: list[str]) -> int:
    from jobs.score import main

    return main(argv)


def _spec(argv: list[str]) -> int:
    from jobs import spec_reference

    parser = argparse.ArgumentParser(
        prog=f"{PROG} spec",
        description="The job spec's fields: type, default and description (docs/spec.md).",
    )
    parser.add_argument("field", nargs="?", metavar="FIELD",
                        help="a dotted path (rollout.temperature) or a section (eval); default: every field")
    args = parser.parse_args(argv)
    if args.field is None:
        sys.stdout.write(spec_reference.text())
        return 0
    found = spec_reference.lookup(args.field)
    if found is None:
        print(f"{PROG} spec: the job spec has no field {args.field!r}; {spec_reference.suggestion(args.field)}",
              file=sys.stderr)
        return 2
    sys.stdout.write(found)
    return 0


COMMANDS = {
    "run": Command("run SPEC ...", "run a job from a YAML spec (python -m jobs.run: --set, --resume, --check)", _run),
    "compare": Command("compare DIR ...", "compare runs: a table, compare.png, compare.html (python -m jobs.outputs.compare)",
                       _compare),
    "score": Command("score --model M --data D ...", "a data audit by CLL: which examples sit outside the "
                     "model's distribution (python -m jobs.score)", _score),
    "bench": Command("bench ...", "the benchmark suite (python -m bench; from a clone of the repository)", _bench),
    "study": Command("study ...", "the seed study (python -m bench.seed_study; from a clone of the repository)",
                     _study),
    "spec": Command("spec [FIELD]", "the spec's fields: type, default, description (or one: rollout.temperature)",
                    _spec),
}


def help_text() -> str:
    width = max(len(c.usage) for c in COMMANDS.values())
    lines = [f"usage: {PROG} COMMAND [ARGS ...]", "",
             "On-policy data generation and training on Ray: one YAML spec, laptop CPU to cluster.", "",
             "commands:"]
    lines += [f"  {c.usage:<{width}}  {c.summary}" for c in COMMANDS.values()]
    lines += ["", f"`{PROG} COMMAND --help` shows a command's own options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(help_text(), file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    if name in ("-h", "--help", "help"):
        print(help_text())
        return 0
    command = COMMANDS.get(name)
    if command is None:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        guess = f"did you mean {close[0]}? " if close else ""
        print(f"{PROG}: unknown command {name!r}; {guess}(commands: {', '.join(COMMANDS)}; {PROG} --help)",
              file=sys.stderr)
        return 2
    return command.handler(rest)


if __name__ == "__main__":
    sys.exit(main())
