"""Tests for the preference losses: DPO (sigmoid, cDPO, robust), IPO, SimPO, RPO.

Oracles:

- TRL 1.16 (test-only dependency) for DPO sigmoid, robust DPO, cDPO and IPO:
  ``trl.trainer.dpo_trainer.DPOTrainer._compute_loss`` run unbound on a minimal
  stand-in trainer (``_trl_dpo`` below). Its model is a stub that returns the
  per-token log-probs whose sums are our summed log-probs, and the reference
  log-probs go in as precomputed ``ref_chosen_logps`` / ``ref_rejected_logps``,
  so all loss and reward numbers come from TRL's own code: the ``loss_type``
  branches "sigmoid", "robust", "ipo", "aot" and "sft", and the
  "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"
  metrics it logs. TRL logs only batch means, so per-pair values come from
  running TRL on one pair at a time.
- cDPO: TRL 1.16's "sigmoid" branch ignores ``label_smoothing`` (it is used
  only by "robust", "exo_pair" and "aot*"). The only DPOTrainer code computing
  -(1-eps) log sig(beta Delta) - eps log sig(-beta Delta) is the "aot" branch,
  which sorts the policy and reference log-ratios over the batch; on a batch of
  one pair the sort is the identity and "aot" is exactly cDPO, so cDPO is
  checked against "aot" pair by pair (plus a plain-``math`` check).
- SimPO: hand-computed values with ``math``; also TRL's
  ``trl.experimental.cpo.CPOTrainer.cpo_loss`` with loss_type="simpo" (fed the
  length-averaged log-probs, as CPOTrainer does for SimPO).
- RPO: TRL 1.16 has no cumulative (beta * summed log-prob) SFT term, so both
  forms are checked against hand-computed values. The average form is also
  checked against TRL's loss_type=["sigmoid", "sft"] with equal chosen lengths
  (TRL's "sft" is a token mean over the whole batch, which equals our mean of
  per-sequence means only when the chosen lengths are equal).
"""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from losses.dpo import dpo_loss
from losses.implicit_rewards import implicit_reward_metrics
from losses.ipo import ipo_loss
from losses.rpo import rpo_loss
from losses.simpo import simpo_loss

TOL = dict(rtol=1e-6, atol=1e-6)
REWARD_KEYS = {"chosen_rewards", "rejected_rewards", "reward_accuracy", "reward_margin"}


def _random_pairs(n: int = 5, seed: int = 0):
    """Summed log-probs of n pairs, token counts, and policy/reference close enough
    that beta * Delta stays in the non-saturated range of the sigmoid."""
    g = torch.Generator().manual_seed(seed)
    ref_c = -torch.rand(n, generator=g) * 40.0 - 5.0
    ref_r = -torch.rand(n, generator=g) * 40.0 - 5.0
    pol_c = ref_c + torch.randn(n, generator=g) * 4.0
    pol_r = ref_r + torch.randn(n, generator=g) * 4.0
    n_c = torch.randint(1, 30, (n,), generator=g)
    n_r = torch.randint(1, 30, (n,), generator=g)
    return pol_c, pol_r, ref_c, ref_r, n_c, n_r


# --------------------------------------------------------------------------- TRL harness


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather


