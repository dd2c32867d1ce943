"""Rollout efficiency: in-job generation tokens/s ÷ standalone vLLM on the same prompts, sampling params and cores.

    .venv/bin/python -m bench.rollout_efficiency [--quick] [--smollm2 PATH]

In-job: `gen_tokens_per_s` of the job with one rollout worker and one learner rank (the
median over iterations 1.., iteration 0 carries first-call warm-up), i.e. tokens over the
wall time of the worker's `llm.generate` call. Standalone: bench/standalone_vllm.py replays
the same prompts (token ids from the job's samples files) with the same SamplingParams and
seeds, in one process outside Ray, with the thread count placement.json says the worker had
(the full mode adds every core of the machine and 1 thread, as diagnostics). Target >= 0.90.

Repeats: the k-th steady iteration of the job (iterations 1.., in order) over the k-th repeat of
the baseline, whose tokens/s is every iteration it timed over that repeat's seconds; as many
pairs as the scarcer side has (--quick: 4 steady iterations, 3 repeats, n = 3; full: n = 5).
The job's iterations generate different prompts from the baseline's, but the same batch shape
and token budget, so their rates compare. `raw.ratio_same_threads` is the ratio of the two
medians, the figure before repeats were paired.
"""

from __future__ import annotations

import sys

from bench.job_runs import Bench, JobRun, machine_cores, median, ratio, run_script
from bench.results import figure, main_for, paired, repeat_rates

NAME, TARGET = "rollout_efficiency", ">= 0.90"
WORKER = "rollout worker 0"


def actor_threads(run: JobRun, actor: str) -> tuple[int, str]:
    """The threads the in-job actor had, and where that number comes from."""
    threads = run.threads(actor)
    if threads:
        return int(threads), "placement.json"
    # Jobs that do not record it set OMP_NUM_THREADS from the smaller CPU share (jobs/run.py before phase threads).
    spec = run.spec
    share = min(spec["rollout"]["cpus_per_worker"], spec["learner"]["cpus_per_rank"])
    return max(1, round(share)), "not recorded by the job; inferred from the CPU shares (old rule)"


def standalone_generation(bench: Bench, run: JobRun) -> dict:
    """bench/standalone_vllm.py on this run, once per session (CLL overhead reads the same result)."""
    key = f"standalone_vllm:{run.label}"
    if key not in bench.cache:
        threads, _ = actor_threads(run, WORKER)
        args = ["--run", str(run.out_dir), "--skip-first", *bench.baseline_args(),
                "--threads", ",".join(map(str, bench.thread_settings(threads)))]
        bench.cache[key] = run_script("standalone_vllm.py", args, log=bench.log)
    return bench.cache[key]


def worker_rates(result: dict, threads: int) -> dict:
    """The project's RolloutWorker outside Ray, tokens/s: its engine alone, and generate() with CLL as the job calls it."""
    per_iteration = result["threads"][str(threads)]
    rates = {}
    for key, name in (("worker_generation_alone_seconds", "worker_engine_alone"),
                      ("worker_generate_with_cll_seconds", "worker_generate_with_cll")):
        values = [v["tokens"] / median(v[key]) for v in per_iteration.values() if v.get(key)]
        rates[name] = median(values)
    return rates


def standalone_rates(result: dict) -> dict[int, dict]:
    """Per thread count: tokens/s per iteration (tokens over the median time of the repeats) and their median."""
    rates = {}
    for threads, per_iteration in result["threads"].items():
        per = {int(i): v["tokens"] / median(v["generate_seconds"]) for i, v in per_iteration.items()}
        best = max(v["tokens"] / min(v["generate_seconds"]) for v in per_iteration.values())
        rates[int(threads)] = {"per_iteration": {i: round(r, 1) for i, r in per.items()}, "median": median(per.values()),
                               "best": best}
    return rates


def rollout_numbers(bench: Bench, run: JobRun) -> dict:
    threads, source = actor_threads(run, WORKER)
    result = standalone_generation(bench, run)
    rates = standalone_rates(result)
    in_job = run.median("gen_tokens_per_s")
    raw = {
        "job": run.summary(),
        "in_job_gen_tokens_per_s": in_job,
        "in_job_per_iteration": [round(v, 1) for v in run.values("gen_tokens_per_s", steady=False)],
        "in_job_worker_threads": threads,
        "in_job_worker_threads_source": source,
        "standalone_tokens_per_s_by_threads": {t: r["median"] for t, r in rates.items()},
        "standalone_per_iteration_by_threads": {t: r["per_iteration"] for t, r in rates.items()},
        "standalone_repeats": bench.repeats,
        "iteration0_tokens_identical": result["iteration0_identical"],
        "standalone_load_average_start_end": result.get("load_average_start_end"),
        "machine_cores": machine_cores(),
    }
    raw["standalone_worker_tokens_per_s"] = worker_rates(result, threads)  # outside Ray, same thread count
    raw["ratio_same_threads"] = ratio(in_job, rates[threads]["median"])
    standalone_by_repeat = repeat_rates(result["threads"][str(threads)], "generate_seconds")
    raw["standalone_tokens_per_s_by_repeat"] = standalone_by_repeat
    raw["ratio_per_repeat"] = paired(run.values("gen_tokens_per_s"), standalone_by_repeat)
    # Best iteration in the job over the best repeat alone: the steadier reading when other work shares the cores.
    raw["ratio_best_of_repeats"] = ratio(max(run.values("gen_tokens_per_s"), default=None), rates[threads]["best"])
    raw["ratio_all_cores"] = ratio(in_job, rates[machine_cores()]["median"]) if machine_cores() in rates else None
    return raw


def measure(bench: Bench) -> dict:
    run = bench.need(bench.base())
    raw = rollout_numbers(bench, run)
    notes = [f"1 rollout worker, 1 learner rank; standalone at the worker's {raw['in_job_worker_threads']} thread(s) "
             f"({raw['in_job_worker_threads_source']})"]
    if raw["iteration0_tokens_identical"] is False:
        notes.append("WARNING: the standalone engine's iteration-0 tokens differ from the job's: not the same work")
    smollm2 = bench.smollm2_numbers(rollout_numbers, notes)
    if smollm2 is not None:
        raw["smollm2"] = smollm2
    threads = raw["in_job_worker_threads"]
    headline = (f"{raw['in_job_gen_tokens_per_s']:.0f} vs {raw['standalone_tokens_per_s_by_threads'][threads]:.0f} "
                f"tok/s at {threads} thread(s)")
    return figure(raw["ratio_per_repeat"], TARGET, raw, notes, best_of=raw["ratio_best_of_repeats"], headline=headline)


if __name__ == "__main__":
    sys.exit(main_for(NAME, TARGET, measure, __doc__.split("\n")[0]))
