"""Async: samples/s of async mode (rollout.max_policy_lag=1) against sync mode (0), same job, with the lag.

    .venv/bin/python -m bench.async_mode [--quick]

Both are the 1-worker, 1-rank on-policy IDFT job; the async one adds
`--set rollout.max_policy_lag=1`, so generating iteration k+1 overlaps training on k. Throughput is
samples per loop period seen from outside (the gap between two metrics rows appearing, iterations
1..n-2: iteration 0 carries warm-up and the last row waits for the final checkpoint), which does not
depend on how either mode splits its own timers; samples / iteration_seconds is reported beside it.
The lag is the job's `policy_lag_mean` / `policy_lag_max`. Target > 1.
A job without rollout.max_policy_lag is reported as not measurable, with the job's own reason.

Repeats: one per iteration both jobs have a loop period for, async's samples/s over sync's at
the same iteration (--quick: iterations 1..3, n = 3; full: n = 6).
"""

from __future__ import annotations

import sys

from bench.job_runs import ONPOLICY, Bench, JobRun, check_overrides, ratio
from bench.results import failed, figure, main_for, paired

NAME, TARGET = "async", "> 1"
ASYNC = ["rollout.max_policy_lag=1"]


def mode_numbers(run: JobRun) -> dict:
    rates = run.samples_per_s()
    return {
        "job": run.summary(),
        "samples_per_s": rates["outside_clock"],
        "samples_per_s_by_iteration_seconds": rates["iteration_seconds"],
        "loop_periods": {i: round(p, 3) for i, p in run.loop_periods().items()},
        "samples_per_s_by_iteration": run.samples_per_s_by_iteration(),
        "policy_lag_mean": run.median("policy_lag_mean", steady=False),
        "policy_lag_max": max(run.values("policy_lag_max", steady=False), default=None),
        "generate_seconds": run.median("generate_seconds"),
        "train_seconds": run.median("train_seconds"),
        "threads": {actor: entry.get("threads") for actor, entry in run.placement().get("actors", {}).items()},
    }


def measure(bench: Bench) -> dict:
    refused = check_overrides(ONPOLICY, bench.onpolicy_overrides() + ASYNC)
    if refused:
        return failed(TARGET, f"this checkout's job has no async mode: {refused}")
    sync = bench.need(bench.base())
    asynchronous = bench.need(bench.onpolicy(1, 1, extra=ASYNC, tag="-lag1"))
    raw = {"sync": mode_numbers(sync), "async": mode_numbers(asynchronous)}
    raw["ratio_by_iteration_seconds"] = ratio(raw["async"]["samples_per_s_by_iteration_seconds"],
                                              raw["sync"]["samples_per_s_by_iteration_seconds"])
    notes = []
    if raw["async"]["policy_lag_mean"] is None:
        notes.append("the async job emitted no policy_lag_mean")
    raw["ratio_of_medians"] = ratio(raw["async"]["samples_per_s"], raw["sync"]["samples_per_s"])
    by_async, by_sync = raw["async"]["samples_per_s_by_iteration"], raw["sync"]["samples_per_s_by_iteration"]
    both = sorted(set(by_async) & set(by_sync))
    raw["ratio_per_repeat"] = paired([by_async[i] for i in both], [by_sync[i] for i in both])
    headline = (f"{raw['async']['samples_per_s'] or 0:.1f} vs {raw['sync']['samples_per_s'] or 0:.1f} samples/s, "
                f"lag mean {raw['async']['policy_lag_mean']}")
    return figure(raw["ratio_per_repeat"], TARGET, raw, notes, headline=headline)


if __name__ == "__main__":
    sys.exit(main_for(NAME, TARGET, measure, __doc__.split("\n")[0]))
