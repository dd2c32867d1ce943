"""CLL overhead: time for generation + CLL ÷ generation alone.

    .venv/bin/python -m bench.cll_overhead [--quick] [--smollm2 PATH]

The figure: bench/standalone_vllm.py builds the project's own RolloutWorker from the job's spec,
outside Ray, and times, on the job's prompts, interleaved, per iteration 1..: `generate()` as the
job calls it (generation with CLL, by whichever path rollout.cll_from picks: the engine's
entropy recorder plus a one-sample replica check, or the teacher-forced replica pass) over its
engine generating the same requests with no CLL asked for. Median over iterations of the
median over --repeats, at the thread count placement.json says the job's worker had.
Beside it, from the job itself: the CLL stage over generation ((generate_seconds + cll_seconds)
/ generate_seconds; with CLL from the engine the recording sits inside generate_seconds), and the
job's generation + CLL over the standalone generation alone. Target <= 1.15.

Repeats: in each repeat of the baseline, the seconds of `generate()` with CLL over those of the
engine alone, each summed over the iterations timed; the two are timed back to back within the
repeat, so a change in the machine's load hits both (--quick: n = 3, full: n = 5).
`raw.standalone_ratio` is the median over iterations of the per-iteration ratio of the medians,
the figure before repeats were kept.
"""

from __future__ import annotations

import sys

from bench.job_runs import Bench, JobRun, median, ratio
from bench.results import figure, main_for, paired, repeat_seconds
from bench.rollout_efficiency import WORKER, actor_threads, standalone_generation

NAME, TARGET = "cll_overhead", "<= 1.15"


def cll_numbers(bench: Bench, run: JobRun) -> dict:
    threads, source = actor_threads(run, WORKER)
    standalone = standalone_generation(bench, run)
    per_iteration = standalone["threads"][str(threads)]
    with_cll = {i: median(v["worker_generate_with_cll_seconds"]) for i, v in per_iteration.items()}
    alone = {i: median(v["worker_generation_alone_seconds"]) for i, v in per_iteration.items()}
    ratios = [ratio(with_cll[i], alone[i]) for i in per_iteration if with_cll[i] and alone[i]]
    # Best of the repeats on both sides: what each costs when the machine's other load stays out of the way.
    best = [min(v["worker_generate_with_cll_seconds"]) / min(v["worker_generation_alone_seconds"])
            for v in per_iteration.values() if v["worker_generation_alone_seconds"]]
    stage = [(r["generate_seconds"] + r["cll_seconds"]) / r["generate_seconds"]
             for r in run.steady_rows() if r.get("generate_seconds") and r.get("cll_seconds") is not None]
    in_job = {r["iteration"]: r["generate_seconds"] + r["cll_seconds"] for r in run.steady_rows()
              if r.get("generate_seconds") and r.get("cll_seconds") is not None}
    in_job_over_alone = [in_job[int(i)] / alone[i] for i in per_iteration if int(i) in in_job and alone[i]]
    stats = [s for v in per_iteration.values() for s in v["worker_stats"]]
    return {
        "job": run.summary(),
        "cll_from": standalone.get("cll_from"),
        "standalone_ratio": median(ratios),
        "standalone_per_repeat": paired(repeat_seconds(per_iteration, "worker_generate_with_cll_seconds"),
                                        repeat_seconds(per_iteration, "worker_generation_alone_seconds")),
        "standalone_per_iteration": [round(v, 3) for v in ratios],
        "standalone_ratio_best_of_repeats": median(best),
        "standalone_generate_with_cll_seconds": median(with_cll.values()),
        "standalone_generation_alone_seconds": median(alone.values()),
        "standalone_worker_cll_stage_seconds": median(s.get("cll_seconds") for s in stats),
        "standalone_worker_generate_seconds": median(s.get("generate_seconds") for s in stats),
        "in_job_cll_stage_over_generation": median(stage),
        "in_job_generate_seconds": run.median("generate_seconds"),
        "in_job_cll_seconds": run.median("cll_seconds"),
        "in_job_gen_plus_cll_over_standalone_alone": median(in_job_over_alone),
        "cll_replica_fallbacks": run.median("cll_replica_fallbacks"),
        "cll_padding_fraction": run.median("cll_padding_fraction"),
        "cll_batch_size": run.spec_value("rollout.cll_batch_size"),
        "threads": threads,
        "threads_source": source,
    }


def measure(bench: Bench) -> dict:
    run = bench.need(bench.base())
    raw = cll_numbers(bench, run)
    notes = [f"CLL path: rollout.cll_from = {raw['cll_from']}"]
    smollm2 = bench.smollm2_numbers(cll_numbers, notes)
    if smollm2 is not None:
        raw["smollm2"] = smollm2
    headline = (f"{raw['standalone_generate_with_cll_seconds']:.2f}s vs {raw['standalone_generation_alone_seconds']:.2f}s "
                f"with vs without CLL ({raw['cll_from']})")
    return figure(raw["standalone_per_repeat"], TARGET, raw, notes, best_of=raw["standalone_ratio_best_of_repeats"],
                  headline=headline)


if __name__ == "__main__":
    sys.exit(main_for(NAME, TARGET, measure, __doc__.split("\n")[0]))
