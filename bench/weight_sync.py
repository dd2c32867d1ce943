"""Weight sync: sync seconds ÷ iteration seconds, in the quickstart and SmolLM2 settings; bytes/s too.

    .venv/bin/python -m bench.weight_sync [--quick] [--smollm2 PATH]

Per iteration: `sync_seconds / iteration_seconds` (the push from learner rank 0 through the
object store into every engine and CLL replica, over the whole iteration), median over
iterations 1...; bytes/s is `sync_bytes / sync_seconds` where sync_bytes is what reached the
workers, all together (the job's own metric; for a job that does not emit it, the safetensors
payload of the final checkpoint times the number of workers). Settings: the quickstart
(configs/hinted_idft.yaml as shipped, 2 workers, 2 ranks, eval actor), the plain 1-worker loop,
and SmolLM2-135M (configs/smollm2-135m.yaml) when --smollm2 PATH names a local folder. The
figure's ratio is the worst of the quickstart and SmolLM2 settings measured. Target <= 0.05.

The quickstart also runs with `sync.method: broadcast` (gloo on CPU): its numbers sit beside the
object store's under "quickstart_broadcast", with the ratio of the two sync times. The figure
stays the default method's.

Repeats: the per-iteration fractions (iterations 1..) of the setting the figure comes from; its
median is that setting's ratio (--quick: the quickstart's 4 iterations give n = 3; SmolLM2's 2
give n = 1).
"""

from __future__ import annotations

import sys

from bench.job_runs import QUICKSTART, Bench, JobRun, median
from bench.results import figure, main_for

NAME, TARGET = "weight_sync", "<= 0.05"


def payload_bytes(run: JobRun) -> int | None:
    """The sync payload's size rebuilt from the final checkpoint (only for jobs without sync_bytes)."""
    from safetensors.torch import load_file

    from actors.weights.payload import encode_weights

    latest = run.out_dir / "checkpoints" / "latest"
    if not latest.exists():
        return None
    weights = run.out_dir / "checkpoints" / latest.read_text().strip() / "model.safetensors"
    return len(encode_weights(load_file(str(weights)))) if weights.exists() else None


def sync_numbers(run: JobRun) -> dict:
    fractions = [r["sync_seconds"] / r["iteration_seconds"] for r in run.steady_rows()
                 if r.get("sync_seconds") is not None and r.get("iteration_seconds")]
    workers = run.spec_value("rollout.workers")
    sync_bytes = run.median("sync_bytes")
    source = "sync_bytes metric"
    if sync_bytes is None:
        size = payload_bytes(run)
        sync_bytes = size * workers if size else None
        source = "not emitted by the job: final checkpoint's payload x workers"
    seconds = run.median("sync_seconds")
    return {
        "job": run.summary(),
        "ratio": median(fractions),
        "per_iteration": fractions,
        "sync_seconds": seconds,
        "iteration_seconds": run.median("iteration_seconds"),
        "sync_bytes": sync_bytes,
        "sync_bytes_source": source,
        "bytes_per_s": sync_bytes / seconds if sync_bytes and seconds else None,
        "workers": workers,
    }


def measure(bench: Bench) -> dict:
    settings = {"quickstart": bench.need(bench.quickstart()), "onpolicy_1_worker": bench.need(bench.base()),
                "quickstart_broadcast": bench.need(bench.job(
                    "quickstart-broadcast", QUICKSTART, [f"iterations={bench.sizes['quickstart_iterations']}",
                                                         "sync.method=broadcast"]))}
    notes = []
    smollm2 = bench.smollm2_job()
    if smollm2 is None:
        notes.append("SmolLM2 setting skipped: no --smollm2 PATH given")
    else:
        settings["smollm2"] = bench.need(smollm2)
    raw = {name: sync_numbers(run) for name, run in settings.items()}
    scored = {name: raw[name]["ratio"] for name in ("quickstart", "smollm2") if name in raw}
    worst = max(scored, key=lambda name: scored[name])
    raw["figure_from"] = worst
    broadcast_seconds, store_seconds = raw["quickstart_broadcast"]["sync_seconds"], raw["quickstart"]["sync_seconds"]
    raw["broadcast_over_object_store_seconds"] = broadcast_seconds / store_seconds if store_seconds else None
    q = raw["quickstart"]
    headline = (f"quickstart {q['sync_seconds']:.3f}s of {q['iteration_seconds']:.2f}s, "
                f"{(q['bytes_per_s'] or 0) / 2**20:.0f} MiB/s")
    return figure(raw[worst]["per_iteration"], TARGET, raw, notes, headline=headline)


if __name__ == "__main__":
    sys.exit(main_for(NAME, TARGET, measure, __doc__.split("\n")[0]))
