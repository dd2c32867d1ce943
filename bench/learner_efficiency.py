"""Learner efficiency: in-job train tokens/s ÷ a standalone DeepSpeed (and plain torch) loop on the same batches and cores.

    .venv/bin/python -m bench.learner_efficiency [--quick] [--smollm2 PATH]

In-job: `train_tokens_per_s` of the job with one rollout worker and one learner rank, median
over iterations 1... Standalone: bench/standalone_learner.py trains on exactly the samples the
job trained on (its samples files, shuffled and split into micro-batches as the learner group
does), with the job's loss and DeepSpeed config, in one process outside Ray, at the thread count
placement.json says the rank had (the full mode adds every core and 1 thread as diagnostics). The ratio is
against the DeepSpeed loop (the same engine the job runs); the plain torch loop is reported
beside it, and so is the job's own Learner class run outside Ray (so the gap splits into Ray's
share and the rank's own per-step bookkeeping). Target >= 0.90.

Repeats: the k-th steady iteration of the job (iterations 1.., in order) over the k-th repeat of
the DeepSpeed loop, whose tokens/s is every iteration it trained over that repeat's seconds; as
many pairs as the scarcer side has (--quick: 4 steady iterations, 3 repeats, n = 3; full: n = 5).
`raw.ratio_vs_deepspeed` is the ratio of the two medians, the figure before repeats were paired.
"""

from __future__ import annotations

import sys

from bench.job_runs import Bench, JobRun, machine_cores, median, ratio, run_script
from bench.results import figure, main_for, paired, repeat_rates
from bench.rollout_efficiency import actor_threads

NAME, TARGET = "learner_efficiency", ">= 0.90"
RANK = "learner rank 0"


def standalone_training(bench: Bench, run: JobRun, loops: str = "deepspeed,torch,job_learner") -> dict:
    key = f"standalone_learner:{run.label}:{loops}"
    if key not in bench.cache:
        threads, _ = actor_threads(run, RANK)
        args = ["--run", str(run.out_dir), "--skip-first", "--loops", loops, *bench.baseline_args(),
                "--threads", ",".join(map(str, bench.thread_settings(threads)))]
        bench.cache[key] = run_script("standalone_learner.py", args, log=bench.log)
    return bench.cache[key]


def loop_rates(result: dict) -> dict[str, dict[int, dict]]:
    """loop -> threads -> tokens/s per iteration (tokens over the median of the repeats) and their median."""
    rates = {}
    for loop, by_threads in result["loops"].items():
        rates[loop] = {}
        for threads, per_iteration in by_threads.items():
            per = {int(i): v["tokens"] / median(v["seconds"]) for i, v in per_iteration.items() if v["seconds"]}
            best = max((v["tokens"] / min(v["seconds"]) for v in per_iteration.values() if v["seconds"]), default=None)
            rates[loop][int(threads)] = {"per_iteration": {i: round(r, 1) for i, r in per.items()},
                                         "median": median(per.values()), "best": best}
    return rates


def learner_numbers(bench: Bench, run: JobRun) -> dict:
    threads, source = actor_threads(run, RANK)
    standalone = standalone_training(bench, run)
    rates = loop_rates(standalone)
    in_job = run.median("train_tokens_per_s")
    raw = {
        "job": run.summary(),
        "in_job_train_tokens_per_s": in_job,
        "in_job_per_iteration": [round(v, 1) for v in run.values("train_tokens_per_s", steady=False)],
        "in_job_rank_threads": threads,
        "in_job_rank_threads_source": source,
        "train_padding_fraction": run.median("train_padding_fraction"),  # None when the job does not emit it
        "standalone_tokens_per_s": {loop: {t: r["median"] for t, r in by_t.items()} for loop, by_t in rates.items()},
        "standalone_per_iteration": {loop: {t: r["per_iteration"] for t, r in by_t.items()}
                                     for loop, by_t in rates.items()},
        "standalone_repeats": bench.repeats,
        "standalone_notes": standalone.get("notes", []),
        "standalone_load_average_start_end": standalone.get("load_average_start_end"),
        "machine_cores": machine_cores(),
    }
    deepspeed = standalone["loops"].get("deepspeed", {}).get(str(threads), {})
    raw["deepspeed_tokens_per_s_by_repeat"] = repeat_rates(deepspeed, "seconds")
    raw["ratio_per_repeat"] = paired(run.values("train_tokens_per_s"), raw["deepspeed_tokens_per_s_by_repeat"])
    for loop, by_threads in rates.items():
        raw[f"ratio_vs_{loop}"] = ratio(in_job, by_threads.get(threads, {}).get("median"))
        # Best iteration in the job over the best repeat alone: the steadier reading when other work shares the cores.
        raw[f"ratio_vs_{loop}_best_of_repeats"] = ratio(max(run.values("train_tokens_per_s"), default=None),
                                                        by_threads.get(threads, {}).get("best"))
        if machine_cores() in by_threads:
            raw[f"ratio_vs_{loop}_all_cores"] = ratio(in_job, by_threads[machine_cores()]["median"])
    return raw


def measure(bench: Bench) -> dict:
    run = bench.need(bench.base())
    raw = learner_numbers(bench, run)
    notes = [f"1 learner rank (1 rollout worker); standalone at the rank's {raw['in_job_rank_threads']} thread(s) "
             f"({raw['in_job_rank_threads_source']})"]
    if raw["train_padding_fraction"] is None:
        notes.append("the job does not emit train_padding_fraction")
    smollm2 = bench.smollm2_numbers(learner_numbers, notes)
    if smollm2 is not None:
        raw["smollm2"] = smollm2
        if "error" not in smollm2:
            notes.append("SmolLM2 runs 2 learner ranks: its standalone loop trains rank 0's shard in one process")
    t = raw["in_job_rank_threads"]
    headline = (f"{raw['in_job_train_tokens_per_s']:.0f} vs DS {raw['standalone_tokens_per_s']['deepspeed'][t]:.0f} / "
                f"torch {raw['standalone_tokens_per_s']['torch'][t]:.0f} tok/s")
    return figure(raw["ratio_per_repeat"], TARGET, raw, notes, best_of=raw["ratio_vs_deepspeed_best_of_repeats"],
                  headline=headline)


if __name__ == "__main__":
    sys.exit(main_for(NAME, TARGET, measure, __doc__.split("\n")[0]))
