"""fdpg: f-divergence policy gradient towards the target p = P / Z (losses/fdpg.py,
docs/algorithms.md section 7). Its target (log Z and the pseudo-reward baseline) is running state
of the run, kept in every checkpoint (jobs/algorithms/fdpg_target.py)."""

from __future__ import annotations

import torch

from jobs.algorithms.base import Algorithm, check_samples_drawn_from_the_policy
from jobs.algorithms.fdpg_target import FDPGTarget
from losses.fdpg import fdpg_loss
from losses.token_stats import sequence_logps


def check(spec) -> None:
    keys = [s.key for s in spec.reward.sources]
    if not keys:
        raise ValueError("algorithm fdpg builds its target from a reward source; reward.sources is empty")
    fdpg = spec.train.fdpg
    if fdpg.constraint is None:
        fdpg.constraint = keys[0]
    elif fdpg.constraint not in keys:
        raise ValueError(f"train.fdpg.constraint {fdpg.constraint!r} must name one of reward.sources (configured: {keys})")
    check_samples_drawn_from_the_policy(spec)


def loss(spec, stats, samples, progress, token_weights):
    """A sequence-level loss: it also returns "weight", the samples it averages over."""
    logps, lengths = sequence_logps(stats)

    def per_sample(field: str) -> torch.Tensor:
        return torch.tensor([getattr(s, field) for s in samples], dtype=logps.dtype, device=logps.device)

    # target_logp is already normalised (log P − log Z, jobs/algorithms/fdpg_target.py): log Z enters as 0.
    value, metrics = fdpg_loss(
        logps, per_sample("target_logp"), 0.0, samples[0].pseudo_reward_baseline,
        divergence=spec.train.fdpg.divergence, sampler_logps=per_sample("sequence_logp"),
    )
    return value, {**metrics, "num_tokens": lengths.sum(), "weight": torch.tensor(float(len(samples)))}


ALGORITHM = Algorithm(
    name="fdpg", trains_on="samples", loss=loss, check=check,
    initial_reference=lambda spec: True,  # a(x) of the target
    stateful_stage=FDPGTarget,
)
