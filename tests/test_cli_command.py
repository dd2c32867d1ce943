"""The `hintflow` command (jobs/cli.py) and the spec reference (jobs/spec_reference.py, docs/spec.md).

Every dispatch is checked against a recording stand-in for the target's main, so nothing here
starts Ray, vLLM or DeepSpeed; the whole file runs in a few seconds.
"""

from __future__ import annotations

import importlib
import re
import sys
import tomllib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from jobs import cli, spec_reference
from jobs.core.eval_spec import EvalSpec
from jobs.core.spec import JobSpec
from jobs.core.rollout_spec import RolloutSpec

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"


class Recorder:
    """Stands in for a target's main: records what it was given and returns a chosen exit code."""

    def __init__(self, code: int, reads_sys_argv: bool = False):
        self.code, self.reads_sys_argv, self.calls = code, reads_sys_argv, []

    def __call__(self, argv=None):
        self.calls.append(list(sys.argv[1:]) if self.reads_sys_argv else argv)
        return self.code


# Dispatch


def test_run_hands_its_arguments_to_jobs_run_unchanged(monkeypatch):
    import jobs.run

    target = Recorder(7)
    monkeypatch.setattr(jobs.run, "main", target)
    rest = ["configs/dpo.yaml", "--set", "a=1", "b.c=2", "--set", "d=x y", "--resume", "runs/dpo", "--check",
            "--overwrite", "--actor-logs", "--output-dir", "out", "--help"]
    assert cli.main(["run", *rest]) == 7
    assert target.calls == [rest]


def test_run_reaches_the_real_parser_of_jobs_run(monkeypatch, capsys):
    # The real jobs.run.main: its argument errors (before anything starts) come back as they are.
    import jobs.run

    def no_job(*args, **kwargs):
        raise AssertionError("a job was started")

    monkeypatch.setattr(jobs.run, "run", no_job)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["run", "--set", "a=1", "configs/hinted_idft.yaml"])
    assert stopped.value.code == 2
    assert "give the spec first" in capsys.readouterr().err


def test_compare_hands_its_arguments_to_jobs_compare(monkeypatch):
    import jobs.outputs.compare

    target = Recorder(3)
    monkeypatch.setattr(jobs.outputs.compare, "main", target)
    assert cli.main(["compare", "runs/a", "runs/b", "--output", "cmp"]) == 3
    assert target.calls == [["runs/a", "runs/b", "--output", "cmp"]]


def test_bench_hands_its_arguments_to_bench_through_sys_argv(monkeypatch):
    bench_main = importlib.import_module("bench.__main__")
    target = Recorder(1, reads_sys_argv=True)
    monkeypatch.setattr(bench_main, "main", target)
    before = list(sys.argv)
    assert cli.main(["bench", "--quick", "--only", "weight_sync", "scaling"]) == 1
    assert target.calls == [["--quick", "--only", "weight_sync", "scaling"]]
    assert sys.argv == before


def test_study_hands_its_arguments_to_the_seed_study(monkeypatch):
    seed_study = importlib.import_module("bench.seed_study")
    target = Recorder(0)
    monkeypatch.setattr(seed_study, "main", target)
    assert cli.main(["study", "--model", "m", "--seeds", "1", "2"]) == 0
    assert target.calls == [["--model", "m", "--seeds", "1", "2"]]


