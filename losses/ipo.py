"""IPO loss: Azar et al., "A General Theoretical Paradigm to Understand Learning
from Human Preferences" (AISTATS 2024), Eq. 17, in TRL's length-normalised form."""

from __future__ import annotations

import torch

from losses.implicit_rewards import implicit_reward_metrics


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    *,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IPO loss on per-token-averaged log-ratios, mean over pairs.

    Delta_avg = (log pi(y_w) - log pi_ref(y_w)) / |y_w| - (log pi(y_l) - log pi_ref(y_l)) / |y_l|
    l         = (Delta_avg - 1 / (2 beta))^2,   L = mean over pairs of l

    Token counts are clamped to >= 1, as TRL's DPOTrainer (loss_type="ipo") does;
    this matches TRL 1.16 exactly. beta is IPO's regulariser tau.

    Implicit rewards follow what TRL logs for IPO: beta * (log pi - log pi_ref)
    on the SUMMED (not length-averaged) log-ratios, i.e. the DPO rewards.

    Args:
        policy_chosen_logps, policy_rejected_logps: [B] summed response log-probs
            under the policy, with grad.
        reference_chosen_logps, reference_rejected_logps: [B] the same under the
            reference model, constants.
        chosen_tokens, rejected_tokens: [B] response token counts (float or long).
        beta: regularisation tau.

    Returns:
        loss: 0-dim float32 tensor.
        metrics: "per_pair_loss" [B] detached, plus ``implicit_reward_metrics``.
    """
    chosen_logratios = policy_chosen_logps.float() - reference_chosen_logps.float().detach()
    rejected_logratios = policy_rejected_logps.float() - reference_rejected_logps.float().detach()
    chosen_avg = chosen_logratios / chosen_tokens.float().clamp(min=1.0)
    rejected_avg = rejected_logratios / rejected_tokens.float().clamp(min=1.0)
    delta_avg = chosen_avg - rejected_avg
    losses = (delta_avg - 1.0 / (2.0 * beta)) ** 2
    metrics = {"per_pair_loss": losses.detach()}
    metrics.update(implicit_reward_metrics(beta * chosen_logratios, beta * rejected_logratios))
    return losses.mean(), metrics
