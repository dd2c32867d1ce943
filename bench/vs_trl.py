"""vs TRL: the in-job learner against TRL's SFTTrainer (SFT/IDFT) and DPOTrainer (DPO), same model, data, batch,
steps and cores.

    .venv/bin/python -m bench.vs_trl [--quick]

In-job: the learner's tokens/s in a 1-rank job, median over iterations 1...:
- SFT/IDFT: `train_tokens_per_s` of the 1-worker, 1-rank on-policy IDFT job (IDFT's loss does a
  little more than SFT's per token: the comparison leans against us); the full mode adds an
  `algorithm=sft` job.
- DPO: `train_tokens / (train_seconds + reference_seconds)` of configs/dpo.yaml with one rank
  (our reference log-probs are a separate pass, once per pair; TRL computes them inside its steps).
TRL: bench/trl_trainers.py on exactly those samples/pairs, in the job's micro-batch order, at the
thread count placement.json says the rank had. The figure is the smaller of the two ratios
(in-job ÷ TRL tokens/s, by their medians); steps/s are reported too. Target >= 1.0.

Repeats, on each side: the k-th steady iteration of the job (in order) over TRL's k-th repeat,
whose tokens/s is all the tokens it trained on over that repeat's seconds; as many pairs as the
scarcer side has (--quick: 4 steady SFT/IDFT and 3 DPO iterations against 3 repeats, n = 3;
full: n = 5). Each side's `ratio` is the median of its `ratio_per_repeat`; `ratio_of_medians`
is the in-job median over TRL's median, the figure before repeats were paired.
"""

from __future__ import annotations

import sys

from bench.job_runs import DPO, Bench, JobRun, median, ratio, run_script
from bench.learner_efficiency import RANK
from bench.results import figure, main_for, paired, spread
from bench.rollout_efficiency import actor_threads

NAME, TARGET = "vs_trl", ">= 1.0"


def dpo_job(bench: Bench) -> JobRun:
    return bench.job("dpo-r1", DPO, [f"iterations={bench.sizes['dpo_iterations']}", "learner.ranks=1",
                                    "rollout.workers=1", *bench.thread_pins()])


def in_job_rates(run: JobRun, with_reference: bool) -> dict:
    """Tokens/s and optimizer steps/s of the learner per iteration, median over iterations 1..."""
    tokens_per_s, steps_per_s = [], []
    steps_before = 0
    for index, row in enumerate(run.rows):
        seconds = (row.get("train_seconds") or 0) + ((row.get("reference_seconds") or 0) if with_reference else 0)
        steps = (row.get("optimizer_steps") or 0) - steps_before
        steps_before = row.get("optimizer_steps") or steps_before
        if seconds and not (index == 0 and len(run.rows) > 1):  # iteration 0 carries first-step warm-up
            tokens_per_s.append(row.get("train_tokens", 0) / seconds)
            steps_per_s.append(steps / seconds)
    return {"tokens_per_s": median(tokens_per_s), "steps_per_s": median(steps_per_s),
            "tokens_per_s_by_iteration": tokens_per_s, "per_iteration_tokens_per_s": [round(v, 1) for v in tokens_per_s]}


def compare(bench: Bench, run: JobRun, kind: str) -> dict:
    threads, source = actor_threads(run, RANK)
    args = ["--run", str(run.out_dir), "--skip-first", "--kind", kind, "--threads", str(threads), *bench.baseline_args()]
    trl = run_script("trl_trainers.py", args, log=bench.log)
    timing = trl["threads"][str(threads)]
    seconds = median(timing["seconds"])
    ours = in_job_rates(run, with_reference=kind == "dpo")
    trl_tokens_per_s = trl["tokens"] / seconds
    best_in_job = max(ours["per_iteration_tokens_per_s"], default=None)
    trl_by_repeat = [ratio(trl["tokens"], s) for s in timing["seconds"]]
    per_repeat = paired(ours["tokens_per_s_by_iteration"], trl_by_repeat)
    return {
        "job": run.summary(),
        "algorithm": run.spec_value("algorithm"),
        "in_job_tokens_per_s": ours["tokens_per_s"],
        "in_job_steps_per_s": ours["steps_per_s"],
        "in_job_per_iteration_tokens_per_s": ours["per_iteration_tokens_per_s"],
        "trl_tokens_per_s": trl_tokens_per_s,
        "trl_steps_per_s": timing["steps"] / seconds if timing["steps"] else None,
        "trl_seconds": timing["seconds"],
        "trl_examples": trl["examples"],
        "trl_tokens": trl["tokens"],
        "trl_version": trl["trl_version"],
        "trl_load_average_start_end": trl.get("load_average_start_end"),
        "threads": threads,
        "threads_source": source,
        "trl_tokens_per_s_by_repeat": trl_by_repeat,
        "ratio_per_repeat": per_repeat,
        "ratio": spread(per_repeat)["median"],
        "ratio_of_medians": ratio(ours["tokens_per_s"], trl_tokens_per_s),
        # Best iteration in the job over TRL's best repeat: the steadier reading when other work shares the cores.
        "ratio_best_of_repeats": ratio(best_in_job, trl["tokens"] / min(timing["seconds"])),
    }


def measure(bench: Bench) -> dict:
    raw = {"sft_idft": compare(bench, bench.need(bench.base()), "sft"),
           "dpo": compare(bench, bench.need(dpo_job(bench)), "dpo")}
    notes = ["SFT side: the in-job learner runs IDFT (SFT's loss plus per-token weights) against TRL's plain SFT",
             "DPO side: in-job time includes the separate reference pass; TRL's steps include theirs"]
    if not bench.quick:
        sft = bench.need(bench.onpolicy(1, 1, extra=["algorithm=sft"], tag="-sft"))
        raw["sft"] = compare(bench, sft, "sft")
    worst = min((name for name in raw if raw[name]["ratio"] is not None), key=lambda name: raw[name]["ratio"])
    raw["figure_from"] = worst
    headline = " / ".join(f"{name} {raw[name]['ratio']:.2f} (best-of {raw[name]['ratio_best_of_repeats']:.2f})"
                          for name in raw if isinstance(raw[name], dict))
    best = min(raw[name]["ratio_best_of_repeats"] for name in raw if isinstance(raw[name], dict)
               and raw[name].get("ratio_best_of_repeats") is not None)
    return figure(raw[worst]["ratio_per_repeat"], TARGET, raw, notes, best_of=best, headline=headline)


if __name__ == "__main__":
    sys.exit(main_for(NAME, TARGET, measure, __doc__.split("\n")[0]))