def _trl_dpo(loss_types, pol_c, pol_r, ref_c, ref_r, n_c=None, n_r=None, *, beta, label_smoothing=0.0, weights=None):
    """Loss and logged metrics of TRL 1.16 ``DPOTrainer._compute_loss`` on these pairs.

    The stub model returns per-token log-probs [2B, T-1] (batch laid out as
    [chosen, rejected], as TRL's collator does) whose only non-zero entry per row
    is the summed log-prob at the first completion token; position 0 is a prompt
    token, so TRL's ``completion_mask`` counts exactly n_c / n_r tokens.
    """
    dpo_trainer = pytest.importorskip("trl.trainer.dpo_trainer")
    b = pol_c.shape[0]
    n_c = torch.ones(b, dtype=torch.long) if n_c is None else n_c
    n_r = torch.ones(b, dtype=torch.long) if n_r is None else n_r
    counts = torch.cat([n_c, n_r]).long()
    t = 1 + int(counts.max())
    completion_mask = (torch.arange(t).unsqueeze(0) >= 1) & (torch.arange(t).unsqueeze(0) <= counts.unsqueeze(1))
    completion_mask = completion_mask.long()
    summed = torch.cat([pol_c, pol_r]).unsqueeze(1)
    log_probs = torch.cat([summed, torch.zeros(2 * b, t - 2)], dim=1)  # [2B, T-1]

    def model(**kwargs):
        zeros = torch.zeros(2 * b, t - 1)
        return SimpleNamespace(log_probs=log_probs, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    loss_types = [loss_types] if isinstance(loss_types, str) else list(loss_types)
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=loss_types,
        loss_weights=weights or [1.0] * len(loss_types),
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
        args=SimpleNamespace(),
    )
    inputs = {
        "input_ids": torch.zeros(2 * b, t, dtype=torch.long),
        "attention_mask": torch.ones(2 * b, t, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_c,
        "ref_rejected_logps": ref_r,
    }
    loss = dpo_trainer.DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss, logged


def _trl_per_pair(loss_types, pol_c, pol_r, ref_c, ref_r, n_c=None, n_r=None, **kw):
    """TRL run on each pair alone: per-pair loss, chosen reward, rejected reward."""
    losses, chosen, rejected = [], [], []
    for i in range(pol_c.shape[0]):
        sl = slice(i, i + 1)
        loss, logged = _trl_dpo(
            loss_types,
            pol_c[sl],
            pol_r[sl],
            ref_c[sl],
            ref_r[sl],
            None if n_c is None else n_c[sl],
            None if n_r is None else n_r[sl],
            **kw,
        )
        losses.append(float(loss))
        chosen.append(logged["rewards/chosen"])
        rejected.append(logged["rewards/rejected"])
    return torch.tensor(losses), torch.tensor(chosen), torch.tensor(rejected)


def _check_against_trl(ours, metrics, trl_loss_type, pairs, *, use_counts=False, **trl_kw):
    pol_c, pol_r, ref_c, ref_r, n_c, n_r = pairs
    counts = (n_c, n_r) if use_counts else (None, None)
    trl_loss, logged = _trl_dpo(trl_loss_type, pol_c, pol_r, ref_c, ref_r, *counts, **trl_kw)
    torch.testing.assert_close(ours, trl_loss.float(), **TOL)
    assert metrics["reward_accuracy"].item() == pytest.approx(logged["rewards/accuracies"], abs=1e-6)
    assert metrics["reward_margin"].item() == pytest.approx(logged["rewards/margins"], abs=1e-6)
    per_pair, chosen, rejected = _trl_per_pair(trl_loss_type, pol_c, pol_r, ref_c, ref_r, *counts, **trl_kw)
    torch.testing.assert_close(metrics["per_pair_loss"], per_pair, **TOL)
    torch.testing.assert_close(metrics["chosen_rewards"], chosen, **TOL)
    torch.testing.assert_close(metrics["rejected_rewards"], rejected, **TOL)


# --------------------------------------------------------------------------- DPO family vs TRL


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_sigmoid_matches_trl(beta):
    pairs = _random_pairs(seed=1)
    loss, metrics = dpo_loss(*pairs[:4], beta=beta)
    _check_against_trl(loss, metrics, "sigmoid", pairs, beta=beta)
    # The batch must not be trivially all-correct or all-wrong.
    assert 0.0 < metrics["reward_accuracy"].item() < 1.0


def test_dpo_gradient_matches_trl():
    pol_c, pol_r, ref_c, ref_r, _, _ = _random_pairs(seed=2)
    ours_c, ours_r = pol_c.clone().requires_grad_(), pol_r.clone().requires_grad_()
    dpo_loss(ours_c, ours_r, ref_c, ref_r, beta=0.3)[0].backward()
    trl_c, trl_r = pol_c.clone().requires_grad_(), pol_r.clone().requires_grad_()
    _trl_dpo("sigmoid", trl_c, trl_r, ref_c, ref_r, beta=0.3)[0].backward()
    torch.testing.assert_close(ours_c.grad, trl_c.grad, **TOL)
    torch.testing.assert_close(ours_r.grad, trl_r.grad, **TOL)


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_robust_dpo_matches_trl(eps):
    pairs = _random_pairs(seed=3)
    loss, metrics = dpo_loss(*pairs[:4], beta=0.2, label_smoothing=eps, robust=True)
    _check_against_trl(loss, metrics, "robust", pairs, beta=0.2, label_smoothing=eps)


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_cdpo_matches_trl_aot_on_single_pairs(eps):
    pol_c, pol_r, ref_c, ref_r, _, _ = pairs = _random_pairs(seed=4)
    loss, metrics = dpo_loss(*pairs[:4], beta=0.2, label_smoothing=eps)
    per_pair, chosen, rejected = _trl_per_pair("aot", *pairs[:4], beta=0.2, label_smoothing=eps)
    torch.testing.assert_close(metrics["per_pair_loss"], per_pair, **TOL)
    torch.testing.assert_close(loss, per_pair.mean(), **TOL)
    torch.testing.assert_close(metrics["chosen_rewards"], chosen, **TOL)
    torch.testing.assert_close(metrics["rejected_rewards"], rejected, **TOL)
    # And the formula itself, in plain math, so the oracle is not only "aot".
    for i in range(pol_c.shape[0]):
        z = 0.2 * ((float(pol_c[i]) - float(ref_c[i])) - (float(pol_r[i]) - float(ref_r[i])))
        expected = (1 - eps) * math.log1p(math.exp(-z)) + eps * math.log1p(math.exp(z))
        assert metrics["per_pair_loss"][i].item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_ipo_matches_trl(beta):
    pairs = _random_pairs(seed=5)
    loss, metrics = ipo_loss(*pairs, beta=beta)
    _check_against_trl(loss, metrics, "ipo", pairs, use_counts=True, beta=beta)


def test_ipo_uses_token_averaged_log_ratios():
    # Delta_avg = (-4 - -6)/2 - (-9 - -6)/3 = 1 + 1 = 2; beta = 0.25 -> target 2.
    one = torch.tensor
    loss, _ = ipo_loss(one([-4.0]), one([-9.0]), one([-6.0]), one([-6.0]), one([2]), one([3]), beta=0.25)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    loss, metrics = ipo_loss(one([-4.0]), one([-9.0]), one([-6.0]), one([-6.0]), one([2]), one([3]), beta=0.5)
    assert loss.item() == pytest.approx((2.0 - 1.0) ** 2)
    # Rewards on the summed log-ratios (what TRL logs): 0.5 * 2 and 0.5 * -3.
    assert metrics["chosen_rewards"].tolist() == pytest.approx([1.0])
    assert metrics["rejected_rewards"].tolist() == pytest.approx([-1.5])


# --------------------------------------------------------------------------- DPO properties


def test_dpo_gradient_direction():
    pol_c, pol_r, ref_c, ref_r, _, _ = _random_pairs(seed=6)
    pol_c.requires_grad_()
    pol_r.requires_grad_()
    for kw in ({}, {"label_smoothing": 0.1}, {"label_smoothing": 0.1, "robust": True}):
        pol_c.grad = pol_r.grad = None
        dpo_loss(pol_c, pol_r, ref_c, ref_r, beta=0.1, **kw)[0].backward()
        assert (pol_c.grad < 0).all(), kw
        assert (pol_r.grad > 0).all(), kw
    # Increasing a chosen log-prob lowers the loss.
    with torch.no_grad():
        base = dpo_loss(pol_c, pol_r, ref_c, ref_r)[0]
        up = dpo_loss(pol_c + 1.0, pol_r, ref_c, ref_r)[0]
    assert up < base


def test_dpo_hand_values_and_reference_is_constant():
    # Delta = (-10 - -12) - (-20 - -15) = 7 -> beta * Delta = 0.7; second pair Delta = 0.
    pol_c = torch.tensor([-10.0, -5.0], requires_grad=True)
    pol_r = torch.tensor([-20.0, -8.0])
    ref_c = torch.tensor([-12.0, -5.0], requires_grad=True)
    ref_r = torch.tensor([-15.0, -8.0])
    loss, metrics = dpo_loss(pol_c, pol_r, ref_c, ref_r, beta=0.1)
    expected = [math.log1p(math.exp(-0.7)), math.log(2.0)]  # 0.403186, 0.693147
    assert metrics["per_pair_loss"].tolist() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(sum(expected) / 2, abs=1e-6)
    loss.backward()
    assert ref_c.grad is None
    assert not metrics["per_pair_loss"].requires_grad


def test_label_smoothing_zero_and_robust_eps_zero_equal_sigmoid():
    pairs = _random_pairs(seed=7)[:4]
    plain, m_plain = dpo_loss(*pairs, beta=0.3)
    for kw in ({"label_smoothing": 0.0}, {"label_smoothing": 0.0, "robust": True}):
        loss, metrics = dpo_loss(*pairs, beta=0.3, **kw)
        torch.testing.assert_close(loss, plain, rtol=0, atol=0)
        torch.testing.assert_close(metrics["per_pair_loss"], m_plain["per_pair_loss"], rtol=0, atol=0)
    pol_c, pol_r, ref_c, ref_r = pairs
    for i in range(pol_c.shape[0]):
        z = 0.3 * ((float(pol_c[i]) - float(ref_c[i])) - (float(pol_r[i]) - float(ref_r[i])))
        assert m_plain["per_pair_loss"][i].item() == pytest.approx(math.log1p(math.exp(-z)), abs=1e-5)


def test_robust_hand_value_and_invalid_eps():
    # Delta = 0 -> both terms are log 2: [(0.8 - 0.2) log 2] / 0.6 = log 2.
    z = torch.zeros(1)
    loss, _ = dpo_loss(z, z, z, z, label_smoothing=0.2, robust=True)
    assert loss.item() == pytest.approx(math.log(2.0))
    # beta * Delta = 1: [(0.8)(log(1+e^-1)) - 0.2 log(1+e)] / 0.6
    loss, _ = dpo_loss(torch.tensor([10.0]), z, z, z, beta=0.1, label_smoothing=0.2, robust=True)
    expected = (0.8 * math.log1p(math.exp(-1.0)) - 0.2 * math.log1p(math.exp(1.0))) / 0.6
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError):
        dpo_loss(z, z, z, z, label_smoothing=0.5, robust=True)
    with pytest.raises(ValueError):
        dpo_loss(z, z, z, z, label_smoothing=-0.1)


