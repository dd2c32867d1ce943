"""Run directories written by hand: metrics.jsonl with training and eval rows, and a spec.yaml.

Every value is a simple function of the iteration, so a test can say what a report or a
comparison must show without running a job.
"""

from __future__ import annotations

import json
from pathlib import Path

# A spec comment with markup in it: a page that shows the spec must escape it.
SPEC_MARKUP = '<script>window.specMarkupRan = true</script> & "quoted"'


def train_row(iteration: int) -> dict:
    return {
        "iteration": iteration,
        "loss": 1.0 / (iteration + 1),
        "cll_mean": -0.1 + 0.01 * iteration,
        "kept_cll_mean": 0.02 * iteration,
        "reward_mean": 0.2 + 0.01 * iteration,
        "first_try_right": 0.1 + 0.02 * iteration,
        "generated_tokens": 100 + iteration,
        "train_tokens": 200 + 2 * iteration,
        "gen_tokens_per_s": 1000.0 + iteration,
        "train_tokens_per_s": 2000.0 + iteration,
        "iteration_seconds": 0.5 + 0.1 * iteration,
        "checkpoint": f"/runs/x/checkpoints/iter-{iteration}",
    }


def eval_row(iteration: int) -> dict:
    return {
        "kind": "eval",
        "iteration": iteration,
        "eval_pass1": 0.3 + 0.05 * iteration,
        "eval_pass_at_k": 0.5 + 0.04 * iteration,
        "eval_k": 4,
        "eval_problems": 32,
        "forget_kl": 0.01 * iteration,
        "forget_rank_mean": 1.0 + 0.1 * iteration,
        "forget_rank_gt1": 0.02 * iteration,
        "forget_centroid_shift": 0.003 * iteration,
        "eval_reference_cll": -0.2 + 0.01 * iteration,
        "eval_seconds": 1.5,
    }


def write_run(run_dir: Path, name: str = "synthetic", algorithm: str = "idft", iterations: int = 6,
              eval_every: int | None = 2, drop: tuple[str, ...] = ()) -> Path:
    """Training rows 0..iterations-1; an eval row after iterations 0, eval_every, ... and the last.

    `drop` removes keys from every row: an SFT run has no reward, a run without eval has no forget_*.
    """
    rows = []
    for iteration in range(iterations):
        rows.append(train_row(iteration))
        if eval_every and (iteration % eval_every == 0 or iteration == iterations - 1):
            rows.append(eval_row(iteration))
    rows = [{k: v for k, v in row.items() if k not in drop} for row in rows]
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (run_dir / "spec.yaml").write_text(
        f"# {SPEC_MARKUP}\nname: {name}\nseed: 0\niterations: {iterations}\nalgorithm: {algorithm}\n"
    )
    return run_dir


def read_rows(run_dir: Path, kind: str) -> list[dict]:
    """The rows of one kind, read apart from jobs/outputs/metrics_rows.py."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return [row for row in rows if row.get("kind", "train") == kind]
