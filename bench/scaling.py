"""Scaling: samples/s with 1, 2, 4 rollout workers and 1, 2 learner ranks, on one node and on several Ray nodes
started on this machine.

    .venv/bin/python -m bench.scaling [--quick]

Every point is the on-policy IDFT job on the tiny model with the same batch (the 1-worker,
1-rank job is the first point), one thread per worker and rank (bench.job_runs.Bench.thread_pins;
one more point runs the 1-worker, 1-rank job with the threads the job picks itself); samples/s is samples per loop period seen from outside (the gap
between two metrics rows appearing, iterations 1..n-2), with generation and training tokens/s and
each actor's thread count (placement.json) beside it, to explain the curve.

- one node: the job's own local Ray session (every core of this machine);
- several nodes: bench/local_cluster.py starts a head and a second raylet here, 1 CPU each, token
  auth on, and the job joins it through RAY_ADDRESS with placement.strategy=spread, so its workers
  and ranks land on both nodes and the weight sync crosses between them.

Quick grid (to fit the 10-minute budget): (workers, ranks) = (1, 1), (2, 1), (1, 2) on one node
and (2, 1) on two nodes. Full: workers 1/2/4 x ranks 1/2 on one node, and (2, 1), (2, 2), (4, 2)
on two nodes. The figure's "ratio" is the best one-node point's samples/s over the 1-worker,
1-rank point's; there is no target beyond the table and its explanation.

Repeats: one per iteration both points have a loop period for, the best point's samples/s over
the 1-worker, 1-rank point's at the same iteration (--quick: iterations 1..3, n = 3; full:
n = 4, the scaling jobs' 6 iterations). When the 1-worker, 1-rank point is the best, every
repeat is 1.
"""

from __future__ import annotations

import sys

from bench.job_runs import Bench, JobRun, machine_cores, ratio
from bench.local_cluster import local_cluster
from bench.results import figure, main_for, paired

NAME, TARGET = "scaling", "table"


def point(run: JobRun, nodes: int) -> dict:
    if not run.ok:
        return {"nodes": nodes, "error": run.failure()}
    rates = run.samples_per_s()
    placed = run.placement()
    return {
        "nodes": nodes,
        "workers": run.spec_value("rollout.workers"),
        "ranks": run.spec_value("learner.ranks"),
        "samples_per_s": rates["outside_clock"],
        "samples_per_s_by_iteration_seconds": rates["iteration_seconds"],
        "samples_per_s_by_iteration": run.samples_per_s_by_iteration(),
        "gen_tokens_per_s": run.median("gen_tokens_per_s"),
        "train_tokens_per_s": run.median("train_tokens_per_s"),
        "generate_seconds": run.median("generate_seconds"),
        "train_seconds": run.median("train_seconds"),
        "sync_seconds": run.median("sync_seconds"),
        "iteration_seconds": run.median("iteration_seconds"),
        "threads": {actor: entry.get("threads") for actor, entry in placed.get("actors", {}).items()},
        "nodes_used": len(placed.get("nodes", {})),
        "job": run.summary(),
    }