@pytest.fixture
def no_bench_on_path(monkeypatch, tmp_path):
    """A console script's view: no bench/ on sys.path, none imported, and a current directory without one."""
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not (Path(p or ".") / "bench").exists()])
    for name in [n for n in sys.modules if n == "bench" or n.startswith("bench.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.chdir(tmp_path)
    importlib.invalidate_caches()
    with pytest.raises(ModuleNotFoundError):  # else the tests below would start the real bench
        importlib.import_module("bench")
    yield tmp_path
    for name in [n for n in sys.modules if n == "bench" or n.startswith("bench.")]:
        del sys.modules[name]  # the fakes; monkeypatch then restores the real ones


@pytest.mark.parametrize("command", ["bench", "study"])
def test_bench_outside_a_clone_says_where_it_runs(no_bench_on_path, capsys, command):
    assert cli.main([command, "--quick"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "from a clone of the repository" in lines[0] and captured.out == ""


def test_study_from_a_clone_root_finds_bench_there(no_bench_on_path):
    # A clone's root as the current directory, as with the installed console script.
    (no_bench_on_path / "bench").mkdir()
    (no_bench_on_path / "bench" / "__init__.py").write_text("")
    (no_bench_on_path / "bench" / "seed_study.py").write_text("def main(argv=None):\n    return 40 + len(argv)\n")
    importlib.invalidate_caches()
    assert cli.main(["study", "--report", "x"]) == 42


def test_help_lists_every_subcommand_on_one_line(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("run", "compare", "score", "bench", "study", "spec"):
        lines = [line for line in out.splitlines() if line.startswith(f"  {name} ")]
        assert len(lines) == 1, name
    assert set(cli.COMMANDS) == {"run", "compare", "score", "bench", "study", "spec"}


def test_an_unknown_command_is_one_line_with_a_suggestion(capsys):
    assert cli.main(["compre", "runs/a"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean compare?" in err


def test_pyproject_declares_the_hintflow_script():
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert scripts["hintflow"] == "jobs.cli:main"
    module, _, attr = scripts["hintflow"].partition(":")
    assert getattr(importlib.import_module(module), attr) is cli.main


# `hintflow spec`


def test_spec_prints_one_field(capsys):
    assert cli.main(["spec", "rollout.temperature"]) == 0
    out = capsys.readouterr().out
    field = RolloutSpec.model_fields["temperature"]
    assert out.splitlines()[0] == f"rollout.temperature: float, >= 0 (default {field.default})"
    assert "rollout.top_p" not in out and "hinted.temperature" not in out


def test_spec_prints_a_section_with_every_field_under_it(capsys):
    assert cli.main(["spec", "eval"]) == 0
    out = capsys.readouterr().out
    for name in EvalSpec.model_fields:
        assert re.search(rf"^eval\.{name}: ", out, re.M) or f"[eval.{name}]" in out, name
    assert not re.search(r"^\[?rollout\.", out, re.M)  # fields of other sections are left out


def test_spec_literal_choices_and_list_items(capsys):
    assert cli.main(["spec", "model.dtype"]) == 0
    assert capsys.readouterr().out.startswith("model.dtype: float32 | bfloat16 | float16 (default float32)")
    assert cli.main(["spec", "reward.sources.path"]) == 0
    assert "(kind reward_model)" in capsys.readouterr().out


def test_spec_without_a_field_prints_the_whole_reference(capsys):
    assert cli.main(["spec"]) == 0
    out = capsys.readouterr().out
    assert out == spec_reference.text() and out.startswith("[top level]\n")
    assert "\n[rollout.hinted]\n" in out and "\nrollout.hinted.beta: float, >= 0 (default 0.7)\n" in out


@pytest.mark.parametrize("asked, meant", [("rollout.temprature", "rollout.temperature"), ("evl", "eval"),
                                          ("train.dpo.los", "train.dpo.loss")])
def test_an_unknown_field_is_one_line_with_a_suggestion(capsys, asked, meant):
    assert cli.main(["spec", asked]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and f"did you mean {meant}?" in captured.err and repr(asked) in captured.err


# docs/spec.md


def test_the_committed_reference_is_what_the_schema_gives_now():
    assert spec_reference.DOC_PATH == REPO / "docs" / "spec.md"
    assert spec_reference.DOC_PATH.read_text() == spec_reference.markdown(), (
        f"docs/spec.md is stale; regenerate it: .venv/bin/{spec_reference.REGENERATE}")
    assert spec_reference.main(["--check"]) == 0


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _schema_paths(model: type[BaseModel], prefix: str = "") -> list[tuple[str, bool]]:
    """(path, is_section) for every field, walked from model_fields; list items get `[]`."""
    found = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        models = _models_in(field.annotation)
        is_list = typing.get_origin(field.annotation) is list
        found.append((path, bool(models)))
        for child in models:
            found += _schema_paths(child, f"{path}[].") if is_list else _schema_paths(child, f"{path}.")
    return found


def test_every_field_of_the_job_spec_is_in_the_reference():
    doc = spec_reference.DOC_PATH.read_text()
    paths = _schema_paths(JobSpec)
    assert len(paths) > 150 and ("reward.sources[].kind", False) in paths
    for path, is_section in paths:
        if is_section:
            assert re.search(rf"^##+ {re.escape(path)}$", doc, re.M), path
        else:  # a list item's field may be named per kind: reward.sources[reward_model].path
            pattern = re.escape(f"`{path}`").replace(re.escape("[]"), r"\[[^\]]*\]")
            assert re.search(rf"^\| {pattern} \|", doc, re.M), path
