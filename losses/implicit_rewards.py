"""Logged metrics of the implicit rewards of preference losses (DPO family, SimPO, RPO)."""

from __future__ import annotations

import torch


def implicit_reward_metrics(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Turn per-pair implicit rewards into the metrics every preference loss logs.

    Args:
        chosen_rewards: [B] implicit reward of each chosen response (e.g. beta *
            (log pi - log pi_ref) for DPO).
        rejected_rewards: [B] the same for the rejected responses.

    Returns:
        Detached float32 tensors: "chosen_rewards" [B], "rejected_rewards" [B],
        "reward_accuracy" (0-dim, fraction of pairs with chosen > rejected; ties
        count as wrong) and "reward_margin" (0-dim, mean of chosen - rejected).
    """
    chosen = chosen_rewards.detach().float()
    rejected = rejected_rewards.detach().float()
    return {
        "chosen_rewards": chosen,
        "rejected_rewards": rejected,
        "reward_accuracy": (chosen > rejected).float().mean(),
        "reward_margin": (chosen - rejected).mean(),
    }
