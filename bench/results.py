"""The figures' common shape, bench/results.json, the printed table, and the command line of every bench module.

Every figure is a dict:

- `repeats`: the figure's value once per repeat, in order (what a repeat is, each figure module's
  docstring says: e.g. a job iteration paired with a repeat of its standalone baseline, or one
  start of a job paired with one start of its actors alone);
- `median`, `min`, `max`, `n`: those repeats' median, range and count (`spread`, the one place
  that computes them); `ratio` is the same median, kept under its old key for older readers;
- `target` (e.g. ">= 0.90") and `met`, judged on the median;
- `raw` (the numbers the repeats came from), `notes` (what to know when reading it, e.g. a skipped
  setting, or fewer than 3 repeats), `headline` (one line for the table), `seconds` (time spent
  measuring it) and `run` (quick or full, when, which commit, the machine's load).

The comparisons against a standalone baseline also hold `ratio_best_of_repeats` /
`met_best_of_repeats`: the best iteration of the job over the best repeat of the baseline, which
other processes on a shared machine disturb far less than the medians (docs/benchmarks.md).
A figure whose measurement failed keeps the same keys, with `error` saying why. Results written
before repeats were kept have no `repeats`: the tables show them as a single reading.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import platform
import statistics
import subprocess
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable, Sequence

from bench.job_runs import DEFAULT_WORKDIR, REPO, Bench, machine_cores, ratio

RESULTS_PATH = REPO / "bench" / "results.json"


def met(value: float | None, target: str) -> bool | None:
    """Whether `value` meets a target written as ">= 0.90", "<= 1.15", "> 1"; None when not a comparison."""
    if value is None:
        return None
    for op, check in ((">=", lambda a, b: a >= b), ("<=", lambda a, b: a <= b), (">", lambda a, b: a > b),
                      ("<", lambda a, b: a < b)):
        if target.startswith(op):
            try:
                return check(value, float(target[len(op):].split()[0].rstrip("x×")))
            except ValueError:
                return None
    return None


FEW_REPEATS = 3  # below this a [min–max] says little, so the figure's notes say how few there were
VERDICTS = {True: "yes", False: "**no**", None: "-"}


def spread(values: Iterable[float | None]) -> dict:
    """`median`, `min`, `max`, `n` and `repeats` of per-repeat values, each rounded to 4 decimals as the ratios always
    were. A repeat that could not be measured (None) is left out of all of them, so n counts what the median is over."""
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return {"median": None, "min": None, "max": None, "n": 0, "repeats": []}
    return {"median": round(statistics.median(kept), 4), "min": round(min(kept), 4), "max": round(max(kept), 4),
            "n": len(kept), "repeats": [round(v, 4) for v in kept]}


def paired(numerators: Sequence[float | None], denominators: Sequence[float | None]) -> list[float | None]:
    """One ratio per pair, k-th over k-th, as many as the shorter side has (a job's steady iterations over a baseline's
    repeats, each side in the order it ran). Pairing rather than crossing every iteration with every repeat keeps n
    at the number of independent readings of the scarcer side."""
    return [ratio(a, b) for a, b in zip(numerators, denominators)]


def repeat_seconds(per_iteration: dict, key: str) -> list[float]:
    """A baseline's seconds in each of its repeats, summed over the iterations it timed. The shape is
    bench/standalone_vllm.py's and standalone_learner.py's: iteration -> {"tokens": n, key: [seconds per repeat]}."""
    timed = [entry[key] for entry in per_iteration.values() if entry.get(key)]
    return [sum(times[r] for times in timed) for r in range(min(map(len, timed)))] if timed else []


def repeat_rates(per_iteration: dict, key: str) -> list[float | None]:
    """A baseline's tokens/s in each of its repeats: every timed iteration's tokens over that repeat's seconds."""
    tokens = sum(entry["tokens"] for entry in per_iteration.values() if entry.get(key))
    return [ratio(tokens, seconds) for seconds in repeat_seconds(per_iteration, key)]


