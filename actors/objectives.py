"""The loss each `algorithm` trains with, on its batch shape: samples or pairs.

The learner calls one of these per micro-batch; the formulas live in `losses/`.
Every returned metric that is a 0-dim tensor is averaged into the iteration's
metrics (weighted by tokens for sample losses, by pairs for pair losses);
[B] tensors such as `per_pair_loss` are per-item records.
"""

from __future__ import annotations

import torch

from actors.batching import Sample
from jobs.spec import JobSpec
from losses.cll import centered_log_likelihood
from losses.dpo import dpo_loss
from losses.fdpg import fdpg_loss
from losses.fsft import fsft_loss
from losses.idft import idft_lambda, idft_loss
from losses.ipo import ipo_loss
from losses.rpo import rpo_loss
from losses.sft import sft_loss
from losses.simpo import simpo_loss
from losses.token_stats import TokenStats, sequence_logps
from losses.truncated_is import sampler_token_logprobs, truncated_importance_weights


def sample_objective(
    spec: JobSpec, stats: TokenStats, progress: float, samples: list[Sample] | None = None
) -> tuple[torch.Tensor, dict]:
    """sft or idft on [B, T] token stats, or fdpg on the samples' sequence log-probs and target.

    `progress` is the fraction of training done (IDFT's lambda). A sequence-level loss also returns
    "weight": the samples it averages over, where the token losses weigh by "num_tokens".
    """
    if spec.algorithm == "fdpg":
        logps, lengths = sequence_logps(stats)

        def per_sample(field: str) -> torch.Tensor:
            return torch.tensor([getattr(s, field) for s in samples], dtype=logps.dtype, device=logps.device)

        # target_logp is already normalised (log P − log Z, jobs/fdpg_target.py): log Z enters as 0.
        loss, metrics = fdpg_loss(
            logps, per_sample("target_logp"), 0.0, samples[0].pseudo_reward_baseline,
            divergence=spec.train.fdpg.divergence, sampler_logps=per_sample("sequence_logp"),
        )
        return loss, {**metrics, "num_tokens": lengths.sum(), "weight": torch.tensor(float(len(samples)))}
    token_weights, is_metrics = None, {}
    if spec.train.truncated_is_cap is not None:
        sampler = sampler_token_logprobs([s.engine_logprobs for s in samples], stats.logprobs, stats.mask)
        token_weights, is_metrics = truncated_importance_weights(
            stats.logprobs, sampler, stats.mask, spec.train.truncated_is_cap
        )
    if spec.algorithm == "idft":
        idft = spec.train.idft
        loss, metrics = idft_loss(
            stats.logprobs,
            centered_log_likelihood(stats),
            stats.mask,
            beta=idft.beta,
            gamma_min=idft.gamma_min,
            gamma_max=idft.gamma_max,
            lam=idft_lambda(progress, idft.warmup_ratio, idft.transition_ratio),
            token_weights=token_weights,
        )
    else:
        loss, metrics = sft_loss(stats.logprobs, stats.mask, token_weights)
    return loss, {**metrics, **is_metrics}


def pair_objective(
    spec: JobSpec,
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor | None,
    reference_rejected: torch.Tensor | None,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
) -> tuple[torch.Tensor, dict]:
    """dpo (and its variants), rpo, irft or fsft on [B] summed log-probs of the chosen and rejected responses.

    For irft and fsft, "chosen" is the demonstration and "rejected" the policy's own generation.
    """
    dpo = spec.train.dpo
    if spec.algorithm == "fsft":
        loss, metrics = fsft_loss(
            policy_chosen, policy_rejected, reference_rejected, chosen_tokens, rejected_tokens,
            divergence=spec.train.fsft.divergence, beta=spec.train.fsft.beta,
        )
    elif spec.algorithm == "rpo":
        rpo = spec.train.rpo
        loss, metrics = rpo_loss(
            policy_chosen, policy_rejected, reference_chosen, reference_rejected, chosen_tokens,
            beta=dpo.beta, eta=rpo.eta, form=rpo.form,
        )
    elif spec.algorithm == "irft" or dpo.loss in ("sigmoid", "robust"):
        # IRFT's stage loss is the sigmoid DPO loss against the previous stage's policy (docs/algorithms.md section 6).
        loss, metrics = dpo_loss(
            policy_chosen, policy_rejected, reference_chosen, reference_rejected,
            beta=dpo.beta, label_smoothing=dpo.label_smoothing, robust=dpo.loss == "robust",
        )
    elif dpo.loss == "ipo":
        loss, metrics = ipo_loss(
            policy_chosen, policy_rejected, reference_chosen, reference_rejected, chosen_tokens, rejected_tokens,
            beta=dpo.beta,
        )
    else:
        loss, metrics = simpo_loss(
            policy_chosen, policy_rejected, chosen_tokens, rejected_tokens, beta=dpo.beta, gamma=dpo.simpo_gamma
        )
    with torch.no_grad():
        metrics["chosen_nll"] = (-policy_chosen / chosen_tokens.clamp(min=1)).mean()
        if reference_chosen is not None:
            # Sequence-level k1 estimate of KL(policy || reference) on the paired responses, at training time.
            metrics["kl_to_reference"] = torch.cat(
                [policy_chosen - reference_chosen, policy_rejected - reference_rejected]
            ).mean()
    return loss, metrics
