"""Truncated importance weights on the sft and idft token losses (losses/truncated_is.py)."""

import math

import pytest
import torch

from losses.idft import idft_loss
from losses.sft import sft_loss
from losses.truncated_is import sampler_token_logprobs, truncated_importance_weights

MASK = torch.tensor([[False, True, True, True], [False, False, True, False]])


def test_the_sampler_log_probs_land_on_the_response_positions_in_order():
    policy = torch.full((2, 4), -1.0)
    sampler = sampler_token_logprobs([[-0.5, -2.0, -1.2], []], policy, MASK)
    assert sampler[0].tolist() == pytest.approx([-1.0, -0.5, -2.0, -1.2])
    assert sampler[1].tolist() == [-1.0] * 4  # no engine log-probs: the policy's own, ratio 1
    with pytest.raises(ValueError, match="2 engine log-probs for 1 response tokens"):
        sampler_token_logprobs([[], [-0.1, -0.2]], policy, MASK)


def test_weights_are_the_ratio_truncated_at_the_cap_and_zero_off_the_mask():
    policy = torch.tensor([[0.0, -1.0, -1.0, -1.0], [0.0, 0.0, -0.2, 0.0]])
    sampler = torch.tensor([[0.0, -0.5, -2.0, -1.0], [0.0, 0.0, -1.0, 0.0]])
    weights, metrics = truncated_importance_weights(policy, sampler, MASK, cap=2.0)
    ratios = [math.exp(-0.5), math.exp(1.0), 1.0, math.exp(0.8)]
    assert weights[0, 1:].tolist() == pytest.approx([ratios[0], 2.0, 1.0])
    assert weights[1, 2].item() == pytest.approx(2.0)
    assert weights[~MASK].abs().sum() == 0
    assert metrics["is_weight_mean"].item() == pytest.approx(sum(ratios) / 4)
    assert metrics["is_truncated_fraction"].item() == pytest.approx(0.5)


def test_the_token_losses_take_the_weights_and_ratio_one_changes_nothing():
    torch.manual_seed(0)
    logprobs = (-torch.rand(2, 4) * 3).requires_grad_()
    weights = torch.tensor([[0.0, 0.5, 2.0, 1.0], [0.0, 0.0, 1.5, 0.0]])
    plain, _ = sft_loss(logprobs, MASK)
    weighted, metrics = sft_loss(logprobs, MASK, weights)
    expected = -(weights * logprobs.detach())[MASK].sum() / MASK.sum()
    assert weighted.item() == pytest.approx(expected.item())
    assert metrics["nll"].item() == pytest.approx(plain.item())  # the logged NLL stays unweighted
    assert sft_loss(logprobs, MASK, torch.ones(2, 4))[0].item() == pytest.approx(plain.item())

    phi = torch.randn(2, 4)
    idft_plain, _ = idft_loss(logprobs, phi, MASK)
    idft_ones, _ = idft_loss(logprobs, phi, MASK, token_weights=torch.ones(2, 4))
    idft_weighted, idft_metrics = idft_loss(logprobs, phi, MASK, token_weights=weights)
    assert idft_ones.item() == pytest.approx(idft_plain.item())
    assert idft_weighted.item() != pytest.approx(idft_plain.item())
    (grad,) = torch.autograd.grad(idft_weighted, logprobs)
    assert grad[1, 2].item() < 0 and grad[0, 1].item() < 0 and grad[~MASK].abs().sum() == 0
