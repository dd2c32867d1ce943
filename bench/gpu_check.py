"""Everything docs/gpu.md says a GPU session should run, in one go: run by bench/gpu_check.sh.

    bench/gpu_check.sh MODEL_DIR [--out DIR] [--dry-run]

Steps, each with its own time limit (the whole under 8 minutes on one H100/H200):

    weight_sync_tests   pytest tests/test_weight_sync.py (the sync paths, on this machine)
    gpu1x_object_store  configs/gpu-1x.yaml on MODEL_DIR (bf16, one worker + one rank sharing the GPU),
                        builtin:word-problems (no extra package), 2 iterations, sync through the object store
    gpu1x_broadcast     the same with sync.method broadcast, worker and rank on a GPU each (skipped with one GPU:
                        NCCL cannot broadcast between two processes on one device)
    head_dtype_gap      bench.head_dtype_gap: the bf16 engine-vs-replica log-prob gap (mean, p99, max)
                        with the model's head and with the float32 head
    hinted_decoding     bench/hinted_decoding.py on MODEL_DIR: Hinted Decoding in the engine and on the replica
                        against plain vLLM sampling, on the GPU

From each job it keeps the figures its metrics.jsonl holds: generation, training and sync speed,
the engine-vs-replica gap, and the time to the first iteration with its split (startup_* keys).
Everything goes into DIR/gpu-check.json (schema: SCHEMA below, checked before it is written), the
jobs' own folders beside it; the last line printed names DIR. --dry-run prints each step's command
(each job's spec, with its overrides, through `--check`) and writes the JSON with every step marked
"dry-run": the CPU path the suite tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
JOB_FIGURES = ("gen_tokens_per_s", "train_tokens_per_s", "sync_seconds", "iteration_seconds",
               "engine_scorer_logprob_mean_diff", "engine_scorer_logprob_p99_diff", "engine_scorer_logprob_max_diff",
               "sync_broadcast_fallbacks")
# The keys every step's record has, and their types: the file a GPU session commits has this shape.
SCHEMA = {"name": str, "command": list, "status": str, "seconds": (int, float), "figures": dict, "log": str}
STATUSES = ("ok", "failed", "timed out", "dry-run", "skipped")


def job_step(name: str, model: str, out: Path, *overrides: str, gpus: int = 1) -> dict:
    return {"name": name, "timeout": 210, "kind": "job", "gpus": gpus, "command": [
        sys.executable, "-m", "jobs.run", "configs/gpu-1x.yaml", "--overwrite", "--output-dir", str(out / name),
        "--set", f"model.path={model}", "data.path=builtin:word-problems", "data.solution_column=solution",
        "data.task_options={}", "iterations=2", "eval.every=0", "checkpoint.every=0", *overrides]}


def steps(model: str, out: Path) -> list[dict]:
    return [
        {"name": "weight_sync_tests", "timeout": 120, "kind": "pytest",
         "command": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_weight_sync.py"]},
        job_step("gpu1x_object_store", model, out, "sync.method=object_store"),
        # NCCL cannot broadcast between two processes on one device (the spec refuses it): a GPU each.
        job_step("gpu1x_broadcast", model, out, "sync.method=broadcast", "placement.colocate=false",
                 "rollout.gpus_per_worker=1", "learner.gpus_per_rank=1", "placement.gpus_per_node=2", gpus=2),
        {"name": "head_dtype_gap", "timeout": 90, "kind": "json_lines",
         "command": [sys.executable, "-m", "bench.head_dtype_gap", "--model", model, "--dtype", "bfloat16",
                     "--head", "model", "--head", "float32", "--prompts", "16"]},
        {"name": "hinted_decoding", "timeout": 150, "kind": "json",
         "command": [sys.executable, "bench/hinted_decoding.py", "--model", model, "--requests", "32", "--tokens", "64",
                     "--repeats", "3"]},
    ]


def job_figures(run_dir: Path) -> dict:
    """Medians over the iterations after the first (which pays for warm-up), the first iteration's start-up."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [row for row in rows if row.get("kind") != "eval"]
    later = rows[1:] or rows
    figures = {}
    for key in JOB_FIGURES:
        values = sorted(row[key] for row in later if isinstance(row.get(key), (int, float)))
        if values:
            figures[key] = values[len(values) // 2]
    if rows:
        figures.update({key: value for key, value in rows[0].items()
                        if key == "seconds_to_first_iteration" or key.startswith("startup_")})
    return figures


def figures_of(step: dict, output: str, out: Path) -> dict:
    if step["kind"] == "job":
        return job_figures(out / step["name"])
    if step["kind"] == "json":  # one JSON document on stdout, its log (stderr) after it
        start = 0 if output.startswith("{") else output.index("\n{") + 1
        return json.JSONDecoder().raw_decode(output[start:])[0]
    if step["kind"] == "json_lines":
        return {f"setting_{i}": json.loads(line) for i, line in enumerate(
            line for line in output.splitlines() if line.startswith("{"))}
    return {"summary": next((line for line in reversed(output.splitlines()) if line.strip()), "")}


def check_schema(record: dict) -> None:
    for key, kind in SCHEMA.items():
        if not isinstance(record.get(key), kind):
            raise ValueError(f"gpu-check record {record.get('name')!r}: {key} is {record.get(key)!r}, not {kind}")
    if record["status"] not in STATUSES:
        raise ValueError(f"gpu-check record {record['name']!r}: status {record['status']!r}")


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def run_step(step: dict, out: Path, dry_run: bool) -> dict:
    log = out / f"{step['name']}.log"
    record = {"name": step["name"], "command": step["command"], "log": str(log), "figures": {}}
    print(f"[gpu-check] {step['name']} (limit {step['timeout']}s): {' '.join(step['command'])}", flush=True)
    if dry_run:
        # A job's spec, with every override, is still checked (`--check`: no Ray, no GPU needed).
        if step["kind"] == "job":
            checked = subprocess.run([*step["command"], "--check"], cwd=REPO, capture_output=True, text=True,
                                     timeout=120)
            if checked.returncode != 0:
                print(f"[gpu-check] {step['name']}: its spec does not check: {checked.stderr.strip()[-500:]}", flush=True)
                return {**record, "status": "failed", "seconds": 0.0}
        return {**record, "status": "dry-run", "seconds": 0.0}
    if step.get("gpus", 0) > gpu_count():
        print(f"[gpu-check] {step['name']}: skipped, it needs {step['gpus']} GPUs and this machine has {gpu_count()}")
        return {**record, "status": "skipped", "seconds": 0.0}
    started = time.perf_counter()
    try:
        done = subprocess.run(step["command"], cwd=REPO, capture_output=True, text=True, timeout=step["timeout"])
        output, status = done.stdout + done.stderr, "ok" if done.returncode == 0 else "failed"
    except subprocess.TimeoutExpired as exc:
        output, status = f"{exc.stdout or ''}{exc.stderr or ''}", "timed out"
    output = output if isinstance(output, str) else output.decode(errors="replace")
    log.write_text(output)
    seconds = round(time.perf_counter() - started, 1)
    try:
        figures = figures_of(step, output, out) if status == "ok" else {}
    except (OSError, ValueError, KeyError) as exc:
        figures = {"error": f"{type(exc).__name__}: {exc}"}
    print(f"[gpu-check] {step['name']}: {status} in {seconds}s", flush=True)
    return {**record, "status": status, "seconds": seconds, "figures": figures}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench/gpu_check.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="an HF model folder (SmolLM2-135M-Instruct in bf16 safetensors)")
    parser.add_argument("--out", help="default: runs/gpu-check-<UTC time>")
    parser.add_argument("--dry-run", action="store_true", help="print each step's command, run nothing")
    args = parser.parse_args(argv)
    if not (Path(args.model) / "config.json").is_file():
        print(f"bench/gpu_check.sh: {args.model}: no HF model folder there (config.json missing)", file=sys.stderr)
        return 2
    out = Path(args.out or REPO / "runs" / time.strftime("gpu-check-%Y%m%d-%H%M%S", time.gmtime())).resolve()
    out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    records = [run_step(step, out, args.dry_run) for step in steps(args.model, out)]
    for record in records:
        check_schema(record)
    device = "none (dry run)"
    if not args.dry_run:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    result = {"commit": commit or None, "device": device, "model": args.model, "dry_run": args.dry_run,
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": sys.version.split()[0],
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "steps": records}
    (out / "gpu-check.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"[gpu-check] {sum(r['status'] in ('ok', 'dry-run') for r in records)} of {len(records)} steps ok, "
          f"{sum(r['status'] == 'skipped' for r in records)} skipped; "
          f"results in {out}", flush=True)
    return 0 if all(r["status"] in ("ok", "dry-run", "skipped") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