def test_implicit_reward_metrics_hand_case():
    chosen = torch.tensor([1.0, 0.5, -2.0, 3.0], requires_grad=True)
    rejected = torch.tensor([0.0, 0.5, -1.0, 1.0])
    m = implicit_reward_metrics(chosen, rejected)
    # chosen > rejected on pairs 0 and 3 (the tie counts as wrong).
    assert m["reward_accuracy"].item() == pytest.approx(0.5)
    # margins 1, 0, -1, 2 -> mean 0.5.
    assert m["reward_margin"].item() == pytest.approx(0.5)
    assert m["reward_accuracy"].dim() == 0 and m["reward_margin"].dim() == 0
    assert not any(v.requires_grad for v in m.values())
    assert m["chosen_rewards"].tolist() == [1.0, 0.5, -2.0, 3.0]


def test_dpo_reward_metrics_hand_case():
    # Log-ratios chosen (2, 0, -1), rejected (-5, 1, -1); beta = 0.5.
    zero = torch.zeros(3)
    _, m = dpo_loss(torch.tensor([2.0, 0.0, -1.0]), torch.tensor([-5.0, 1.0, -1.0]), zero, zero, beta=0.5)
    assert m["chosen_rewards"].tolist() == pytest.approx([1.0, 0.0, -0.5])
    assert m["rejected_rewards"].tolist() == pytest.approx([-2.5, 0.5, -0.5])
    assert m["reward_accuracy"].item() == pytest.approx(1 / 3)
    assert m["reward_margin"].item() == pytest.approx((3.5 - 0.5 + 0.0) / 3)


