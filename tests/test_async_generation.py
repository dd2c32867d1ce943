"""rollout.max_policy_lag: generation of iteration k+1 runs while iteration k trains.

One asynchronous run (bound 1) of the same job as the shared synchronous run (conftest's
onpolicy_run, bound 0). How the test knows which weights generated a sample: each sample
carries its summed log-prob under the weights that generated and scored it (the engine's
CLL replica), and the per-iteration checkpoints hold every version of the weights.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.conftest import ONPOLICY_ARGS, independent_token_stats, read_jsonl, run_cli

pytestmark = pytest.mark.integration
# The tightest cap the spec allows: every token an update made likelier is truncated, so the cap binds.
IS_CAP = 1.0


@pytest.fixture(scope="module")
def async_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("async")
    # Truncated IS rides along: lagged samples are where its weights leave 1. One optimizer step per
    # rank and iteration (2 micro-batches accumulated), so every micro-batch of an iteration is trained
    # at the weights its checkpoint before it holds.
    result = run_cli(*ONPOLICY_ARGS, "--output-dir", str(out), "--set", "rollout.max_policy_lag=1",
                     "--set", f"train.truncated_is_cap={IS_CAP}", "--set", "train.gradient_accumulation_steps=2")
    assert result.returncode == 0, f"job failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return out


def training_rows(out):
    return [row for row in read_jsonl(out / "metrics.jsonl") if row.get("kind") != "eval"]


def summed_logps(model_dir, samples) -> list[float]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return [sum(logp for logp, _ in independent_token_stats(model, s["prompt_token_ids"], s["response_token_ids"]))
            for s in samples]


def max_gap(a, b) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def test_the_lag_never_exceeds_the_bound_and_is_recorded(async_run):
    rows = training_rows(async_run)
    assert [row["iteration"] for row in rows] == [0, 1, 2]
    # Iteration 0 has nothing to overlap with; every later one was queued one update early.
    assert [row["policy_lag_max"] for row in rows] == [0, 1, 1]
    for row in rows:
        lags = {s["policy_lag"] for s in read_jsonl(async_run / "samples" / f"iter-{row['iteration']}.jsonl")}
        assert lags == {min(row["iteration"], 1)}
        assert row["policy_lag_mean"] == min(row["iteration"], 1)
        # The CLL replica still scores under exactly the weights the engine sampled from.
        assert row["engine_scorer_logprob_max_diff"] < 1e-4


def test_a_lagged_sample_comes_from_the_weights_one_update_back(async_run):
    samples = read_jsonl(async_run / "samples" / "iter-2.jsonl")
    recorded = [s["sequence_logp"] for s in samples]
    # Iteration 2 was generated while iteration 1 trained: from the weights after iteration 0 ...
    assert max_gap(recorded, summed_logps(async_run / "checkpoints" / "iter-0", samples)) < 1e-3
    # ... not from those after iteration 1, which trained on it.
    assert max_gap(recorded, summed_logps(async_run / "checkpoints" / "iter-1", samples)) > 1e-2
    # And iteration 1 from the starting weights (the builtin model the job built).
    first = read_jsonl(async_run / "samples" / "iter-1.jsonl")
    assert max_gap([s["sequence_logp"] for s in first], summed_logps(async_run / "builtin" / "tiny-llama", first)) < 1e-3


def test_bound_zero_is_the_synchronous_run_and_iteration_0_agrees(async_run, onpolicy_run):
    sync_out, _ = onpolicy_run
    rows = training_rows(sync_out)
    assert [row["policy_lag_max"] for row in rows] == [0, 0, 0]
    for iteration in range(3):
        assert {s["policy_lag"] for s in read_jsonl(sync_out / "samples" / f"iter-{iteration}.jsonl")} == {0}
    # Same weights, same per-request seeds: the first iteration cannot tell the two modes apart.
    sync_first = read_jsonl(sync_out / "samples" / "iter-0.jsonl")
    async_first = read_jsonl(async_run / "samples" / "iter-0.jsonl")
    assert [s["response_token_ids"] for s in async_first] == [s["response_token_ids"] for s in sync_first]
    # After it they differ: the synchronous run's iteration 1 saw the update, the asynchronous one did not.
    sync_second = read_jsonl(sync_out / "samples" / "iter-1.jsonl")
    async_second = read_jsonl(async_run / "samples" / "iter-1.jsonl")
    assert [s["response_token_ids"] for s in async_second] != [s["response_token_ids"] for s in sync_second]


@pytest.mark.parametrize("iteration", [1, 2])
def test_truncated_importance_weights_are_the_ratio_to_the_lagged_sampler_capped(async_run, iteration):
    """Iteration k trains, at the weights after iteration k-1, on samples the weights before that drew:
    the learners' IS metrics must be those of min(pi / pi_sampler, C) recomputed here, token by token,
    from that checkpoint and the engine's own log-probs of the sampled tokens."""
    row = training_rows(async_run)[iteration]
    samples = read_jsonl(async_run / "samples" / f"iter-{iteration}.jsonl")
    model = AutoModelForCausalLM.from_pretrained(async_run / "checkpoints" / f"iter-{iteration - 1}",
                                                 dtype=torch.float32).eval()
    ratios = []
    for s in samples:
        policy = [logp for logp, _ in independent_token_stats(model, s["prompt_token_ids"], s["response_token_ids"])]
        ratios += [math.exp(p - q) for p, q in zip(policy, s["engine_logprobs"], strict=True)]
    truncated = sum(r > IS_CAP for r in ratios) / len(ratios)
    assert 0 < truncated < 1, truncated  # the cap binds on some tokens and not on others
    assert row["is_weight_mean"] == pytest.approx(sum(ratios) / len(ratios), rel=1e-3)
    # A ratio within float error of the cap may fall either side: allow one token.
    assert row["is_truncated_fraction"] == pytest.approx(truncated, abs=1.01 / len(ratios))
