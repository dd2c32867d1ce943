"""The f-DPG target of a run: p = P/Z over the samples the policy draws, and the pseudo-reward baseline.

A scoring stage of the loop (algorithm fdpg), after rewards and the reference log-probs:

    log P(x) = log a(x) + log b(x)      b = 1 when the constraint's reward reaches the threshold, else 0
             = log a(x) + r(x) / beta   (target: reward; r the total reward)
    log Z   <- running importance-sampling mean of P(x)/q(x) over every sample so far
    sample.target_logp = log P(x) - log Z,  sample.pseudo_reward_baseline = the baseline before this batch

a is the initial model (reference_logp), q the weights that drew x (sequence_logp, from the engine
while it sampled: nothing is scored twice). log Z and the baseline are state of the run: they go
into each checkpoint's loop state, so a resumed run continues them exactly.
"""

from __future__ import annotations

import math

import torch

from jobs.core.records import Sample
from jobs.core.spec import JobSpec
from losses.fdpg import F_PRIME, LOG_T_LIMIT, MovingBaseline, RunningLogZ, divergence_estimate


class FDPGTarget:
    def __init__(self, spec: JobSpec, state: dict | None = None):
        self.spec = spec.train.fdpg
        state = state or {}
        self.log_z = RunningLogZ(**state.get("log_z", {}))
        self.baseline = MovingBaseline(self.spec.baseline_window, **state.get("baseline", {}))

    def target_log_p(self, sample: Sample) -> float:
        if self.spec.target == "reward":
            return sample.reference_logp + sample.rewards["total"] / self.spec.beta
        met = sample.rewards[self.spec.constraint] >= self.spec.threshold
        return sample.reference_logp if met else -math.inf

    def score(self, samples: list[Sample]) -> dict:
        """Fill each sample's target and baseline; return the iteration's f-DPG metrics."""
        log_p = torch.tensor([self.target_log_p(s) for s in samples], dtype=torch.float64)
        sampler = torch.tensor([s.sequence_logp for s in samples], dtype=torch.float64)
        reference = torch.tensor([s.reference_logp for s in samples], dtype=torch.float64)
        log_z = self.log_z.update(log_p - sampler)
        normalised = log_p - log_z if math.isfinite(log_z) else torch.full_like(log_p, -math.inf)
        # The sampler is the policy at the start of the iteration (on-policy), so these are the
        # numbers the paper plots: how far the policy is from its target, and from where it began.
        log_t = (sampler - normalised).clamp(-LOG_T_LIMIT, LOG_T_LIMIT)
        rewards = -F_PRIME[self.spec.divergence](log_t)
        # Before any history the batch is its own baseline: a baseline of 0 would push every sample of
        # the first batch the same way (with JS, all down by log 2 when none meets the constraint).
        baseline = self.baseline.value if self.baseline.values else float(rewards.mean())
        for sample, value in zip(samples, normalised.tolist()):
            sample.target_logp, sample.pseudo_reward_baseline = value, baseline
        self.baseline.update(rewards)
        metrics = {
            # None until a sample meets the constraint: Z = 0, and the target is not defined yet
            "fdpg_log_z": log_z if math.isfinite(log_z) else None,
            "fdpg_divergence": float(divergence_estimate(log_t, self.spec.divergence)),
            "fdpg_kl_to_initial": float((sampler - reference).mean()),
            "fdpg_pseudo_reward_mean": float(rewards.mean()),
            "fdpg_pseudo_reward_std": float(rewards.std(unbiased=False)),
            "fdpg_baseline": baseline,
        }
        if self.spec.target == "constraint":
            metrics["fdpg_constraint_rate"] = float(torch.isfinite(log_p).double().mean())
        return metrics

    def state(self) -> dict:
        return {"log_z": self.log_z.state(), "baseline": self.baseline.state()}
