"""f-DPG: distributional policy gradients that minimise any f-divergence to a target distribution.

Go, Korbak, Kruszewski, Rozen, Ryu, Dymetman, "Aligning Language Models with Preferences through
f-divergence Minimization" (ICML 2023, arXiv:2302.08215). The target is an energy-based model
P(x), e.g. a(x)·b(x) (a the initial model, b a 0/1 constraint) or a(x)·exp(r(x)/β), normalised by
Z: p = P/Z. The gradient of D_f(π‖p) is E_π[f′(π(x)/p(x)) ∇ log π(x)], so each sample gets the
pseudo-reward −f′(π/p) less a moving-average baseline. As in naver/disco
(disco/tuners/losses/f_divergence.py), everything is in sequence log-probs:

    log_t     = log π(x) − (log P(x) − log Z)
    reward    = −f′(log_t)                          (f′ written as a function of log t)
    advantage = reward − baseline
    loss      = mean(IS · (−advantage) · log π(x)),  IS = π(x)/q(x)   (q the sampler; 1 on-policy)

Z is estimated by importance sampling, E_q[P(x)/q(x)], as a running average over all samples
seen (`RunningLogZ`); the baseline is the mean reward of the last samples (`MovingBaseline`).
Both are state of the run, kept by the caller and checkpointed with it.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Callable

import torch
import torch.nn.functional as F

# f′ of each divergence D_f(π‖p), as a function of log t = log(π/p) (docs/algorithms.md section 7).
F_PRIME: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "kl": lambda log_t: -torch.exp(-log_t),  # forward KL(p‖π): f(t) = −log t
    "reverse_kl": lambda log_t: log_t + 1,  # KL(π‖p): f(t) = t log t
    "js": lambda log_t: math.log(2) - F.softplus(-log_t),  # Jensen-Shannon
    "tv": lambda log_t: torch.sign(log_t) / 2,  # total variation: f(t) = |t − 1|/2
    "chi2": lambda log_t: 1 - torch.exp(-2 * log_t),
    "reverse_chi2": lambda log_t: 2 * (torch.exp(log_t) - 1),
}
# f(t)/t as a function of log t, with f(1) = 0: D_f(π‖p) = E_p[f(π/p)] = E_π[f(t)/t], estimated on
# the policy's own samples (`divergence_estimate`). Each f is the one whose f′ is in F_PRIME.
F_OVER_T: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "kl": lambda log_t: -log_t * torch.exp(-log_t),
    "reverse_kl": lambda log_t: log_t,
    "js": lambda log_t: log_t - (1 + torch.exp(-log_t)) * (F.softplus(log_t) - math.log(2)),
    "tv": lambda log_t: (1 - torch.exp(-log_t)).abs() / 2,
    "chi2": lambda log_t: (1 - torch.exp(-log_t)) ** 2,
    "reverse_chi2": lambda log_t: torch.exp(log_t) - 2 + torch.exp(-log_t),
}
# A constraint that rejects x gives log P(x) = −inf and log t = +inf; reverse KL and reverse χ² would
# give an infinite pseudo-reward. log t is clipped here, which bounds their push-down per sample.
LOG_T_LIMIT = 30.0


def divergence_estimate(log_t: torch.Tensor, divergence: str) -> torch.Tensor:
    """D_f(π‖p) from [B] log(π(x)/p(x)) of samples x ~ π (clipped like the loss: a lower bound where p = 0)."""
    return F_OVER_T[divergence](log_t.clamp(-LOG_T_LIMIT, LOG_T_LIMIT)).mean()


class RunningLogZ:
    """log Z of the target, from every sample so far: Z ≈ mean over samples of P(x)/q(x)."""

    def __init__(self, log_sum: float = -math.inf, count: int = 0):
        self.log_sum, self.count = log_sum, count

    def update(self, log_weights: torch.Tensor) -> float:
        """Add the batch's log(P(x)/q(x)) ([B]); returns the new log Z (−inf while no sample had P > 0)."""
        self.log_sum = float(torch.logsumexp(torch.cat([torch.tensor([self.log_sum]), log_weights.double().cpu()]), 0))
        self.count += len(log_weights)
        return self.value

    @property
    def value(self) -> float:
        return self.log_sum - math.log(self.count) if self.count else -math.inf

    def state(self) -> dict:
        return {"log_sum": self.log_sum, "count": self.count}


class MovingBaseline:
    """Mean pseudo-reward of the last `window` samples (disco's MovingAverage)."""

    def __init__(self, window: int, values: list[float] | None = None):
        self.values = deque(values or [], maxlen=window)

    def update(self, rewards: torch.Tensor) -> None:
        self.values.extend(rewards.double().cpu().tolist())

    @property
    def value(self) -> float:
        return sum(self.values) / len(self.values) if self.values else 0.0

    def state(self) -> dict:
        return {"values": list(self.values)}


def fdpg_loss(
    policy_logps: torch.Tensor,
    target_log_p: torch.Tensor,
    log_z: float,
    baseline: float,
    *,
    divergence: str = "js",
    sampler_logps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """f-DPG loss on a batch of sequences.

    Args:
        policy_logps: [B] summed log π(x) under the policy being trained, with grad.
        target_log_p: [B] log P(x) of the unnormalised target (−inf where a constraint rejects x).
        log_z: current estimate of log Z (RunningLogZ.value).
        baseline: current moving-average pseudo-reward (MovingBaseline.value), taken before this batch.
        divergence: a key of F_PRIME.
        sampler_logps: [B] summed log q(x) under the weights that sampled x; None means on-policy (IS = 1).

    Returns:
        loss: 0-dim, mean(IS · (−advantage) · log π(x)).
        metrics: "pseudo_reward" [B] (to update the baseline), and 0-dim "pseudo_reward_mean",
            "pseudo_reward_std", "advantage_mean", "importance_weight_mean", "log_t_mean" (finite ones).
    """
    with torch.no_grad():
        log_t = (policy_logps.detach() - (target_log_p - log_z)).clamp(-LOG_T_LIMIT, LOG_T_LIMIT)
        reward = -F_PRIME[divergence](log_t)
        advantage = reward - baseline
        importance = (
            torch.ones_like(policy_logps) if sampler_logps is None else torch.exp(policy_logps.detach() - sampler_logps)
        )
    loss = (importance * -advantage * policy_logps).mean()
    finite = torch.isfinite(target_log_p)
    return loss, {
        "pseudo_reward": reward,
        "pseudo_reward_mean": reward.mean(),
        "pseudo_reward_std": reward.std(unbiased=False),
        "advantage_mean": advantage.mean(),
        "importance_weight_mean": importance.mean(),
        "log_t_mean": log_t[finite].mean() if finite.any() else torch.tensor(0.0),
    }