def figure(repeats: Iterable[float | None], target: str, raw: dict, notes: list[str] | None = None,
           best_of: float | None = None, **extra) -> dict:
    """`repeats`: the figure's value once per repeat, in order; the figure is their median, judged against `target`.
    `best_of`: for comparisons against a standalone baseline, the ratio of the best iteration of the job over the
    best repeat of the baseline (a second reading, steadier when other work shares the cores)."""
    numbers = spread(repeats)
    notes = list(notes or [])
    if 0 < numbers["n"] < FEW_REPEATS:
        notes.append(f"n = {numbers['n']}: fewer than {FEW_REPEATS} repeats, so the range says little")
    result = {"ratio": numbers["median"], **numbers, "target": target, "met": met(numbers["median"], target),
              "raw": raw, "notes": notes, **extra}
    if best_of is not None:
        result["ratio_best_of_repeats"] = round(best_of, 4)
        result["met_best_of_repeats"] = met(best_of, target)
    return result


def failed(target: str, error: str) -> dict:
    return {"ratio": None, **spread([]), "target": target, "met": None, "raw": {}, "notes": [], "error": error}


def reading(numbers: dict, target: str, digits: int = 3) -> dict:
    """What a table shows of a figure, or of any dict with spread's keys: `value` (the median), `spread` (its
    [min–max], or "single reading" for a dict without `repeats`, written before repeats were kept, whose `ratio`
    is shown instead), `n`, `met` (on the median) and `misses` (how many repeats miss the target)."""
    if "repeats" not in numbers:
        value = numbers.get("ratio")
        return {"value": "not measured" if value is None else f"{value:.{digits}g}",
                "spread": "" if value is None else " (single reading)", "n": "-", "met": met(value, target), "misses": 0}
    value, n = numbers["median"], numbers["n"]
    return {"value": "not measured" if value is None else f"{value:.{digits}g}",
            "spread": f" [{numbers['min']:.{digits}g}–{numbers['max']:.{digits}g}]" if n > 1 else "",
            "n": str(n), "met": met(value, target),
            "misses": sum(met(v, target) is False for v in numbers["repeats"]) if n > 1 else 0}


def markdown_cells(numbers: dict, target: str, digits: int = 3) -> tuple[str, str, str]:
    """(value, n, met) cells: a median that misses its target in bold, and how many repeats miss when some do."""
    shown = reading(numbers, target, digits)
    value = f"**{shown['value']}**" if shown["met"] is False else shown["value"]
    verdict = VERDICTS[shown["met"]]
    if shown["misses"] and shown["met"] is not None:
        verdict += f" ({shown['misses']} of {shown['n']} repeats miss)"
    return value + shown["spread"], shown["n"], verdict


def run_info(bench: Bench) -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return ""

    return {
        "mode": "quick" if bench.quick else "full",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_files": len(git("status", "--porcelain").splitlines()),
        "cores": machine_cores(),
        "machine": f"{platform.machine()}, {machine_cores()} cores, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, no GPU",
        "load_average_1m": round(os.getloadavg()[0], 2),
        "command": " ".join(["python", "-m", "bench" if Path(sys.argv[0]).stem == "__main__"
                             else f"bench.{Path(sys.argv[0]).stem}", *sys.argv[1:]]),
    }


def measure_all(bench: Bench, measures: dict[str, tuple[str, Callable[[Bench], dict]]]) -> dict[str, dict]:
    """Run each figure's measure(bench), keeping going past a failure; name -> figure."""
    results = {}
    for name, (target, measure) in measures.items():
        bench.log(f"[bench] {name}")
        started, load_before = time.perf_counter(), round(os.getloadavg()[0], 2)
        try:
            result = measure(bench)
        except Exception as exc:
            bench.log(traceback.format_exc())
            result = failed(target, f"{type(exc).__name__}: {exc}")
        result["seconds"] = round(time.perf_counter() - started, 1)
        # Load before and after: other work on the machine while it measured shows in the pair.
        result["run"] = {**run_info(bench), "load_average_1m_before": load_before,
                         "threads": bench.thread_note or "as the job picks them"}
        results[name] = result
        bench.log(f"[bench] {name}: median {result['ratio']} [{result.get('min')}-{result.get('max')}], "
                  f"n {result.get('n')} (target {result['target']}, met {result['met']}) in {result['seconds']}s")
    return results


