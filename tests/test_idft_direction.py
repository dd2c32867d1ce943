"""The direction of one IDFT step, on hand-sized examples (issue: IDFT lowered the reference CLL).

Pure torch, no model; the closed forms in float64. Checks, in order:
- losses.idft.idft_loss, fed by the repo's own shift/gather (losses/token_stats.py) and CLL
  (losses/cll.py), has the gradient w.r.t. the logits of the formula in docs/algorithms.md §2:
  d/dz[-w·log softmax(z)_y] = -w·(onehot(y) - softmax(z)) / N with w = sg(p_y^γ),
  γ = clip(exp(-φ/β), 0.1, 2), φ = log p_y + H of the SAME position;
- the checker rejects broken copies of the loss (sign flipped, weight not detached as in the
  authors' released trainer, φ taken from the neighbouring position, weight from the model's top
  token instead of the target), so it can fail;
- one SGD step raises log p of every target token, and how φ = log p + H moves on the same toy;
- the mechanism behind the real-model CLL drop: where the model's distribution is shared between a
  token it predicts well and a reference token it does not (in a real LM: shared parameters and
  similar contexts), IDFT's weight sits almost wholly on the predicted token, so a step (scaled to
  the same length as SFT's, as AdamW does) sharpens the distribution: H falls and the reference
  token's log p falls, so φ falls; SFT on the same tokens raises φ.
"""

from __future__ import annotations

import math

import pytest
import torch

from losses.cll import centered_log_likelihood
from losses.idft import idft_loss
from losses.sft import sft_loss
from losses.token_stats import response_token_stats

DT = torch.float64

# One sequence: a prompt token, then two response tokens. Position 0 scores token 1 (its
# logits make token 0 very likely: a confident, in-distribution target), position 1 scores
# token 2 (its logits make token 3 the favourite: the target is an unlikely, out-of-distribution
# token). Position 2 predicts beyond the sequence and must get no gradient.
LOGITS = [[0.2, 3.5, 0.1, -0.4, -1.0],
          [1.0, 0.3, -0.8, 2.2, 0.0],
          [0.5, -0.5, 0.0, 1.0, -1.0]]
INPUT_IDS = [[4, 1, 2]]
RESPONSE_MASK = [[0, 1, 1]]


def toy():
    logits = torch.tensor([LOGITS], dtype=DT, requires_grad=True)
    return logits, torch.tensor(INPUT_IDS), torch.tensor(RESPONSE_MASK)


def repo_idft(logits, input_ids, response_mask):
    stats = response_token_stats(logits, input_ids, response_mask)
    loss, _ = idft_loss(stats.logprobs, centered_log_likelihood(stats), stats.mask)
    return loss


def repo_sft(logits, input_ids, response_mask):
    stats = response_token_stats(logits, input_ids, response_mask)
    return sft_loss(stats.logprobs, stats.mask)[0]


def closed_form_grad(logits: torch.Tensor, input_ids, response_mask, beta=1.0, gmin=0.1, gmax=2.0) -> torch.Tensor:
    """-w_t (onehot(y_t) - softmax(z_t)) / N at each scored position t, written out by hand."""
    z = logits.detach()[0]
    ids, mask = input_ids[0], response_mask[0]
    grad = torch.zeros_like(z)
    scored = [t for t in range(z.shape[0] - 1) if mask[t + 1]]
    for t in scored:
        y = int(ids[t + 1])
        probs = torch.softmax(z[t], -1)
        entropy = -(probs * probs.log()).sum()
        phi = probs[y].log() + entropy
        gamma = min(max(math.exp(-float(phi) / beta), gmin), gmax)
        w = float(probs[y]) ** gamma
        grad[t] = -w * (torch.nn.functional.one_hot(torch.tensor(y), z.shape[1]).to(DT) - probs) / len(scored)
    return grad[None]


def matches_formula(loss_fn) -> bool:
    logits, input_ids, mask = toy()
    (grad,) = torch.autograd.grad(loss_fn(logits, input_ids, mask), logits)
    # losses/token_stats.py computes in fp32 whatever the input dtype: fp32 tolerances; every broken copy
    # below is off by far more (a sign, a factor 1 + γ log p, another position's γ).
    return torch.allclose(grad, closed_form_grad(logits, input_ids, mask), atol=1e-7, rtol=1e-5)


# ---------------------------------------------------------------- broken copies (never the repo's code)

def _weights(logprobs, phi, mask, gamma_from=None, weight_from=None):
    gamma = torch.exp(-(phi if gamma_from is None else gamma_from)).clamp(0.1, 2.0)
    p = (logprobs if weight_from is None else weight_from).exp().clamp(1e-10, 1.0)
    return gamma, p


def flipped_sign(logits, input_ids, response_mask):
    stats = response_token_stats(logits, input_ids, response_mask)
    phi = centered_log_likelihood(stats)
    gamma, p = _weights(stats.logprobs.detach(), phi, stats.mask)
    return (p.pow(gamma) * stats.logprobs * stats.mask).sum() / stats.mask.sum()


def undetached_weight(logits, input_ids, response_mask):
    """The authors' released trainer: -(p ** gamma.detach()) * log p, gradient also through p^γ."""
    stats = response_token_stats(logits, input_ids, response_mask)
    phi = centered_log_likelihood(stats)
    gamma, _ = _weights(stats.logprobs.detach(), phi, stats.mask)
    p = stats.logprobs.exp().clamp(1e-10, 1.0)
    return (-(p ** gamma) * stats.logprobs * stats.mask).sum() / stats.mask.sum()


def phi_off_by_one(logits, input_ids, response_mask):
    stats = response_token_stats(logits, input_ids, response_mask)
    phi = torch.roll(centered_log_likelihood(stats), 1, dims=1)
    return idft_loss(stats.logprobs, phi, stats.mask)[0]