# --------------------------------------------------------------------------- SimPO


def _simpo_pairs():
    # avg log-probs: chosen (-1, -2, -1.25), rejected (-2, -1, -1.25).
    return (
        torch.tensor([-4.0, -10.0, -2.5]),
        torch.tensor([-6.0, -3.0, -5.0]),
        torch.tensor([4, 5, 2]),
        torch.tensor([3, 3, 4]),
    )


def test_simpo_hand_values():
    loss, metrics = simpo_loss(*_simpo_pairs(), beta=2.0, gamma=0.5)
    # z = 2*avg_w - 2*avg_l - 0.5 = 1.5, -2.5, -0.5; loss = log(1 + exp(-z)).
    expected = [math.log1p(math.exp(-1.5)), math.log1p(math.exp(2.5)), math.log1p(math.exp(0.5))]
    assert expected == pytest.approx([0.2014133, 2.5788897, 0.9740770], abs=1e-6)
    assert metrics["per_pair_loss"].tolist() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(sum(expected) / 3, abs=1e-6)
    assert metrics["chosen_rewards"].tolist() == pytest.approx([-2.0, -4.0, -2.5])
    assert metrics["rejected_rewards"].tolist() == pytest.approx([-4.0, -2.0, -2.5])
    # Margins 2, -2, 0 (the tie is not "accurate").
    assert metrics["reward_accuracy"].item() == pytest.approx(1 / 3)
    assert metrics["reward_margin"].item() == pytest.approx(0.0, abs=1e-6)


