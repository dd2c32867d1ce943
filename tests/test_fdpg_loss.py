"""f-DPG (losses/fdpg.py) against a naive computation written here from the paper's definitions:
f itself (not f′ in log space), its derivative taken by autograd at t = π/p, a Python loop over
samples, and Z as a plain mean of P/q over everything seen."""

from __future__ import annotations

import math

import pytest
import torch

from losses.fdpg import F_PRIME, MovingBaseline, RunningLogZ, fdpg_loss

# f(t) of D_f(π‖p) = E_p[f(π/p)], for t = π/p. The pseudo-reward is −f′(t).
F = {
    "kl": lambda t: -torch.log(t),
    "reverse_kl": lambda t: t * torch.log(t),
    "js": lambda t: t * torch.log(t) - (t + 1) * torch.log((t + 1) / 2),
    "tv": lambda t: (t - 1).abs() / 2,
    "chi2": lambda t: t + 1 / t,  # f′(t) = 1 − t⁻²: disco's chi2, docs/algorithms.md §7
    "reverse_chi2": lambda t: (t - 1) ** 2,
}


def naive_f_prime(divergence: str, t: float) -> float:
    t = torch.tensor(t, dtype=torch.float64, requires_grad=True)
    F[divergence](t).backward()
    return float(t.grad)


def naive_loss(policy, target_log_p, log_z, baseline, divergence, sampler=None):
    total = 0.0
    for i in range(len(policy)):
        t = math.exp(policy[i] - (target_log_p[i] - log_z))
        advantage = -naive_f_prime(divergence, t) - baseline
        importance = 1.0 if sampler is None else math.exp(policy[i] - sampler[i])
        total += importance * -advantage * policy[i]
    return total / len(policy)


@pytest.mark.parametrize("divergence", list(F_PRIME))
@pytest.mark.parametrize("off_policy", [False, True])
def test_loss_and_gradient_equal_the_naive_computation(divergence, off_policy):
    torch.manual_seed(0)
    policy = (torch.randn(6, dtype=torch.float64) - 5).requires_grad_()
    target = torch.randn(6, dtype=torch.float64) - 5
    sampler = policy.detach() + 0.3 * torch.randn(6, dtype=torch.float64) if off_policy else None
    log_z, baseline = -0.4, 0.15
    loss, metrics = fdpg_loss(policy, target, log_z, baseline, divergence=divergence, sampler_logps=sampler)
    expected = naive_loss(policy.tolist(), target.tolist(), log_z, baseline, divergence,
                          None if sampler is None else sampler.tolist())
    assert float(loss) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    loss.backward()
    # d loss / d log π_i = IS_i · (−advantage_i) / B: the pseudo-reward is a constant, not differentiated
    for i in range(6):
        t = math.exp(policy[i].item() - (target[i].item() - log_z))
        importance = 1.0 if sampler is None else math.exp(policy[i].item() - sampler[i].item())
        grad = importance * (naive_f_prime(divergence, t) + baseline) / 6
        assert float(policy.grad[i]) == pytest.approx(grad, rel=1e-9, abs=1e-12)
    assert metrics["pseudo_reward"].shape == (6,)


def test_a_rejected_sample_gets_the_limit_not_nan():
    policy = torch.tensor([-3.0, -4.0], requires_grad=True)
    target = torch.tensor([-3.5, -math.inf])  # the constraint rejects the second sample
    for divergence in F_PRIME:
        loss, metrics = fdpg_loss(policy, target, 0.0, 0.0, divergence=divergence)
        assert torch.isfinite(loss) and torch.isfinite(metrics["pseudo_reward"]).all(), divergence
    _, js = fdpg_loss(policy, target, 0.0, 0.0, divergence="js")
    # JS: a sample the target rejects is pushed down by log 2, the most a JS pseudo-reward can say
    assert float(js["pseudo_reward"][1]) == pytest.approx(-math.log(2))


def test_the_sign_the_gradient_pushes():
    """The pseudo-reward falls as π/p rises, for every divergence: with the batch's mean reward as
    the baseline, a sample below the target (π < p) is pushed up and one above it (π > p) down."""
    for divergence in F_PRIME:
        policy = torch.tensor([-6.0, -2.0], requires_grad=True)
        target = torch.tensor([-4.0, -4.0])
        _, metrics = fdpg_loss(policy, target, 0.0, 0.0, divergence=divergence)
        assert metrics["pseudo_reward"][0] > metrics["pseudo_reward"][1], divergence
        loss, _ = fdpg_loss(policy, target, 0.0, float(metrics["pseudo_reward"].mean()), divergence=divergence)
        loss.backward()
        assert policy.grad[0] < 0 < policy.grad[1], divergence  # gradient descent raises [0], lowers [1]


def test_running_log_z_is_the_mean_of_the_importance_weights():
    running = RunningLogZ()
    assert running.value == -math.inf
    batches = [torch.tensor([-1.0, -math.inf, -2.0]), torch.tensor([0.5])]
    for batch in batches:
        running.update(batch)
    weights = torch.cat(batches).exp()
    assert running.value == pytest.approx(math.log(float(weights.mean())))
    assert RunningLogZ(**running.state()).value == running.value


def test_moving_baseline_keeps_the_last_window():
    baseline = MovingBaseline(window=3)
    baseline.update(torch.tensor([1.0, 2.0]))
    baseline.update(torch.tensor([3.0, 4.0]))
    assert baseline.value == pytest.approx(3.0)
    assert MovingBaseline(3, **baseline.state()).value == baseline.value


@pytest.mark.parametrize("divergence", list(F_PRIME))
def test_divergence_estimate_uses_the_f_whose_derivative_is_the_pseudo_reward(divergence):
    from losses.fdpg import F_OVER_T, divergence_estimate

    log_t = torch.linspace(-2, 2, 9, dtype=torch.float64)
    t = log_t.exp()
    f = {"chi2": lambda t: t + 1 / t - 2}.get(divergence, F[divergence])  # F's chi2 without the constant
    assert torch.allclose(F_OVER_T[divergence](log_t), f(t) / t)
    assert float(F_OVER_T[divergence](torch.zeros(1, dtype=torch.float64))) == pytest.approx(0.0)  # D_f(p‖p) = 0
    # a Monte Carlo check on a 3-outcome space: E_π[f(t)/t] is Σ_x p(x) f(π(x)/p(x))
    pi, p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    exact = float((p * f(pi / p)).sum())
    draws = torch.multinomial(pi, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert float(divergence_estimate((pi / p).log()[draws], divergence)) == pytest.approx(exact, abs=0.01)
