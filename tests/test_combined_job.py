"""ZeRO-3, LoRA, broadcast weight sync and a reward-model scorer in one job through the real CLI: each
was tested on the bare actors (tests/test_learner_memory_modes.py, test_weight_sync.py,
test_reward_actor.py); here they have to work together."""

from __future__ import annotations

import json

import pytest

from tests.conftest import read_jsonl, run_cli

pytestmark = pytest.mark.integration


def test_zero3_lora_broadcast_sync_and_a_reward_model_in_one_job(tmp_path, tiny_reward_model):
    out = tmp_path / "run"
    lora = json.dumps({"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    sources = json.dumps([{"kind": "reward_model", "name": "rm", "path": str(tiny_reward_model)},
                          {"kind": "math_answer"}])
    result = run_cli("configs/onpolicy_idft.yaml", "--output-dir", str(out), "--set", "iterations=2",
                     "learner.zero_stage=3", f"model.lora={lora}", "sync.method=broadcast", f"reward.sources={sources}",
                     "checkpoint.every=1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    rows = [row for row in read_jsonl(out / "metrics.jsonl") if row.get("kind") != "eval"]
    assert [row["iteration"] for row in rows] == [0, 1]
    for row in rows:
        assert row["sync_broadcast_fallbacks"] == 0, row.get("sync_broadcast_error")  # broadcast did the sync
        assert row["engine_scorer_logprob_max_diff"] < 1e-4  # engines and replicas hold the same merged weights
        assert row["sync_bytes"] > 0
    # The reward model scored every sample: its scores differ between samples, and the total adds them up.
    samples = read_jsonl(out / "samples" / "iter-1.jsonl")
    scores = [s["rewards"]["rm"] for s in samples]
    assert len(set(scores)) > 1
    assert all(s["rewards"]["total"] == pytest.approx(s["rewards"]["rm"] + s["rewards"]["math_answer"]) for s in samples)
    assert rows[1]["reward_rm_mean"] == pytest.approx(sum(scores) / len(scores))
    # ZeRO-3 gathered the adapters for the checkpoint: a peft adapter folder.
    assert (out / "checkpoints" / "iter-1" / "adapter_model.safetensors").is_file()