def test_simpo_matches_trl_cpo():
    cpo = pytest.importorskip("trl.experimental.cpo.cpo_trainer")
    pol_c, pol_r, _, _, n_c, n_r = _random_pairs(seed=8)
    loss, metrics = simpo_loss(pol_c, pol_r, n_c, n_r, beta=2.5, gamma=1.0)
    stand_in = SimpleNamespace(
        alpha=0.0, loss_type="simpo", simpo_gamma=1.0, beta=2.5, label_smoothing=0.0, accelerator=_Accelerator()
    )
    losses, chosen, rejected = cpo.CPOTrainer.cpo_loss(stand_in, pol_c / n_c, pol_r / n_r)
    torch.testing.assert_close(metrics["per_pair_loss"], losses, **TOL)
    torch.testing.assert_close(loss, losses.mean(), **TOL)
    torch.testing.assert_close(metrics["chosen_rewards"], chosen, **TOL)
    torch.testing.assert_close(metrics["rejected_rewards"], rejected, **TOL)


def test_simpo_gamma_zero_equal_lengths():
    pol_c = torch.tensor([-12.0, -3.0], requires_grad=True)
    pol_r = torch.tensor([-6.0, -9.0], requires_grad=True)
    n = torch.tensor([6, 6])
    loss, metrics = simpo_loss(pol_c, pol_r, n, n, beta=2.0, gamma=0.0)
    # z = 2/6 * (pol_c - pol_r) = -2, +2.
    expected = [math.log1p(math.exp(2.0)), math.log1p(math.exp(-2.0))]
    assert metrics["per_pair_loss"].tolist() == pytest.approx(expected, abs=1e-6)
    # Equal log-probs and gamma = 0 -> log 2.
    same = torch.tensor([-5.0])
    _, m = simpo_loss(same, same, torch.tensor([3]), torch.tensor([3]), gamma=0.0)
    assert m["per_pair_loss"].item() == pytest.approx(math.log(2.0))
    loss.backward()
    assert (pol_c.grad < 0).all() and (pol_r.grad > 0).all()


# --------------------------------------------------------------------------- RPO


def _rpo_pairs():
    # Log-ratios chosen (2, 0, -2), rejected (-5, 0, 1) -> Delta = 7, 0, -3.
    return (
        torch.tensor([-10.0, -5.0, -6.0]),
        torch.tensor([-20.0, -8.0, -3.0]),
        torch.tensor([-12.0, -5.0, -4.0]),
        torch.tensor([-15.0, -8.0, -4.0]),
        torch.tensor([5, 2, 3]),
    )


_RPO_DPO = [math.log1p(math.exp(-0.7)), math.log(2.0), math.log1p(math.exp(0.3))]  # 0.403186, 0.693147, 0.854355


def test_rpo_cumulative_hand_values():
    loss, m = rpo_loss(*_rpo_pairs(), beta=0.1, eta=0.5, form="cumulative")
    sft = [1.0, 0.5, 0.6]  # -beta * chosen summed log-prob
    per_pair = [d + 0.5 * s for d, s in zip(_RPO_DPO, sft)]  # 0.903186, 0.943147, 1.154355
    assert m["per_pair_loss"].tolist() == pytest.approx(per_pair, abs=1e-6)
    assert loss.item() == pytest.approx(sum(per_pair) / 3, abs=1e-6)
    assert m["dpo_loss"].item() == pytest.approx(sum(_RPO_DPO) / 3, abs=1e-6)
    assert m["sft_loss"].item() == pytest.approx(0.7, abs=1e-6)
    assert m["chosen_rewards"].tolist() == pytest.approx([0.2, 0.0, -0.2])
    assert m["rejected_rewards"].tolist() == pytest.approx([-0.5, 0.0, 0.1])
    assert m["reward_accuracy"].item() == pytest.approx(1 / 3)


