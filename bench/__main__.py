"""The benchmark suite of the performance issue: every figure, one results file, one table.

    .venv/bin/python -m bench [--quick] [--smollm2 PATH] [--only NAME ...] [--job-threads] [--workdir DIR]
    .venv/bin/python -m bench --markdown      # the last results as docs/benchmarks.md's tables
    .venv/bin/python -m bench --report        # rewrite those tables in docs/benchmarks.md

Runs the figures in this order (jobs that several figures read run once) and merges them into
bench/results.json, one key per figure; each module also runs alone (`python -m bench.<module>`).
--quick keeps every job small (builtin tiny model, a few iterations; under 10 minutes on 2 cores).
--smollm2 PATH adds the SmolLM2-135M settings (a local HF folder; skipped, with a note, without it).
Jobs run one CPU thread per rollout worker and learner rank (baselines the same) unless --job-threads:
see Bench.thread_pins in bench/job_runs.py and docs/benchmarks.md for why.
docs/benchmarks.md has the figures' definitions, the last results and what would close each gap.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench import (async_mode, cll_overhead, learner_efficiency, orchestration, rollout_efficiency, scaling,
                   time_to_first_iteration, vs_trl, weight_sync)
from bench.job_runs import Bench
from bench.results import markdown, measure_all, parser, table, write

FIGURES = {module.NAME: module for module in (
    rollout_efficiency, cll_overhead, learner_efficiency, weight_sync, orchestration, time_to_first_iteration,
    vs_trl, async_mode, scaling,
)}


def main() -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", choices=list(FIGURES), metavar="NAME",
                   help=f"run only these figures ({', '.join(FIGURES)})")
    p.add_argument("--markdown", action="store_true",
                   help="run nothing: print the results file as the markdown tables of docs/benchmarks.md")
    p.add_argument("--report", action="store_true",
                   help="run nothing: rewrite docs/benchmarks.md's tables from bench/results.json and "
                   "bench/results-smollm2.json (bench/report_docs.py)")
    args = p.parse_args()
    if args.report:
        from bench.report_docs import write_docs

        print(f"rewrote the tables of {write_docs()}")
        return 0
    if args.markdown:
        results = json.loads(Path(args.results).read_text())
        print(markdown(results))
        if "scaling" in results and results["scaling"].get("raw", {}).get("points"):
            print("\n" + scaling.markdown_table(results["scaling"]))
        return 0
    started = time.perf_counter()
    bench = Bench(quick=args.quick, workdir=args.workdir, smollm2=args.smollm2, reuse=args.reuse_jobs,
                  job_threads=args.job_threads)
    chosen = {name: (FIGURES[name].TARGET, FIGURES[name].measure) for name in (args.only or FIGURES)}
    results = measure_all(bench, chosen)
    write(results, Path(args.results))
    wall = time.perf_counter() - started
    print("\njobs run:")
    for run in bench.runs.values():
        print(f"  {run.label:<24} exit {run.returncode}  {run.wall_seconds:6.1f}s  {run.command()}")
    print(f"\n{table(results)}")
    print(f"\n{len(results)} figure(s) in {wall:.0f}s ({'quick' if args.quick else 'full'} mode); written to {args.results}")
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
