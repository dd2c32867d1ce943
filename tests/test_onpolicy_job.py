"""Plain on-policy IDFT (configs/onpolicy_idft.yaml) end to end, on real Ray, vLLM (CPU) and DeepSpeed (ZeRO-2, gloo).

One run (2 rollout workers, 2 learner ranks, 3 iterations; the session fixture
`onpolicy_run` in conftest.py, which the resume tests compare against) is shared
by the tests below; each checks one promise the outputs make.
"""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from tests.conftest import independent_token_stats, read_jsonl, vllm_prompt_logprobs

pytestmark = pytest.mark.integration

REQUIRED_METRICS = {
    "iteration", "loss", "cll_mean", "gen_tokens_per_s", "train_tokens_per_s", "sync_seconds", "reward_mean",
}


def test_shape_of_the_run(onpolicy_run):
    out, result = onpolicy_run
    spec = yaml.safe_load((out / "spec.yaml").read_text())
    assert spec["rollout"]["workers"] == 2 and spec["learner"]["ranks"] == 2 and spec["learner"]["zero_stage"] == 2
    assert spec["checkpoint"]["every"] == 1  # the --set override is in the saved, resolved spec
    assert spec["train"]["idft"]["gamma_max"] == 2.0  # defaults are filled in

    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [0, 1, 2]
    for m in metrics:
        assert REQUIRED_METRICS <= m.keys()
        assert all(math.isfinite(m[k]) for k in REQUIRED_METRICS)
        assert m["gen_tokens_per_s"] > 0 and m["train_tokens_per_s"] > 0 and m["sync_seconds"] > 0
        # The rollout engine and the CLL replica hold the same weights at every iteration.
        assert m["engine_scorer_logprob_max_diff"] < 1e-4
    assert metrics[-1]["optimizer_steps"] == 3 * 2  # 16 samples / (4 per micro-batch x 2 ranks) per iteration

    for iteration in range(3):
        samples = read_jsonl(out / "samples" / f"iter-{iteration}.jsonl")
        assert len(samples) == 8 * 2
        for s in samples:
            assert s["prompt"] and s["response_token_ids"] and len(s["token_cll"]) == len(s["response_token_ids"])
            assert {"avg_cll", "frac_gt_1", "frac_gt_3", "frac_gt_5"} <= s["cll"].keys()
            assert s["rewards"].keys() == {"math_answer", "function", "total"}  # scored by the reward actor

    assert "finished 3 iteration(s)" in result.stdout  # the readable summary
    assert (out / "checkpoints" / "latest").read_text().strip() == "iter-2"


def test_training_moved_the_weights(onpolicy_run):
    from safetensors.torch import load_file

    out, _ = onpolicy_run
    before = load_file(out / "builtin" / "tiny-llama" / "model.safetensors")
    after = load_file(out / "checkpoints" / "iter-2" / "model.safetensors")
    assert before.keys() == after.keys()
    assert max(float((before[k] - after[k]).abs().max()) for k in before) > 1e-4


def test_checkpoint_loads_in_transformers_and_vllm_with_equal_logprobs(onpolicy_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from actors.training.batching import teacher_forced_logprobs

    out, _ = onpolicy_run
    checkpoint = out / "checkpoints" / "iter-2"
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    sample = read_jsonl(out / "samples" / "iter-2.jsonl")[0]
    probe = sample["prompt_token_ids"] + sample["response_token_ids"]

    hf = torch.tensor(teacher_forced_logprobs(model, probe, tokenizer.pad_token_id))
    vllm = torch.tensor(vllm_prompt_logprobs(checkpoint, probe))
    assert hf.shape == vllm.shape == (len(probe) - 1,)
    # fp32 on both sides; vLLM's CPU kernels differ from torch's by ~1e-6.
    assert float((hf - vllm).abs().max()) < 1e-4


def independent_token_cll(model, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
    """phi_t = log p_t + H_t from full logits, in float64."""
    return [logp + entropy for logp, entropy in independent_token_stats(model, prompt_ids, response_ids)]


@pytest.mark.parametrize("iteration", [0, 1])
def test_rollout_cll_equals_teacher_forced_cll(onpolicy_run, iteration):
    """Iteration 0 samples come from the initial model; iteration 1 from the weights synced after iteration 0.

    The job takes CLL from the engine (rollout.cll_from: engine, the default): vLLM's log p plus the
    entropy it recorded while sampling. Every sample of the iteration was scored that way.
    """
    from transformers import AutoModelForCausalLM

    out, _ = onpolicy_run
    row = next(r for r in read_jsonl(out / "metrics.jsonl") if r.get("kind") != "eval" and r["iteration"] == iteration)
    assert row["cll_replica_fallbacks"] == 0 and row["engine_replica_cll_max_diff"] < 1e-4
    weights = out / "builtin" / "tiny-llama" if iteration == 0 else out / "checkpoints" / f"iter-{iteration - 1}"
    model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32).eval()
    worst = 0.0
    for s in read_jsonl(out / "samples" / f"iter-{iteration}.jsonl"):
        expected = independent_token_cll(model, s["prompt_token_ids"], s["response_token_ids"])
        worst = max(worst, max(abs(a - b) for a, b in zip(s["token_cll"], expected)))
        assert s["cll"]["avg_cll"] == pytest.approx(sum(expected) / len(expected), abs=1e-4)
    assert worst < 1e-4
