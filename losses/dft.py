"""DFT (Dynamic Fine-Tuning) loss, from Wu et al., "On the Generalization of SFT: A Reinforcement
Learning Perspective with Reward Rectification" (arXiv:2508.05629, 2025).

Read as a policy gradient, the SFT gradient on a demonstration token carries an implicit weight
1/p_t, which blows up on tokens the model finds unlikely. DFT rectifies it by multiplying each
token's NLL by the token's own detached probability:

    l_t = − sg(p_t) · log p_t

This is IDFT with gamma fixed at 1 (losses/idft.py, docs/algorithms.md section 2): the baseline
the IDFT authors compare against. One implementation of the token weighting serves both.
"""

from __future__ import annotations

import torch

from losses.idft import idft_loss


def dft_loss(
    logprobs: torch.Tensor, mask: torch.Tensor, token_weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token-mean DFT loss over valid tokens.

    Args:
        logprobs: [B, T] log p of the target tokens, with grad.
        mask: [B, T] bool, True on valid (response) tokens.
        token_weights: optional [B, T] detached per-token weights (losses/truncated_is.py).

    Returns:
        loss: 0-dim tensor, ``sum(mask * w * -sg(p) * logprobs) / max(num valid tokens, 1)``.
        metrics: detached 0-dim tensors "nll" (token-mean NLL), "weight_mean" (mean sg(p) over valid
            tokens) and "num_tokens".
    """
    loss, metrics = idft_loss(logprobs, torch.zeros_like(logprobs), mask, fixed_gamma=1.0, token_weights=token_weights)
    metrics.pop("gamma_mean")  # 1 by definition
    return loss, metrics