def test_rpo_average_hand_values():
    loss, m = rpo_loss(*_rpo_pairs(), beta=0.1, eta=0.5, form="average")
    sft = [2.0, 2.5, 2.0]  # chosen per-token mean NLL: 10/5, 5/2, 6/3
    per_pair = [d + 0.5 * s for d, s in zip(_RPO_DPO, sft)]
    assert m["per_pair_loss"].tolist() == pytest.approx(per_pair, abs=1e-6)
    assert m["sft_loss"].item() == pytest.approx(6.5 / 3, abs=1e-6)
    assert loss.item() == pytest.approx(sum(_RPO_DPO) / 3 + 0.5 * 6.5 / 3, abs=1e-6)


def test_rpo_average_matches_trl_sigmoid_plus_sft_equal_lengths():
    pol_c, pol_r, ref_c, ref_r, _, n_r = _random_pairs(seed=9)
    n_c = torch.full_like(n_r, 7)
    loss, m = rpo_loss(pol_c, pol_r, ref_c, ref_r, n_c, beta=0.1, eta=0.2, form="average")
    trl_loss, logged = _trl_dpo(
        ["sigmoid", "sft"], pol_c, pol_r, ref_c, ref_r, n_c, n_r, beta=0.1, weights=[1.0, 0.2]
    )
    torch.testing.assert_close(loss, trl_loss.float(), **TOL)
    assert m["reward_margin"].item() == pytest.approx(logged["rewards/margins"], abs=1e-6)


def test_rpo_reuses_dpo_and_sft_gradient():
    pairs = _rpo_pairs()
    dpo, _ = dpo_loss(*pairs[:4], beta=0.1)
    loss0, m0 = rpo_loss(*pairs, beta=0.1, eta=0.0)
    torch.testing.assert_close(loss0, dpo, rtol=0, atol=0)
    assert m0["per_pair_loss"].mean().item() == pytest.approx(dpo.item())
    # The SFT term pushes the chosen log-prob up harder than DPO alone.
    for form in ("cumulative", "average"):
        pol_c = pairs[0].clone().requires_grad_()
        rpo_loss(pol_c, *pairs[1:], beta=0.1, eta=0.5, form=form)[0].backward()
        pol_c_dpo = pairs[0].clone().requires_grad_()
        dpo_loss(pol_c_dpo, *pairs[1:4], beta=0.1)[0].backward()
        assert (pol_c.grad < pol_c_dpo.grad).all(), form
    with pytest.raises(ValueError):
        rpo_loss(*pairs, form="sum")


# --------------------------------------------------------------------------- common contract


def _all_losses(dtype):
    pol_c, pol_r, ref_c, ref_r, n_c, n_r = (x.to(dtype) if x.is_floating_point() else x for x in _random_pairs())
    pol_c.requires_grad_()
    return pol_c, {
        "dpo": lambda: dpo_loss(pol_c, pol_r, ref_c, ref_r),
        "cdpo": lambda: dpo_loss(pol_c, pol_r, ref_c, ref_r, label_smoothing=0.1),
        "robust": lambda: dpo_loss(pol_c, pol_r, ref_c, ref_r, label_smoothing=0.1, robust=True),
        "ipo": lambda: ipo_loss(pol_c, pol_r, ref_c, ref_r, n_c, n_r.float()),
        "simpo": lambda: simpo_loss(pol_c, pol_r, n_c, n_r),
        "rpo_cum": lambda: rpo_loss(pol_c, pol_r, ref_c, ref_r, n_c),
        "rpo_avg": lambda: rpo_loss(pol_c, pol_r, ref_c, ref_r, n_c, form="average"),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_contract_shapes_dtypes_and_per_pair_mean(dtype):
    pol_c, fns = _all_losses(dtype)
    for name, fn in fns.items():
        loss, m = fn()
        assert loss.dim() == 0 and loss.dtype == torch.float32, name
        assert REWARD_KEYS <= m.keys(), name
        assert m["per_pair_loss"].shape == (5,) and not m["per_pair_loss"].requires_grad, name
        assert m["chosen_rewards"].shape == (5,) and m["chosen_rewards"].dtype == torch.float32, name
        torch.testing.assert_close(m["per_pair_loss"].mean(), loss.detach(), **TOL)
        if name.startswith("rpo"):
            assert m["dpo_loss"].dim() == 0 and m["sft_loss"].dim() == 0, name
        pol_c.grad = None
        loss.backward()
        assert pol_c.grad is not None and torch.isfinite(pol_c.grad.float()).all(), name
