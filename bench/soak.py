"""A long run, watched: does anything grow that should not? (docs/operations.md, "Long runs")

    python -m bench.soak [--iterations 300] [--minutes 30] [--config configs/hinted_idft.yaml] [--out runs/soak]

Runs the quickstart job (checkpoints every 10 iterations) on a one-node Ray cluster of its own
(bench/local_cluster.py), so that this script can watch the job from outside as a Ray client. It
stops at --iterations or after --minutes (SIGTERM: the job's graceful stop). Per iteration it keeps:

    rss_mb_<role>    peak RSS of the driver and of each role's largest actor (the job's own metrics row)
    open_files       file descriptors held by the job's driver and every Ray process of the cluster
    object_store_mb  the cluster's plasma store in use (`ray memory --stats-only`)

A figure that grows past its bound, from the first iteration after the warm-up (WARMUP) to the
last, fails the run (exit 1). The bounds, stated once here:

    RSS of any role        + max(25%, 256 MiB)
    open files             + 64
    object store in use    + 64 MiB

Writes OUT/soak.json (every sample, the bounds, the verdict, the commit, the command) and prints
the table docs/operations.md shows (every 10th iteration). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.local_cluster import VENV_BIN, local_cluster

REPO = Path(__file__).resolve().parent.parent
WARMUP = 10  # iterations before the baseline: engines, allocators and caches settle first
RSS_GROWTH = (0.25, 256.0)  # fraction, MiB: whichever is larger
FILES_GROWTH = 64
STORE_GROWTH_MB = 64.0


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found


def open_files(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass  # gone, or not ours to read
    return total


def object_store_mb(cluster) -> float | None:
    result = subprocess.run([str(VENV_BIN / "ray"), "memory", "--stats-only", "--address", cluster.gcs],
                            env=cluster.env, capture_output=True, text=True, timeout=60)
    found = re.search(r"Plasma memory usage (\d+(?:\.\d+)?) MiB", result.stdout)
    return float(found.group(1)) if found else None


def rows_of(metrics: Path) -> list[dict]:
    if not metrics.exists():
        return []
    return [row for row in (json.loads(line) for line in metrics.read_text().splitlines() if line.strip())
            if row.get("kind") != "eval"]


def verdicts(samples: list[dict]) -> list[str]:
    """What grew past its bound from the first sample after the warm-up to the last."""
    later = [s for s in samples if s["iteration"] >= WARMUP]
    if len(later) < 2:
        return [f"too short to judge: {len(later)} sample(s) after the {WARMUP}-iteration warm-up"]
    first, last, broken = later[0], later[-1], []
    for key in (k for k in first if k.startswith("rss_mb_")):
        if first[key] is not None and last.get(key) is not None:
            allowed = max(RSS_GROWTH[0] * first[key], RSS_GROWTH[1])
            if last[key] - first[key] > allowed:
                broken.append(f"{key} grew {first[key]:.0f} -> {last[key]:.0f} MiB (bound +{allowed:.0f})")
    if None not in (first["open_files"], last["open_files"]) and last["open_files"] - first["open_files"] > FILES_GROWTH:
        broken.append(f"open files grew {first['open_files']} -> {last['open_files']} (bound +{FILES_GROWTH})")
    if first["object_store_mb"] is not None and last["object_store_mb"] is not None and \
            last["object_store_mb"] - first["object_store_mb"] > STORE_GROWTH_MB:
        broken.append(f"object store grew {first['object_store_mb']:.0f} -> {last['object_store_mb']:.0f} MiB "
                      f"(bound +{STORE_GROWTH_MB:.0f})")
    return broken


def table(samples: list[dict]) -> str:
    roles = sorted(k for k in samples[0] if k.startswith("rss_mb_")) if samples else []
    lines = ["| iteration | minutes | " + " | ".join(r.removeprefix("rss_mb_") + " RSS MiB" for r in roles)
             + " | open files | object store MiB |", "|---" * (len(roles) + 4) + "|"]
    for s in samples:
        if s["iteration"] % 10 == 0 or s is samples[-1]:
            store = "-" if s["object_store_mb"] is None else f"{s['object_store_mb']:.1f}"
            lines.append(f"| {s['iteration']} | {s['seconds'] / 60:.1f} | "
                         + " | ".join("-" if s.get(r) is None else f"{s[r]:.0f}" for r in roles)
                         + f" | {'-' if s['open_files'] is None else s['open_files']} | {store} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--config", default="configs/hinted_idft.yaml")
    parser.add_argument("--out", default=str(REPO / "runs" / "soak"))
    parser.add_argument("--table", metavar="SOAK_JSON", help="run nothing: print the table of a finished run's soak.json "
                        "(docs/operations.md's comes from docs/results/soak.json)")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())["samples"]))
        return 0
    out = Path(args.out).resolve()
    command = [sys.executable, "-m", "jobs.run", args.config, "--output-dir", str(out / "job"), "--overwrite",
               "--set", f"iterations={args.iterations}", "checkpoint.every=10"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    samples: list[dict] = []
    started = time.monotonic()
    # The job's --overwrite clears its folder only once it starts: until then an earlier run's metrics.jsonl
    # would be read as this one's.
    shutil.rmtree(out / "job", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    # stderr to a file: a pipe nobody reads for 30 minutes fills up, and the job would block on it.
    with local_cluster(nodes=1, cpus_per_node=os.cpu_count() or 2) as cluster, \
            open(out / "job.stderr", "w+") as stderr:
        job = subprocess.Popen(command, cwd=REPO, env=cluster.job_env, stdout=subprocess.DEVNULL,
                               stderr=stderr, text=True, start_new_session=True)
        stopped, running, probe = False, True, {"open_files": None, "object_store_mb": None}
        while running:
            running = job.poll() is None  # one more pass after the job ends: rows written since the last one
            time.sleep(2 if running else 0)
            rows = rows_of(out / "job" / "metrics.jsonl")
            if len(rows) > len(samples) and running:
                # Measured once per pass, not per row: `ray memory` takes seconds, and late iterations of the
                # tiny model take under one, so per-row probes would fall behind the job. Every row of a pass
                # gets the pass's figures; its RSS columns are the job's own, per iteration.
                pids = descendants(os.getpid()) - {os.getpid()}  # the cluster's processes and the job's
                probe = {"open_files": open_files(pids), "object_store_mb": object_store_mb(cluster)}
            for row in rows[len(samples):]:
                samples.append({
                    "iteration": row["iteration"], "seconds": round(time.monotonic() - started, 1),
                    **{key.replace("peak_rss_mb_", "rss_mb_"): value for key, value in row.items()
                       if key.startswith("peak_rss_mb_")},
                    **probe,
                })
                print(f"[soak] iteration {row['iteration']}: {samples[-1]}", flush=True)
            if not stopped and time.monotonic() - started > args.minutes * 60:
                job.send_signal(signal.SIGTERM)  # the graceful stop: a checkpoint, then exit 143
                stopped = True
        stderr.seek(0)
        error = stderr.read()
    broken = verdicts(samples)
    result = {"commit": commit, "command": command, "bounds": {"rss_growth": RSS_GROWTH, "files_growth": FILES_GROWTH,
              "store_growth_mb": STORE_GROWTH_MB, "warmup": WARMUP}, "job_exit": job.returncode,
              "job_stderr": error[-2000:], "samples": samples, "broken": broken, "ok": not broken}
    (out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    print(table(samples))
    print(f"[soak] {len(samples)} iterations in {(time.monotonic() - started) / 60:.1f} min at {commit}; "
          + ("no figure grew past its bound" if not broken else "GREW: " + "; ".join(broken))
          + f"; {out / 'soak.json'}")
    return 0 if not broken and job.returncode in (0, 143) else 1


if __name__ == "__main__":
    sys.exit(main())