def write(results: dict[str, dict], path: Path = RESULTS_PATH) -> None:
    """Merge into the file: a run of some figures (--only) keeps the others' last results."""
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(results)
    path.write_text(json.dumps(merged, indent=2) + "\n")


def table(results: dict[str, dict]) -> str:
    lines = [f"{'figure':<26}{'median [min-max]':<26}{'n':>3}{'best-of':>9}  {'target':<10}{'met':<8}note"]
    for name, result in results.items():
        shown = reading(result, result["target"])
        value = (shown["value"] + shown["spread"]).replace("–", "-")
        best = "" if result.get("ratio_best_of_repeats") is None else f"{result['ratio_best_of_repeats']:.3f}"
        verdict = {True: "yes", False: "MISSED", None: "-"}[shown["met"]]
        note = result.get("error", "").splitlines()[0][:70] if result.get("error") else result.get("headline", "")
        lines.append(f"{name:<26}{value:<26}{shown['n']:>3}{best:>9}  {result['target']:<10}{verdict:<8}{note}")
    return "\n".join(lines)


def parser(description: str, prog: str = "python -m bench") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--quick", action="store_true", help="small jobs (the whole suite in under 10 minutes on 2 cores)")
    p.add_argument("--smollm2", metavar="PATH",
                   help="local HF folder of SmolLM2-135M-Instruct: adds the real-model settings (skipped without it)")
    p.add_argument("--workdir", default=str(DEFAULT_WORKDIR), help="where the jobs write (default runs/bench)")
    p.add_argument("--results", default=str(RESULTS_PATH), help="results file to merge into (default bench/results.json)")
    p.add_argument("--job-threads", action="store_true",
                   help="let the jobs pick their CPU threads (phase threads) instead of 1 per worker and rank")
    p.add_argument("--reuse-jobs", action="store_true",
                   help="development aid: reuse finished jobs left in --workdir by an earlier run with the same command")
    return p


def main_for(name: str, target: str, measure: Callable[[Bench], dict], description: str) -> int:
    """The command line of one figure's module: `python -m bench.<module> [--quick] [--smollm2 PATH]`."""
    module = Path(sys.argv[0]).stem  # run as __main__, so the file's name says which module
    args = parser(description, prog=f"python -m bench.{module}").parse_args()
    bench = Bench(quick=args.quick, workdir=args.workdir, smollm2=args.smollm2, reuse=args.reuse_jobs,
                  job_threads=args.job_threads)
    results = measure_all(bench, {name: (target, measure)})
    write(results, Path(args.results))
    print(json.dumps(results[name], indent=2))
    print(table(results))
    return 0 if "error" not in results[name] else 1


def markdown(results: dict[str, dict]) -> str:
    """The figures as the markdown table of docs/benchmarks.md."""
    lines = ["| figure | median [min–max] | n | met (on the median) | best of repeats | met | target | numbers |",
             "|---|---|---|---|---|---|---|---|"]
    for name, result in results.items():
        value, n, verdict = markdown_cells(result, result["target"])
        best = "-" if result.get("ratio_best_of_repeats") is None else f"{result['ratio_best_of_repeats']:.3g}"
        source = result.get("error", "").splitlines()[0] if result.get("error") else result.get("headline", "")
        lines.append(f"| {name} | {value} | {n} | {verdict} | {best} | "
                     f"{VERDICTS[result.get('met_best_of_repeats')]} | {result['target']} | {source} |")
    return "\n".join(lines)