def measure(bench: Bench) -> dict:
    iterations = bench.sizes["scaling_iterations"]
    if bench.quick:
        one_node, multi = [(1, 1), (2, 1), (1, 2)], [(2, 1)]
    else:
        one_node, multi = [(w, r) for w in (1, 2, 4) for r in (1, 2)], [(2, 1), (2, 2), (4, 2)]
    rows = []
    for w, r in one_node:
        run = bench.base() if (w, r) == (1, 1) else bench.onpolicy(w, r, iterations=iterations)
        rows.append(point(run, 1))
    notes = [f"one node = this machine's {machine_cores()} cores in the job's own Ray session", bench.thread_note]
    if bench.thread_pins():  # the same 1-worker, 1-rank job with the threads the job picks itself
        rows.append({**point(bench.onpolicy(1, 1, tag="-jobthreads", iterations=iterations, pinned=False), 1),
                     "threads_as": "job"})
        notes.append("the row marked 'job threads' is the 1-worker, 1-rank job with the thread counts the job picks "
                     "(every core per phase), the others pin 1 thread per worker and rank")
    try:
        with local_cluster(nodes=2, cpus_per_node=1) as cluster:
            for w, r in multi:
                run = bench.onpolicy(w, r, extra=["placement.strategy=spread"], tag="-2nodes", iterations=iterations,
                                     env=cluster.job_env)
                rows.append(point(run, 2))
        notes.append("two nodes = two raylets on this machine, 1 CPU each, placement.strategy=spread")
    except Exception as exc:
        notes.append(f"multi-node points not measured: {type(exc).__name__}: {exc}")
    if bench.quick:
        notes.append("quick grid: 1 vs 2 workers, 1 vs 2 ranks, and (2 workers, 1 rank) on two nodes; the full mode "
                     "runs workers 1/2/4 x ranks 1/2 and three two-node points")
    one_node = [p for p in rows if p["nodes"] == 1 and p.get("samples_per_s") and "threads_as" not in p]
    base = next((p for p in one_node if (p["workers"], p["ranks"]) == (1, 1)), None)
    best = max(one_node, key=lambda p: p["samples_per_s"]) if one_node else None
    raw = {"points": rows, "best_one_node": best and {"workers": best["workers"], "ranks": best["ranks"]}}
    same = {(p["workers"], p["ranks"]): p for p in one_node}
    for p in rows:
        if p["nodes"] > 1 and p.get("samples_per_s") and (p["workers"], p["ranks"]) in same:
            raw[f"two_nodes_over_one_w{p['workers']}_r{p['ranks']}"] = ratio(
                p["samples_per_s"], same[(p["workers"], p["ranks"])]["samples_per_s"])
    raw["ratio_of_medians"] = ratio(best["samples_per_s"], base["samples_per_s"]) if best and base else None
    both = sorted(set(best["samples_per_s_by_iteration"]) & set(base["samples_per_s_by_iteration"])) if best and base else []
    raw["ratio_per_repeat"] = paired([best["samples_per_s_by_iteration"][i] for i in both],
                                     [base["samples_per_s_by_iteration"][i] for i in both])
    headline = ", ".join(f"{p['workers']}w{p['ranks']}r{'x2n' if p['nodes'] > 1 else ''}"
                         f"{' job threads' if 'threads_as' in p else ''} "
                         f"{p['samples_per_s']:.1f}" for p in rows if p.get("samples_per_s")) + " samples/s"
    return figure(raw["ratio_per_repeat"], TARGET, raw, notes, headline=headline)


def markdown_table(result: dict) -> str:
    """The scaling points as a markdown table (docs/benchmarks.md)."""
    lines = ["| nodes | workers | ranks | threads (worker/rank) | samples/s | gen tok/s | train tok/s | gen s | train s | "
             "sync s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in result["raw"]["points"]:
        if "error" in p:
            lines.append(f"| {p['nodes']} | | | failed | | | | | | |")
            continue
        threads = p["threads"]
        worker = threads.get("rollout worker 0")
        rank = threads.get("learner rank 0")

        def fmt(value, digits=1):
            return "-" if value is None else f"{value:,.{digits}f}"

        as_job = " (job threads)" if "threads_as" in p else ""
        lines.append(f"| {p['nodes']} | {p['workers']} | {p['ranks']} | {worker}/{rank}{as_job} | {fmt(p['samples_per_s'])} | "
                     f"{fmt(p['gen_tokens_per_s'], 0)} | {fmt(p['train_tokens_per_s'], 0)} | {fmt(p['generate_seconds'], 2)} | "
                     f"{fmt(p['train_seconds'], 2)} | {fmt(p['sync_seconds'], 3)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main_for(NAME, TARGET, measure, __doc__.split("\n")[0]))
