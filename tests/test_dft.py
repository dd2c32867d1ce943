"""DFT, added as an algorithm of its own (jobs/algorithms/dft.py, losses/dft.py, configs/dft.yaml).

The loss against its formula and its closed-form gradient, and a real job whose learners must
have weighted every token by its own probability under the weights that sampled it.
"""

from __future__ import annotations

import math

import pytest
import torch

from jobs.core.spec import load_spec
from losses.dft import dft_loss
from losses.sft import sft_loss
from tests.conftest import REPO, read_jsonl, run_cli


def random_batch(seed: int = 0, batch: int = 3, length: int = 7, vocab: int = 11):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=generator, requires_grad=True)
    targets = torch.randint(vocab, (batch, length), generator=generator)
    mask = torch.rand(batch, length, generator=generator) > 0.3
    return logits, targets, mask


def test_the_loss_is_the_probability_weighted_nll_and_its_gradient_the_closed_form():
    logits, targets, mask = random_batch()
    logprobs = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    loss, metrics = dft_loss(logprobs, mask)
    loss.backward()
    p = logprobs.detach().exp()
    n = mask.sum()
    assert torch.allclose(loss, (p * -logprobs.detach())[mask].sum() / n)
    assert torch.allclose(metrics["weight_mean"], p[mask].sum() / n)
    # d/dz of −sg(p) log p: −p (onehot(y) − softmax(z)) / N on valid tokens, 0 elsewhere.
    onehot = torch.nn.functional.one_hot(targets, logits.shape[-1]).float()
    expected = -(p * mask)[..., None] * (onehot - logits.detach().softmax(-1)) / n
    assert torch.allclose(logits.grad, expected, atol=1e-7)


def test_it_is_not_sft_and_a_certain_token_trains_as_in_sft():
    logits, targets, mask = random_batch(1)
    logprobs = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    assert not torch.allclose(dft_loss(logprobs, mask)[0], sft_loss(logprobs, mask)[0])
    certain = torch.zeros(2, 4)  # log p = 0: weight 1, like SFT
    full = torch.ones(2, 4, dtype=torch.bool)
    assert dft_loss(certain, full)[0] == sft_loss(certain, full)[0] == 0


def test_the_spec_takes_it_where_token_losses_go_and_refuses_it_where_they_do_not():
    spec = load_spec(REPO / "configs" / "dft.yaml", ["rollout.mode=verified", "train.truncated_is_cap=2"])
    assert (spec.registered_algorithm.trains_on, spec.uses_initial_reference) == ("samples", False)
    with pytest.raises(Exception, match="rollout.mode 'verified' trains on the kept samples with sft or idft or dft"):
        load_spec(REPO / "configs" / "dpo.yaml", ["rollout.mode=verified"])


@pytest.mark.integration
def test_a_dft_job_weights_each_token_by_its_probability_under_the_sampling_weights(tmp_path):
    # One optimizer step per rank and iteration (8 samples per rank = 2 micro-batches of 4, accumulated):
    # every micro-batch is trained on at the weights that sampled it, so the learners' token-mean
    # weight and loss must equal what the engines' own log-probs of those tokens give.
    out = tmp_path / "dft"
    result = run_cli("configs/dft.yaml", "--output-dir", str(out), "--set", "iterations=1",
                     "--set", "train.gradient_accumulation_steps=2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    row = [r for r in read_jsonl(out / "metrics.jsonl") if r.get("kind") != "eval"][0]
    logps = [lp for s in read_jsonl(out / "samples" / "iter-0.jsonl") for lp in s["engine_logprobs"]]
    assert len(logps) > 50 and "gamma_mean" not in row
    assert row["weight_mean"] == pytest.approx(sum(math.exp(lp) for lp in logps) / len(logps), rel=2e-3)
    assert row["loss"] == pytest.approx(sum(-math.exp(lp) * lp for lp in logps) / len(logps), rel=2e-3)
    assert row["nll"] == pytest.approx(sum(-lp for lp in logps) / len(logps), rel=2e-3)
