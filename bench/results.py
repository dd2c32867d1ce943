"""The figures' common shape, bench/results.json, the printed table, and the command line of every bench module.

Every figure is a dict: `ratio` (the number the issue asks for, from medians; None when it could
not be measured), `target` (e.g. ">= 0.90"), `met`, `raw` (the numbers the ratio came from),
`notes` (what to know when reading it, e.g. a skipped setting), `headline` (one line for the
table), `seconds` (time spent measuring it) and `run` (quick or full, when, which commit, the
machine's load). The four comparisons against a standalone baseline also hold
`ratio_best_of_repeats` / `met_best_of_repeats`: the best iteration of the job over the best
repeat of the baseline, which other processes on a shared machine disturb far less than the
medians (docs/benchmarks.md). A figure whose measurement failed keeps the same keys, with
`error` saying why.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import platform
import subprocess
import time
import traceback
from pathlib import Path
from typing import Callable

from bench.job_runs import DEFAULT_WORKDIR, REPO, Bench, machine_cores

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


def figure(ratio: float | None, target: str, raw: dict, notes: list[str] | None = None,
           best_of: float | None = None, **extra) -> dict:
    """`best_of`: for comparisons against a standalone baseline, the same ratio from the best iteration of the job
    over the best repeat of the baseline (a second reading, steadier when other work shares the cores)."""
    result = {"ratio": None if ratio is None else round(ratio, 4), "target": target, "met": met(ratio, target),
              "raw": raw, "notes": notes or [], **extra}
    if best_of is not None:
        result["ratio_best_of_repeats"] = round(best_of, 4)
        result["met_best_of_repeats"] = met(best_of, target)
    return result


def failed(target: str, error: str) -> dict:
    return {"ratio": None, "target": target, "met": None, "raw": {}, "notes": [], "error": error}


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
    }


def measure_all(bench: Bench, measures: dict[str, tuple[str, Callable[[Bench], dict]]]) -> dict[str, dict]:
    """Run each figure's measure(bench), keeping going past a failure; name -> figure."""
    results = {}
    for name, (target, measure) in measures.items():
        bench.log(f"[bench] {name}")
        started = time.perf_counter()
        try:
            result = measure(bench)
        except Exception as exc:
            bench.log(traceback.format_exc())
            result = failed(target, f"{type(exc).__name__}: {exc}")
        result["seconds"] = round(time.perf_counter() - started, 1)
        result["run"] = {**run_info(bench), "threads": bench.thread_note or "as the job picks them"}
        results[name] = result
        bench.log(f"[bench] {name}: ratio {result['ratio']} (target {result['target']}, met {result['met']}) "
                  f"in {result['seconds']}s")
    return results


def write(results: dict[str, dict], path: Path = RESULTS_PATH) -> None:
    """Merge into the file: a run of some figures (--only) keeps the others' last results."""
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(results)
    path.write_text(json.dumps(merged, indent=2) + "\n")


def table(results: dict[str, dict]) -> str:
    lines = [f"{'figure':<26}{'ratio':>9}{'best-of':>9}  {'target':<10}{'met':<5}note"]
    for name, result in results.items():
        value = "-" if result.get("ratio") is None else f"{result['ratio']:.3f}"
        best = "" if result.get("ratio_best_of_repeats") is None else f"{result['ratio_best_of_repeats']:.3f}"
        verdict = {True: "yes", False: "NO", None: "-"}[result.get("met")]
        note = result.get("error", "").splitlines()[0][:70] if result.get("error") else result.get("headline", "")
        lines.append(f"{name:<26}{value:>9}{best:>9}  {result['target']:<10}{verdict:<5}{note}")
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
    lines = ["| figure | ratio (median) | met | ratio (best of repeats) | met | target | numbers |",
             "|---|---|---|---|---|---|---|"]
    verdicts = {True: "yes", False: "**no**", None: "-"}
    for name, result in results.items():
        value = "not measured" if result.get("ratio") is None else f"{result['ratio']:.3g}"
        best = "-" if result.get("ratio_best_of_repeats") is None else f"{result['ratio_best_of_repeats']:.3g}"
        source = result.get("error", "").splitlines()[0] if result.get("error") else result.get("headline", "")
        lines.append(f"| {name} | {value} | {verdicts[result.get('met')]} | {best} | "
                     f"{verdicts[result.get('met_best_of_repeats')]} | {result['target']} | {source} |")
    return "\n".join(lines)
