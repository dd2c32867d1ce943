"""SimPO loss: Meng, Xia and Chen, "SimPO: Simple Preference Optimization with a
Reference-Free Reward" (NeurIPS 2024), Eq. 6."""

from __future__ import annotations

import torch

from losses.dpo import sigmoid_preference_losses
from losses.implicit_rewards import implicit_reward_metrics


def simpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    *,
    beta: float = 2.0,
    gamma: float = 0.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Reference-free SimPO loss, mean over pairs.

    r(y) = beta / |y| * log pi(y)          (length-normalised implicit reward)
    l    = -log sig(r(y_w) - r(y_l) - gamma)

    Token counts are clamped to >= 1.

    Args:
        policy_chosen_logps, policy_rejected_logps: [B] summed response log-probs
            under the policy, with grad.
        chosen_tokens, rejected_tokens: [B] response token counts (float or long).
        beta: reward scale.
        gamma: target reward margin.

    Returns:
        loss: 0-dim float32 tensor.
        metrics: "per_pair_loss" [B] detached, plus ``implicit_reward_metrics`` of
            r(y_w) and r(y_l).
    """
    chosen_rewards = beta * policy_chosen_logps.float() / chosen_tokens.float().clamp(min=1.0)
    rejected_rewards = beta * policy_rejected_logps.float() / rejected_tokens.float().clamp(min=1.0)
    losses = sigmoid_preference_losses(chosen_rewards - rejected_rewards - gamma)
    metrics = {"per_pair_loss": losses.detach()}
    metrics.update(implicit_reward_metrics(chosen_rewards, rejected_rewards))
    return losses.mean(), metrics
