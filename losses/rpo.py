"""RPO (regularized preference optimisation): DPO plus an SFT term on the chosen
response. Liu et al., "Provably Mitigating Overoptimization in RLHF: Your SFT Loss
is Implicitly an Adversarial Regularizer" (NeurIPS 2024)."""

from __future__ import annotations

import torch

from losses.dpo import dpo_loss


def rpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    chosen_tokens: torch.Tensor,
    *,
    beta: float = 0.1,
    eta: float = 0.005,
    form: str = "cumulative",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_RPO = L_DPO (sigmoid) + eta * L_SFT(y_w).

    form="cumulative" (main paper; the authors' rpo_trainer.py does
        ``losses -= policy_chosen_logps * beta * eta``):
        sft_i = -beta * log pi(y_w,i)   (summed over the chosen response)
    form="average" (the authors' appendix / OpenRLHF fork, no beta factor):
        sft_i = -log pi(y_w,i) / |y_w,i|   (per-token mean NLL; counts clamped to >= 1)
    L_SFT = mean over pairs of sft_i, and per pair l_i = dpo_i + eta * sft_i, so
    L_RPO = mean over pairs of l_i.

    Args:
        policy_chosen_logps, policy_rejected_logps: [B] summed response log-probs
            under the policy, with grad.
        reference_chosen_logps, reference_rejected_logps: [B] the same under the
            reference model, constants.
        chosen_tokens: [B] chosen response token counts (used by form="average").
        beta: DPO inverse temperature (also scales the cumulative SFT term).
        eta: weight of the SFT term.
        form: "cumulative" or "average".

    Returns:
        loss: 0-dim float32 tensor.
        metrics: "per_pair_loss" [B] detached (dpo_i + eta * sft_i), "dpo_loss" and
            "sft_loss" (0-dim, detached), plus the DPO implicit-reward metrics.
    """
    dpo, metrics = dpo_loss(
        policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta=beta
    )
    if form == "cumulative":
        sft_per_pair = -beta * policy_chosen_logps.float()
    elif form == "average":
        sft_per_pair = -policy_chosen_logps.float() / chosen_tokens.float().clamp(min=1.0)
    else:
        raise ValueError(f"form must be 'cumulative' or 'average', got {form!r}")
    sft = sft_per_pair.mean()
    metrics["per_pair_loss"] = metrics["per_pair_loss"] + eta * sft_per_pair.detach()
    metrics["dpo_loss"] = dpo.detach()
    metrics["sft_loss"] = sft.detach()
    return dpo + eta * sft, metrics
