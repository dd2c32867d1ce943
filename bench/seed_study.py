"""The evidence study: do the seeds' claims hold on a real model? (docs/results/seed-study.md)

Seven methods at one budget (configs/study-*-smollm2.yaml over configs/study-base-smollm2.yaml),
each at several seeds, plus the base model; every run is an ordinary `python -m jobs.run` job
whose eval actor scores the final weights. What each run leaves in the repository, under
docs/results/seed-study/<method>-seed<S>/:

    run.json             the run's numbers, its commit, wall time and tokens (written last: a run
                         without it is unfinished and is run again)
    heldout.jsonl.gz     every judged held-out and transfer answer: problem id, question, gold,
                         extracted answer, response, verdict
    samples-cll.jsonl.gz every training-time sample's source, problem, avg CLL, verdict and fate

The base model is evaluated once, in the first run's job (eval.at_start), and filed as `base`.

    python -m bench.seed_study --model DIR            run what is missing (resumable), then --report
    python -m bench.seed_study --report               rewrite summary.json, seed-study.md and its plot
                                                      from the committed files alone; runs nothing
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from jobs.outputs.metrics_rows import RunMetrics

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "docs" / "results" / "seed-study"
METHODS = ("sft", "sft-low-lr", "idft", "onpolicy-idft", "answer-first", "dpo", "rpo")
SEEDS = (0, 1, 2)
BASE_RUN = ("sft", 0)  # its job also evaluates the starting weights: the base model's record
BASE = "base"


def config_of(method: str) -> Path:
    return REPO / "configs" / f"study-{method}-smollm2.yaml"


def run_name(method: str, seed: int) -> str:
    return f"{method}-seed{seed}"


def finished(results: Path, name: str) -> bool:
    return (results / name / "run.json").is_file()


# --------------------------------------------------------------------------- files


def write_json(path: Path, value) -> None:
    """Whole or not at all: a crash leaves the old file (or none), never half of a new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")
    os.replace(partial, path)


def write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:  # mtime 0: same bytes
        out.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())
    os.replace(partial, path)


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as lines:
        return [json.loads(line) for line in lines if line.strip()]


# --------------------------------------------------------------------------- one run


def code_commit() -> tuple[str, bool]:
    """The commit the runs execute, and whether the tree had uncommitted changes to tracked code."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "actors", "jobs",
                              "losses", "configs", "bench"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return head or "unknown", bool(changed)


EVAL_KEYS = ("eval_pass1", "eval_transfer_pass1", "forget_kl", "forget_rank_mean", "forget_rank_gt1",
             "forget_centroid_shift", "forget_ood_nll", "forget_ood_nll_base", "eval_reference_cll", "eval_seconds")


def heldout_records(run_dir: Path, iteration: int) -> list[dict]:
    keep = ("mode", "problem", "prompt", "gold", "extracted", "response", "correct", "response_tokens")
    records = read_jsonl(run_dir / "eval" / f"iter-{iteration}.jsonl")
    return [{key: r.get(key) for key in keep} for r in records if r["mode"] in ("greedy", "transfer")]


def eval_summary(row: dict, records: list[dict]) -> dict:
    greedy = [r for r in records if r["mode"] == "greedy"]
    transfer = [r for r in records if r["mode"] == "transfer"]
    return {
        "heldout_n": len(greedy), "heldout_correct": sum(r["correct"] for r in greedy),
        "heldout_pass1": row["eval_pass1"],
        "transfer_n": len(transfer), "transfer_correct": sum(r["correct"] for r in transfer),
        "transfer_pass1": row.get("eval_transfer_pass1"),
        **{key: row.get(key) for key in EVAL_KEYS if key not in ("eval_pass1", "eval_transfer_pass1")},
    }


def sample_records(run_dir: Path) -> list[dict]:
    """What CLL said about each training-time sample, and what became of it (claims 1 and 2)."""
    rows = []
    for path in sorted((run_dir / "samples").glob("iter-*.jsonl"), key=lambda p: int(p.stem.split("-")[1])):
        for s in read_jsonl(path):
            rows.append({"iteration": s["iteration"], "problem": s["prompt_index"], "source": s["source"],
                         "avg_cll": (s.get("cll") or {}).get("avg_cll"), "tokens": len(s["response_token_ids"]),
                         "correct": (s.get("rewards") or {}).get("math_answer"), "dropped": s.get("dropped")})
    return rows


def budget(run_dir: Path) -> dict:
    """What the report states about the setup, read from the job's own resolved spec."""
    import yaml

    spec = yaml.safe_load((run_dir / "spec.yaml").read_text()) if (run_dir / "spec.yaml").is_file() else {}
    rollout, data, evaluation = spec.get("rollout", {}), spec.get("data", {}), spec.get("eval", {})
    return {"model": spec.get("model", {}).get("path"), "task": data.get("path"), "iterations": spec.get("iterations"),
            "prompts_per_iteration": rollout.get("prompts_per_iteration"), "mode": rollout.get("mode"),
            "samples_per_prompt": rollout.get("samples_per_prompt"), "max_new_tokens": rollout.get("max_new_tokens"),
            "lr": spec.get("train", {}).get("lr"), "learner_ranks": spec.get("learner", {}).get("ranks"),
            "heldout_seed": (data.get("seed") or 0) + 1, "transfer": (evaluation.get("transfer") or {}).get("path"),
            "ood_passages": evaluation.get("ood_passages"), "ood_max_tokens": evaluation.get("ood_max_tokens")}


