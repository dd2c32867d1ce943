"""DPO loss and its label-noise variants (cDPO, robust DPO).

- DPO: Rafailov et al., "Direct Preference Optimization: Your Language Model is
  Secretly a Reward Model" (NeurIPS 2023).
- cDPO (conservative DPO, label smoothing): Mitchell, "A note on DPO with noisy
  preferences & relationship to IPO" (2023).
- Robust DPO: Chowdhury et al., "Provably Robust DPO: Aligning Language Models
  with Noisy Feedback" (ICML 2024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from losses.implicit_rewards import implicit_reward_metrics


def sigmoid_preference_losses(
    logits: torch.Tensor, *, label_smoothing: float = 0.0, robust: bool = False
) -> torch.Tensor:
    """Per-pair logistic preference loss of a margin z, with optional label noise eps.

    eps = 0:        -log sig(z)
    cDPO:           -(1 - eps) log sig(z) - eps log sig(-z)
    robust:         [(1 - eps)(-log sig(z)) - eps(-log sig(-z))] / (1 - 2 eps)

    Args:
        logits: [B] margins z (beta * Delta for DPO).
        label_smoothing: eps, the assumed probability that a label is flipped.
        robust: use the unbiased robust-DPO estimator instead of cDPO.

    Returns:
        [B] per-pair losses (with grad).
    """
    eps = float(label_smoothing)
    clean = -F.logsigmoid(logits)
    if eps == 0.0:
        return clean
    flipped = -F.logsigmoid(-logits)
    if robust:
        return ((1.0 - eps) * clean - eps * flipped) / (1.0 - 2.0 * eps)
    return (1.0 - eps) * clean + eps * flipped


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    robust: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sigmoid DPO loss (cDPO with label_smoothing > 0, robust DPO with robust=True).

    Delta = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))
    l     = sigmoid_preference_losses(beta * Delta, label_smoothing, robust)
    L     = mean over pairs of l
    Implicit rewards: r = beta * (log pi(y) - log pi_ref(y)).

    Args:
        policy_chosen_logps, policy_rejected_logps: [B] summed response log-probs
            under the policy, with grad.
        reference_chosen_logps, reference_rejected_logps: [B] the same under the
            reference model, treated as constants.
        beta: inverse temperature (KL strength).
        label_smoothing: eps in [0, 0.5) for robust, [0, 1] for cDPO.
        robust: robust-DPO instead of cDPO when eps > 0.

    Returns:
        loss: 0-dim float32 tensor.
        metrics: "per_pair_loss" [B] detached, plus ``implicit_reward_metrics``.
    """
    if robust and not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"robust DPO needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing}")
    chosen_logratios = policy_chosen_logps.float() - reference_chosen_logps.float().detach()
    rejected_logratios = policy_rejected_logps.float() - reference_rejected_logps.float().detach()
    losses = sigmoid_preference_losses(
        beta * (chosen_logratios - rejected_logratios), label_smoothing=label_smoothing, robust=robust
    )
    metrics = {"per_pair_loss": losses.detach()}
    metrics.update(implicit_reward_metrics(beta * chosen_logratios, beta * rejected_logratios))
    return losses.mean(), metrics
