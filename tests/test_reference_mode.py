"""rollout.mode reference: SFT on the dataset's own solutions, through the same loop (real Ray, vLLM, DeepSpeed)."""

from __future__ import annotations

import math

import pytest

from jobs.core.builtin import arithmetic_rows
from tests.conftest import read_jsonl, run_cli

pytestmark = pytest.mark.integration


def test_sft_on_reference_solutions_trains_on_exactly_the_written_solutions(tmp_path):
    out = tmp_path / "run"
    result = run_cli("configs/onpolicy_idft.yaml", "--output-dir", str(out), "--set", "algorithm=sft",
                     "--set", "rollout.mode=reference", "--set", "iterations=2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    solutions = {i: row["solution"] for i, row in enumerate(arithmetic_rows())}
    for iteration in (0, 1):
        samples = read_jsonl(out / "samples" / f"iter-{iteration}.jsonl")
        assert len(samples) == 8  # one per prompt: rollout.prompts_per_iteration
        for s in samples:
            assert s["source"] == "demonstration" and s["response"] == solutions[s["prompt_index"]]
            assert s["token_cll"] and s["finish_reason"] == "stop"
    metrics = [m for m in read_jsonl(out / "metrics.jsonl")]
    assert all(math.isfinite(m["loss"]) and m["samples"] == 8 for m in metrics)
    assert "gen_tokens_per_s" not in metrics[0]  # nothing was generated
