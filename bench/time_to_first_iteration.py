"""Time to first iteration: seconds from start to the first iteration, against the slowest single actor's start.

    .venv/bin/python -m bench.time_to_first_iteration [--quick]

In-job: `seconds_to_first_iteration` of the first metrics row: from the start of `jobs.run`'s
run (before the model is resolved, the prompts tokenized and Ray started) to the moment the
first iteration begins, every actor ready. Baseline: bench/actor_start_alone.py starts a private
Ray session (timed) and then each of the job's actors alone with the project's own classes; the
baseline is Ray's start plus the slowest of those actors. Ratio = in-job ÷ baseline. Beside it,
`ratio_to_floor`: in-job ÷ the same actors' work started together in bare Ray actors
(bench/actor_start_together.py), the floor on this machine. The figure
is the quickstart (2 rollout workers, 2 learner ranks, reward and eval actors, all starting at
once on 2 cores); the 1-worker, 1-rank loop is reported beside it against the same actors
alone. Target <= 1.3.

Repeats: the quickstart is started `start_repeats` times (--quick 3, full 5) and the baseline run
as often, the k-th start paired with the k-th baseline. The first start is the quickstart job
the other figures read, run earlier in the suite; each later start runs right before its
baseline, so a change in the machine's load hits both sides of the pair, and runs one iteration
only (the iteration count does not change which actors start or what they load).
The 1-worker loop is started once, against the first baseline: n = 1 for that side reading.
"""

from __future__ import annotations

import sys

from actors.placement import role_of
from bench.job_runs import QUICKSTART, Bench, JobRun, machine_cores, ratio, run_script
from bench.results import figure, main_for, spread

NAME, TARGET = "time_to_first_iteration", "<= 1.3"


def start_numbers(run: JobRun, alone: dict, together: dict | None = None) -> dict:
    in_job = run.rows[0].get("seconds_to_first_iteration") if run.rows else None
    roles = {role_of(label) for label in run.ready}
    ready_alone = {role: seconds for role, seconds in alone["ready_seconds"].items() if role in roles}
    slowest = max(ready_alone, key=ready_alone.get) if ready_alone else None
    baseline = alone["ray_init_seconds"] + ready_alone[slowest] if slowest else None
    # Every actor of the job loading at once can at best share the cores: Ray's start plus the sum of the
    # actors' alone times over the cores (a bound when the start-ups are CPU-bound, as they are here).
    summed = sum(ready_alone.get(role_of(label), 0.0) for label in run.ready)
    return {
        "job": run.summary(),
        "seconds_to_first_iteration": in_job,
        "in_job_ready_seconds": run.ready,
        "in_job_slowest_ready_seconds": max(run.ready.values()) if run.ready else None,
        # Model build/resolve, tokenizer, prompts and Ray's start: what the job does before any actor starts.
        "in_job_before_actors_seconds": in_job - max(run.ready.values()) if in_job and run.ready else None,
        "alone_ready_seconds": ready_alone,
        "alone_ray_init_seconds": alone["ray_init_seconds"],
        "alone_load_average_start_end": alone.get("load_average_start_end"),
        "slowest_alone": slowest,
        "baseline_seconds": baseline,
        "actors": len(run.ready),
        "sum_of_alone_over_cores_seconds": alone["ray_init_seconds"] + summed / machine_cores(),
        "ratio": ratio(in_job, baseline),
        # The floor: the same actors' work started together, with none of hintflow's actor classes
        # (bench/actor_start_together.py); what no change to hintflow's own code could beat here.
        "together_seconds": together["together_seconds"] if together else None,
        "together_ready_seconds": together["ready_seconds"] if together else None,
        "ratio_to_floor": ratio(in_job, together["together_seconds"]) if together else None,
    }


def quickstart_starts(bench: Bench) -> list[tuple[JobRun, dict, dict]]:
    """(start, baseline, floor) triples, each baseline and floor run right after its start."""
    first = bench.need(bench.quickstart())
    triples = []
    for k in range(bench.sizes["start_repeats"]):
        run = first if k == 0 else bench.need(bench.job(f"quickstart-start{k + 1}", QUICKSTART, ["iterations=1"]))
        # Always the first start's folder: its spec and placement.json are what the actors are started with.
        folder = ["--run", str(first.out_dir)]
        triples.append((run, run_script("actor_start_alone.py", folder, log=bench.log),
                        run_script("actor_start_together.py", folder, log=bench.log)))
    return triples


def measure(bench: Bench) -> dict:
    triples = quickstart_starts(bench)
    starts = [start_numbers(run, alone, together) for run, alone, together in triples]
    first_alone = triples[0][1]
    # "quickstart" keeps the first pair where readers before repeats found the figure's numbers.
    raw = {"quickstart": starts[0], "quickstart_starts": starts,
           "onpolicy_1_worker": start_numbers(bench.need(bench.base()), first_alone),
           "alone_notes": first_alone["notes"], "alone_threads": first_alone["threads"],
           "alone_load_average_start_end": first_alone.get("load_average_start_end")}
    notes = ["actors alone were started with the quickstart's spec; the 1-worker loop's actors are the same classes on the "
             "same model (their thread counts may differ)"]
    in_job = spread(s["seconds_to_first_iteration"] for s in starts)
    baseline = spread(s["baseline_seconds"] for s in starts)
    raw["seconds_to_first_iteration"], raw["baseline_seconds"] = in_job, baseline
    slowest = {s["slowest_alone"] for s in starts}

    def seconds(numbers: dict) -> str:
        return "-" if numbers["median"] is None else f"{numbers['median']:.1f}s"

    floor = spread(s["together_seconds"] for s in starts)
    raw["together_seconds"], raw["ratio_to_floor"] = floor, spread(s["ratio_to_floor"] for s in starts)
    headline = (f"{seconds(in_job)} vs {seconds(baseline)} ({' / '.join(sorted(map(str, slowest)))} alone + Ray), "
                f"medians of {len(starts)} starts; floor (the same actors together, no hintflow actors) "
                f"{seconds(floor)}: {raw['ratio_to_floor']['median']} of it")
    return figure([s["ratio"] for s in starts], TARGET, raw, notes, headline=headline)


if __name__ == "__main__":
    sys.exit(main_for(NAME, TARGET, measure, __doc__.split("\n")[0]))