def collect(run_dir: Path, results: Path, method: str, seed: int, commit: str, dirty: bool, wall: float) -> None:
    """File a finished job's records; run.json last, so a crash in here leaves the run unfinished."""
    metrics = RunMetrics.read(run_dir)  # the project's one reader of metrics.jsonl, split by row kind
    evals, trains = {row["iteration"]: row for row in metrics.eval}, metrics.train
    last = max(row["iteration"] for row in trains)
    if last not in evals:
        raise RuntimeError(f"{run_dir}: no eval of the final iteration {last} in metrics.jsonl")
    common = {"commit": commit, "uncommitted_changes": dirty, "config": str(config_of(method).relative_to(REPO)),
              "budget": budget(run_dir)}
    if (method, seed) == BASE_RUN:
        if -1 not in evals:
            raise RuntimeError(f"{run_dir}: no eval of the starting weights (iteration -1) for the base record")
        records = heldout_records(run_dir, -1)
        write_jsonl_gz(results / BASE / "heldout.jsonl.gz", records)
        write_json(results / BASE / "run.json", {"method": BASE, "seed": None, "run": BASE, "from_job": run_name(*BASE_RUN),
                                                 **common, **eval_summary(evals[-1], records)})
    records = heldout_records(run_dir, last)
    name = run_name(method, seed)
    write_jsonl_gz(results / name / "heldout.jsonl.gz", records)
    write_jsonl_gz(results / name / "samples-cll.jsonl.gz", sample_records(run_dir))
    write_json(results / name / "run.json", {
        "method": method, "seed": seed, "run": name, **common, "iterations": last + 1,
        "wall_seconds": round(wall, 1),
        "generated_tokens": sum(row.get("generated_tokens", 0) for row in trains),
        "train_tokens": sum(row.get("train_tokens", 0) for row in trains),
        "trained_samples": sum(row.get("kept_samples", row.get("samples", 0)) for row in trains),
        **eval_summary(evals[last], records),
    })


def run_one(method: str, seed: int, model: str, work: Path, results: Path, commit: str, dirty: bool) -> bool:
    name = run_name(method, seed)
    run_dir = work / name
    command = [sys.executable, "-m", "jobs.run", str(config_of(method)), "--set", f"model.path={model}",
               "--set", f"seed={seed}", "--set", f"eval.at_start={str((method, seed) == BASE_RUN).lower()}",
               "--output-dir", str(run_dir), "--overwrite"]
    print(f"[seed-study] {name}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    with open(work / f"{name}.log", "w") as log:
        code = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - started
    if code != 0:
        print(f"[seed-study] {name}: job failed (exit {code}) after {wall:.0f}s; log {work / f'{name}.log'}; "
              f"it runs again next time", flush=True)
        return False
    try:
        collect(run_dir, results, method, seed, commit, dirty, wall)
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        # E.g. the final eval was lost (an eval actor killed for memory): nothing is filed, the study goes
        # on with the next run, and this one runs again next time.
        print(f"[seed-study] {name}: the job ended but its records are incomplete ({type(exc).__name__}: {exc}); "
              f"nothing filed, it runs again next time", flush=True)
        return False
    print(f"[seed-study] {name}: done in {wall:.0f}s", flush=True)
    return True


# --------------------------------------------------------------------------- checks before anything runs


def preflight(model: str, methods: list[str]) -> None:
    """One line and exit 2 for what would fail every run: the model folder, the specs, the task's solutions."""
    from jobs.core.data_sources import column_value
    from jobs.core.data import load_rows
    from jobs.core.errors import HintflowError
    from jobs.core.spec import load_spec

    if not (Path(model) / "config.json").is_file():
        sys.exit(f"seed-study: --model {model}: no HF model folder there (config.json missing); "
                 f"docs/results.md says how to make one offline")
    for method in methods:
        try:
            spec = load_spec(config_of(method))
            rows = load_rows(spec.data)
        except (HintflowError, OSError) as exc:
            sys.exit(f"seed-study: {config_of(method).name}: {exc}")
        missing = [i for i, row in enumerate(rows) if not column_value(row, spec.data.solution_column)]
        if missing:
            sys.exit(f"seed-study: {spec.data.path}: data row {missing[0]} has no reference solution in column "
                     f"{spec.data.solution_column!r} (data.solution_column); SFT has nothing to train on")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.seed_study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="SmolLM2-135M-Instruct HF folder")
    parser.add_argument("--report", action="store_true", help="only rewrite the report from the committed files")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--work-dir", default=str(REPO / "runs" / "seed-study"),
                        help="the jobs' own output folders (not kept in the repository)")
    parser.add_argument("--results", default=str(RESULTS), help="where the kept records go")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from bench.seed_study_report import write_report

    args = parse_args(argv)
    results = Path(args.results)
    if args.report:
        write_report(results)
        return 0
    if not args.model:
        sys.exit("seed-study: --model DIR is needed to run (or --report to only rewrite the report)")
    preflight(args.model, args.methods)
    commit, dirty = code_commit()
    todo = [(m, s) for s in args.seeds for m in args.methods  # seed by seed: every method gets a first seed early
            if not finished(results, run_name(m, s)) or ((m, s) == BASE_RUN and not finished(results, BASE))]
    print(f"[seed-study] {len(todo)} run(s) to do at commit {commit}{' (uncommitted changes)' if dirty else ''}; "
          f"finished runs are skipped", flush=True)
    failed = [run_name(m, s) for m, s in todo
              if not run_one(m, s, args.model, Path(args.work_dir), results, commit, dirty)]
    write_report(results)
    if failed:
        print(f"[seed-study] failed: {', '.join(failed)}; run the same command again to finish them", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
