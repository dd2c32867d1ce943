"""Tests for the pure-math losses: token stats, CLL, IDFT, SFT."""

from __future__ import annotations

import math

import pytest
import torch

from losses.cll import centered_log_likelihood, sequence_cll
from losses.idft import idft_lambda, idft_loss
from losses.sft import sft_loss
from losses.token_stats import TokenStats, response_token_stats


def _log_softmax_row(row: list[float]) -> list[float]:
    m = max(row)
    log_z = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - log_z for x in row]


def _batch():
    """B=3, L=6, V=7 with prompt, response and right padding."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 7, generator=g) * 3.0
    input_ids = torch.randint(0, 7, (3, 6), generator=g)
    response_mask = torch.tensor(
        [
            [0, 0, 1, 1, 1, 1],  # 2 prompt tokens, 4 response tokens
            [0, 1, 1, 1, 0, 0],  # 1 prompt token, 3 response, 2 padding
            [0, 0, 0, 0, 0, 0],  # no response at all
        ]
    )
    return logits, input_ids, response_mask


# --------------------------------------------------------------------------- token stats


def test_token_stats_matches_python_loop():
    logits, input_ids, response_mask = _batch()
    stats = response_token_stats(logits, input_ids, response_mask)
    B, L, _ = logits.shape
    assert stats.logprobs.shape == stats.entropy.shape == stats.mask.shape == (B, L - 1)
    assert stats.mask.dtype == torch.bool
    for b in range(B):
        for t in range(L - 1):
            logp = _log_softmax_row(logits[b, t].tolist())
            target = int(input_ids[b, t + 1])
            assert stats.logprobs[b, t].item() == pytest.approx(logp[target], abs=1e-5)
            h = -sum(math.exp(lp) * lp for lp in logp)
            assert stats.entropy[b, t].item() == pytest.approx(h, abs=1e-5)
            assert bool(stats.mask[b, t]) == bool(response_mask[b, t + 1])


def test_token_stats_shift_is_next_token():
    # Each position puts all its mass on the *next* input token, so correctly
    # shifted log-probs are ~0 and any off-by-one gives ~-30.
    # Consecutive tokens differ, so a misaligned gather cannot pass by luck.
    _, _, response_mask = _batch()
    input_ids = torch.tensor([[0, 1, 2, 3, 4, 5], [6, 5, 4, 3, 2, 1], [1, 3, 5, 0, 2, 4]])
    B, L = input_ids.shape
    logits = torch.zeros(B, L, 7)
    for b in range(B):
        for t in range(L - 1):
            logits[b, t, input_ids[b, t + 1]] = 30.0
    stats = response_token_stats(logits, input_ids, response_mask)
    assert torch.all(stats.logprobs > -1e-6)
    assert torch.equal(stats.mask, response_mask[:, 1:].bool())
    # The first response token of row 0 is input_ids[0, 2]; it is scored at t=1.
    assert stats.mask[0].tolist() == [False, True, True, True, True]


def test_token_stats_dtype_and_grad():
    logits, input_ids, response_mask = _batch()
    logits = logits.to(torch.bfloat16).requires_grad_(True)
    stats = response_token_stats(logits, input_ids, response_mask.bool())
    assert stats.logprobs.dtype == torch.float32
    assert stats.entropy.dtype == torch.float32
    assert stats.logprobs.requires_grad
    assert not stats.entropy.requires_grad
    stats.logprobs.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad.float()).all()


# --------------------------------------------------------------------------- CLL


def test_cll_hand_values():
    # p = [0.25, 0.75]: H = -(0.25 ln 0.25 + 0.75 ln 0.75)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    logprobs = torch.tensor([[math.log(0.25), math.log(0.75), math.log(0.75)]], requires_grad=True)
    entropy = torch.full((1, 3), h)
    mask = torch.tensor([[True, True, False]])
    phi = centered_log_likelihood(TokenStats(logprobs, entropy, mask))
    assert not phi.requires_grad
    expected = [math.log(0.25) + h, math.log(0.75) + h, 0.0]
    assert phi[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_cll_from_logits():
    # End to end: a 2-token vocabulary with logits [0, ln 3] gives p = [0.25, 0.75].
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])
    input_ids = torch.tensor([[1, 0]])
    stats = response_token_stats(logits, input_ids, torch.tensor([[0, 1]]))
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    phi = centered_log_likelihood(stats)
    assert phi.item() == pytest.approx(math.log(0.25) + h, abs=1e-6)


def test_sequence_cll_hand_values():
    phi = torch.tensor(
        [
            [-0.5, -2.0, -4.0, -6.0, 99.0],  # last token masked
            [0.0, 0.0, 0.0, 0.0, 0.0],  # no valid tokens
            [-1.0, -3.0, -5.0, 0.5, 0.0],  # thresholds are strict
        ]
    )
    mask = torch.tensor(
        [
            [True, True, True, True, False],
            [False, False, False, False, False],
            [True, True, True, True, False],
        ]
    )
    out = sequence_cll(phi, mask)
    assert set(out) == {"avg_cll", "frac_gt_1", "frac_gt_3", "frac_gt_5", "num_tokens"}
    for v in out.values():
        assert v.shape == (3,)
    assert out["avg_cll"].tolist() == pytest.approx([-3.125, 0.0, -2.125])
    assert out["frac_gt_1"].tolist() == pytest.approx([0.25, 0.0, 0.25])
    assert out["frac_gt_3"].tolist() == pytest.approx([0.5, 0.0, 0.5])
    assert out["frac_gt_5"].tolist() == pytest.approx([0.75, 0.0, 0.75])
    assert out["num_tokens"].tolist() == [4.0, 0.0, 4.0]


def _phi_of_samples(sample_from_model: bool) -> torch.Tensor:
    """phi for N tokens, each drawn from its own random categorical."""
    g = torch.Generator().manual_seed(1)
    n, v = 20000, 32
    logits = torch.randn(n, 2, v, generator=g) * 2.0
    if sample_from_model:
        sampling_logits = logits[:, 0]
    else:
        sampling_logits = torch.randn(n, v, generator=g) * 2.0
    tokens = torch.multinomial(torch.softmax(sampling_logits, -1), 1, generator=g).squeeze(-1)
    input_ids = torch.stack([torch.zeros_like(tokens), tokens], dim=1)
    stats = response_token_stats(logits, input_ids, torch.tensor([[0, 1]]).expand(n, 2))
    return centered_log_likelihood(stats)[:, 0]


def test_cll_is_centred_on_own_samples():
    phi = _phi_of_samples(sample_from_model=True)
    se = phi.std().item() / math.sqrt(phi.numel())
    assert abs(phi.mean().item()) < 4.0 * se


def test_cll_is_negative_off_distribution():
    phi = _phi_of_samples(sample_from_model=False)
    se = phi.std().item() / math.sqrt(phi.numel())
    # E_q[phi] = H(p) - H(q) - KL(q||p): for independent random p, q it is the
    # KL term that remains, and it is large compared with the noise.
    assert phi.mean().item() < -20.0 * se
    assert phi.mean().item() < -0.5


# --------------------------------------------------------------------------- IDFT


_P = [0.5, 0.9, 0.01, 0.3, 0.7, 0.2]
_PHI = [0.2, 3.0, -3.0, -0.5, 0.0, 7.0]
_MASK = [True, True, True, True, False, True]


def _idft_inputs():
    logprobs = torch.tensor([_P[:3], _P[3:]]).log().requires_grad_(True)
    phi = torch.tensor([_PHI[:3], _PHI[3:]])
    mask = torch.tensor([_MASK[:3], _MASK[3:]])
    return logprobs, phi, mask


def _idft_expected(beta, gamma_min, gamma_max, lam):
    losses, gammas, weights = [], [], []
    for p, phi, m in zip(_P, _PHI, _MASK):
        if not m:
            continue
        g_raw = min(max(math.exp(-phi / beta), gamma_min), gamma_max)
        g = 1.0 + lam * (g_raw - 1.0)
        w = min(max(p, 1e-10), 1.0) ** g
        gammas.append(g)
        weights.append(w)
        losses.append(-w * math.log(p))
    n = len(losses)
    return sum(losses) / n, sum(gammas) / n, sum(weights) / n


@pytest.mark.parametrize(
    "beta,gamma_min,gamma_max,lam",
    [(1.0, 0.1, 2.0, 1.0), (2.0, 0.1, 2.0, 1.0), (1.0, 0.3, 1.5, 0.5)],
)
def test_idft_matches_formula(beta, gamma_min, gamma_max, lam):
    logprobs, phi, mask = _idft_inputs()
    loss, metrics = idft_loss(
        logprobs, phi, mask, beta=beta, gamma_min=gamma_min, gamma_max=gamma_max, lam=lam
    )
    exp_loss, exp_gamma, exp_weight = _idft_expected(beta, gamma_min, gamma_max, lam)
    assert loss.item() == pytest.approx(exp_loss, rel=1e-5)
    assert metrics["gamma_mean"].item() == pytest.approx(exp_gamma, rel=1e-5)
    assert metrics["weight_mean"].item() == pytest.approx(exp_weight, rel=1e-5)
    valid = [p for p, m in zip(_P, _MASK) if m]
    assert metrics["nll"].item() == pytest.approx(-sum(map(math.log, valid)) / len(valid), rel=1e-5)
    assert metrics["num_tokens"].item() == 5.0
    for v in metrics.values():
        assert v.dim() == 0 and not v.requires_grad


def test_idft_gradient_only_through_logp():
    logprobs, phi, mask = _idft_inputs()
    phi.requires_grad_(True)
    loss, _ = idft_loss(logprobs, phi, mask)
    loss.backward()
    assert phi.grad is None
    grad = logprobs.grad.flatten().tolist()
    n = sum(_MASK)
    for p, ph, m, gr in zip(_P, _PHI, _MASK, grad):
        if not m:
            assert gr == 0.0
            continue
        g = min(max(math.exp(-ph), 0.1), 2.0)
        # A non-detached weight would add -p^g * g * log p / n to this.
        assert gr == pytest.approx(-(p**g) / n, rel=1e-5)


def test_idft_fixed_gamma_zero_is_sft():
    logprobs, phi, mask = _idft_inputs()
    loss, metrics = idft_loss(logprobs, phi, mask, fixed_gamma=0.0)
    sft, sft_metrics = sft_loss(logprobs, mask)
    valid = [p for p, m in zip(_P, _MASK) if m]
    nll = -sum(map(math.log, valid)) / len(valid)
    assert loss.item() == pytest.approx(nll, rel=1e-6)
    assert sft.item() == pytest.approx(nll, rel=1e-6)
    assert metrics["weight_mean"].item() == pytest.approx(1.0)
    assert sft_metrics["nll"].item() == pytest.approx(nll, rel=1e-6)
    assert sft_metrics["num_tokens"].item() == 5.0


def test_idft_lam_zero_is_dft_not_sft():
    # gamma = 1 + 0 * (gamma_raw - 1) = 1: lambda = 0 switches the
    # phi-dependence off and leaves DFT's sg(p) weighting, as in the authors'
    # trainer; it is not plain SFT.
    logprobs, phi, mask = _idft_inputs()
    loss, metrics = idft_loss(logprobs, phi, mask, lam=0.0)
    dft, _ = idft_loss(logprobs, phi, mask, fixed_gamma=1.0)
    sft, _ = sft_loss(logprobs, mask)
    assert loss.item() == pytest.approx(dft.item(), rel=1e-6)
    assert metrics["gamma_mean"].item() == pytest.approx(1.0)
    assert loss.item() < sft.item() - 0.1


def test_idft_gamma_clipping():
    logprobs = torch.tensor([[-0.5, -1.0, -2.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    # exp(-phi) = e^10 and e^-10: far outside [gamma_min, gamma_max].
    _, lo = idft_loss(logprobs, torch.full((1, 3), -10.0), mask, gamma_min=0.1, gamma_max=2.0)
    _, hi = idft_loss(logprobs, torch.full((1, 3), 10.0), mask, gamma_min=0.1, gamma_max=2.0)
    assert lo["gamma_mean"].item() == pytest.approx(2.0)
    assert hi["gamma_mean"].item() == pytest.approx(0.1)
    p = torch.tensor([-0.5, -1.0, -2.0]).exp()
    assert lo["weight_mean"].item() == pytest.approx((p**2.0).mean().item(), rel=1e-6)
    assert hi["weight_mean"].item() == pytest.approx((p**0.1).mean().item(), rel=1e-6)


def test_losses_ignore_masked_nonfinite_and_empty():
    logprobs = torch.tensor([[-1.0, float("-inf")]], requires_grad=True)
    phi = torch.tensor([[0.0, float("nan")]])
    mask = torch.tensor([[True, False]])
    loss, metrics = idft_loss(logprobs, phi, mask)
    assert loss.item() == pytest.approx(math.exp(-1.0) ** 1.0 * 1.0, rel=1e-6)
    assert all(torch.isfinite(v) for v in metrics.values())
    sft, _ = sft_loss(logprobs, mask)
    assert sft.item() == pytest.approx(1.0)
    empty = torch.zeros_like(mask)
    assert idft_loss(logprobs, phi, empty)[0].item() == 0.0
    assert sft_loss(logprobs, empty)[0].item() == 0.0


@pytest.mark.parametrize(
    "progress,warmup,transition,expected",
    [
        (0.0, 0.0, 0.0, 1.0),
        (0.5, 0.0, 0.0, 1.0),
        (1.0, 0.0, 0.0, 1.0),
        (0.0, 0.2, 0.1, 0.0),
        (0.19, 0.2, 0.1, 0.0),
        (0.2, 0.2, 0.1, 0.0),
        (0.25, 0.2, 0.1, 0.5),
        (0.3, 0.2, 0.1, 1.0),
        (0.9, 0.2, 0.1, 1.0),
        (0.1, 0.2, 0.0, 0.0),
        (0.2, 0.2, 0.0, 1.0),
        (0.05, 0.0, 0.2, 0.25),
    ],
)
def test_idft_lambda_schedule(progress, warmup, transition, expected):
    assert idft_lambda(progress, warmup, transition) == pytest.approx(expected)
