"""Orchestration: iteration time ÷ sum of stage times.

    .venv/bin/python -m bench.orchestration [--quick]

Per iteration: `iteration_seconds` over the sum of the stages the job times inside it
(generation, CLL, reward, hinted decoding and its analysis, reference log-probs, training, weight
sync); median over iterations 1... What is left is the driver's own work and Ray's: calls,
moving samples, writing samples and pairs. Beside it, the loop period seen from outside (the
gap between two metrics rows appearing) over iteration_seconds: the metrics, TensorBoard and
report.html writing and the memory probes the job does after it stops the iteration clock.
Settings: the plain 1-worker loop (the figure) and the quickstart. Target <= 1.05.

Repeats: the plain loop's per-iteration ratios, iterations 1.. (--quick: n = 4, full: n = 7).
"""

from __future__ import annotations

import sys

from bench.job_runs import Bench, JobRun, median
from bench.results import figure, main_for

NAME, TARGET = "orchestration", "<= 1.05"
STAGES = ("generate_seconds", "cll_seconds", "reward_seconds", "hinted_analysis_seconds", "hinted_seconds",
          "reference_seconds", "train_seconds", "sync_seconds")
NOT_STAGES = {"iteration_seconds", "seconds_to_first_iteration"}


def orchestration_numbers(run: JobRun) -> dict:
    per_iteration, gaps = [], []
    for row in run.steady_rows():
        stages = sum(row.get(key) or 0.0 for key in STAGES)
        if stages and row.get("iteration_seconds"):
            per_iteration.append(row["iteration_seconds"] / stages)
            gaps.append(row["iteration_seconds"] - stages)
    by_iteration = {r["iteration"]: r for r in run.rows}
    outside = [p / by_iteration[i]["iteration_seconds"] for i, p in run.loop_periods().items()
               if by_iteration.get(i, {}).get("iteration_seconds")]
    other_timers = sorted({k for r in run.rows for k in r if k.endswith("_seconds")} - set(STAGES) - NOT_STAGES)
    return {
        "job": run.summary(),
        "ratio": median(per_iteration),
        "per_iteration": per_iteration,
        "unaccounted_seconds": median(gaps),
        "iteration_seconds": run.median("iteration_seconds"),
        "stage_seconds": {key: run.median(key) for key in STAGES if run.has(key)},
        "loop_period_over_iteration_seconds": median(outside),
        "timers_not_counted_as_stages": other_timers,
    }


def measure(bench: Bench) -> dict:
    raw = {"onpolicy_1_worker": orchestration_numbers(bench.need(bench.base())),
           "quickstart": orchestration_numbers(bench.need(bench.quickstart()))}
    notes = []
    for name, numbers in raw.items():
        if numbers["timers_not_counted_as_stages"]:
            notes.append(f"{name}: timers not counted as stages: {', '.join(numbers['timers_not_counted_as_stages'])}")
    main = raw["onpolicy_1_worker"]
    headline = (f"{main['unaccounted_seconds']:.2f}s of {main['iteration_seconds']:.2f}s outside stages; "
                f"quickstart {raw['quickstart']['ratio']:.2f}")
    return figure(main["per_iteration"], TARGET, raw, notes, headline=headline)


if __name__ == "__main__":
    sys.exit(main_for(NAME, TARGET, measure, __doc__.split("\n")[0]))
