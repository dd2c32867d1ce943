"""The learner's loss call: the running algorithm's loss (jobs/algorithms/) on a micro-batch.

What every algorithm's loss shares is done here: truncated importance weights for the token
losses, and the pair metrics that describe the policy rather than the loss. Every returned
metric that is a 0-dim tensor is averaged into the iteration's metrics (weighted by tokens for
sample losses, by pairs for pair losses); [B] tensors such as `per_pair_loss` are per-item records.
"""

from __future__ import annotations

import torch

from jobs.core.records import Sample
from jobs.algorithms.base import PairLogps
from jobs.core.spec import JobSpec
from losses.token_stats import TokenStats
from losses.truncated_is import sampler_token_logprobs, truncated_importance_weights


def sample_objective(
    spec: JobSpec, stats: TokenStats, progress: float, samples: list[Sample] | None = None
) -> tuple[torch.Tensor, dict]:
    """The algorithm's loss on [B, T] token stats; `progress` is the fraction of training done.

    A sequence-level loss also returns "weight": the samples it averages over, where the token
    losses weigh by "num_tokens".
    """
    token_weights, is_metrics = None, {}
    if spec.train.truncated_is_cap is not None:  # the spec allows it for token losses only
        sampler = sampler_token_logprobs([s.engine_logprobs for s in samples], stats.logprobs, stats.mask)
        token_weights, is_metrics = truncated_importance_weights(
            stats.logprobs, sampler, stats.mask, spec.train.truncated_is_cap
        )
    loss, metrics = spec.registered_algorithm.loss(spec, stats, samples, progress, token_weights)
    return loss, {**metrics, **is_metrics}


def pair_objective(spec: JobSpec, logps: PairLogps) -> tuple[torch.Tensor, dict]:
    """The algorithm's loss on [B] summed log-probs of the chosen and rejected responses."""
    loss, metrics = spec.registered_algorithm.loss(spec, logps)
    with torch.no_grad():
        metrics["chosen_nll"] = (-logps.policy_chosen / logps.chosen_tokens.clamp(min=1)).mean()
        if logps.reference_chosen is not None:
            # Sequence-level k1 estimate of KL(policy || reference) on the paired responses, at training time.
            metrics["kl_to_reference"] = torch.cat(
                [logps.policy_chosen - logps.reference_chosen, logps.policy_rejected - logps.reference_rejected]
            ).mean()
    return loss, metrics