def weight_from_top_token(logits, input_ids, response_mask):
    stats = response_token_stats(logits, input_ids, response_mask)
    phi = centered_log_likelihood(stats)
    top = torch.log_softmax(logits[:, :-1].detach(), -1).max(-1).values
    gamma, p = _weights(stats.logprobs.detach(), phi, stats.mask, weight_from=top)
    return (-(p.pow(gamma)) * stats.logprobs * stats.mask).sum() / stats.mask.sum()


# ---------------------------------------------------------------- tests

def test_idft_gradient_matches_the_formula():
    assert matches_formula(repo_idft)


@pytest.mark.parametrize("broken", [flipped_sign, undetached_weight, phi_off_by_one, weight_from_top_token])
def test_the_formula_check_rejects_broken_losses(broken):
    assert not matches_formula(broken)


def test_toy_has_one_confident_and_one_unlikely_target():
    logits, input_ids, mask = toy()
    stats = response_token_stats(logits, input_ids, mask)
    phi = centered_log_likelihood(stats)[0]
    assert phi[0] > 0 > -1 > phi[1]  # in-distribution, then out-of-distribution


def sgd_step(loss_fn, lr):
    logits, input_ids, mask = toy()
    before = response_token_stats(logits, input_ids, mask)
    (grad,) = torch.autograd.grad(loss_fn(logits, input_ids, mask), logits)
    after = response_token_stats((logits - lr * grad).detach(), input_ids, mask)
    return before, after


def test_one_sgd_step_raises_the_log_prob_of_every_target():
    before, after = sgd_step(repo_idft, lr=0.5)
    assert bool((after.logprobs > before.logprobs.detach()).all())
    # the released trainer's un-detached weight turns the step round on the unlikely target
    # (d/dlogp of -p^γ log p is -p^γ (1 + γ log p) > 0 once log p < -1/γ): it pushes p -> 0
    before_u, after_u = sgd_step(undetached_weight, lr=0.5)
    assert after_u.logprobs[0, 0] > before_u.logprobs[0, 0].detach()
    assert after_u.logprobs[0, 1] < before_u.logprobs[0, 1].detach()


def test_cll_change_of_one_step_splits_into_log_p_and_entropy():
    before, after = sgd_step(repo_idft, lr=0.5)
    phi_b = centered_log_likelihood(before)[0]
    phi_a = centered_log_likelihood(after)[0]
    d_logp = (after.logprobs - before.logprobs.detach())[0]
    d_entropy = (after.entropy - before.entropy)[0]
    assert torch.allclose(phi_a - phi_b, d_logp + d_entropy)
    # Confident target: the step sharpens its distribution, H falls by more than log p rises.
    assert d_entropy[0] < 0 and phi_a[0] < phi_b[0]
    # Unlikely target: weight p^2 is tiny; log p barely moves next to what SFT does to it.
    before_s, after_s = sgd_step(repo_sft, lr=0.5)
    d_logp_sft = (after_s.logprobs - before_s.logprobs.detach())[0]
    assert d_logp[1] < 0.05 * d_logp_sft[1]


# A shared next-token distribution: the same logits z at two response positions (in a real LM,
# nearby contexts through shared parameters). The data continues once with the model's favourite
# (token 0) and once with a token it finds unlikely (token 3): the reference's own style.
SHARED_Z = [3.0, 1.0, 0.5, 0.0, -1.0]


def shared_step(loss_fn, lr=0.3):
    """One step of length lr along -grad (AdamW takes steps of about the same size whatever the scale)."""
    z = torch.tensor(SHARED_Z, dtype=DT, requires_grad=True)
    input_ids, mask = torch.tensor([[0, 0, 3]]), torch.tensor([[0, 1, 1]])

    def stats_of(v):
        return response_token_stats(torch.stack([v, v, torch.zeros_like(v)])[None], input_ids, mask)

    before = stats_of(z)
    (grad,) = torch.autograd.grad(loss_fn(torch.stack([z, z, torch.zeros_like(z)])[None], input_ids, mask), z)
    after = stats_of((z - lr * grad / grad.norm()).detach())
    return before, after


def test_idft_sharpens_a_shared_distribution_and_lowers_cll_where_sft_raises_it():
    before, after = shared_step(repo_idft)
    phi_b, phi_a = centered_log_likelihood(before)[0], centered_log_likelihood(after)[0]
    assert phi_b[0] > 0 > -1 > phi_b[1]
    assert bool((after.entropy < before.entropy).all())             # sharper
    assert after.logprobs[0, 0] > before.logprobs[0, 0]              # the favourite gains
    assert after.logprobs[0, 1] < before.logprobs[0, 1]              # the reference's unlikely token loses
    assert phi_a[1] < phi_b[1] and phi_a.mean() < phi_b.mean()       # CLL falls

    before_s, after_s = shared_step(repo_sft)
    phi_bs, phi_as = centered_log_likelihood(before_s)[0], centered_log_likelihood(after_s)[0]
    assert after_s.logprobs[0, 1] > before_s.logprobs[0, 1]
    assert phi_as.mean() > phi_bs.mean()                              # SFT: CLL rises


def test_without_the_tiny_weight_on_the_unlikely_token_cll_would_not_fall():
    """The mechanism is the weight: IDFT with γ fixed to 0 on the same toy is SFT and raises CLL."""
    def idft_gamma0(logits, input_ids, response_mask):
        stats = response_token_stats(logits, input_ids, response_mask)
        return idft_loss(stats.logprobs, centered_log_likelihood(stats), stats.mask, fixed_gamma=0.0)[0]

    before, after = shared_step(idft_gamma0)
    assert centered_log_likelihood(after).mean() > centered_log_likelihood(before).mean()
