"""Centered log-likelihood (CLL), from "Towards On-Policy SFT" (DDT).

phi_t = log p_t + H_t. When y_t is sampled from the model itself,
E[log p_t] = -H_t, so E[phi_t] = 0; for data from another distribution q,
E_q[phi] = H(p) - H(q) - KL(q || p), and strongly negative phi flags tokens that
are out of the model's distribution. The authors' rule of thumb: a sequence
average below about -0.1 is out-of-distribution, around -0.05 in-distribution.
"""

from __future__ import annotations

import torch

from losses.token_stats import TokenStats

# phi thresholds for the "fraction of tokens above" statistics (key suffix -> t).
_THRESHOLDS = {"frac_gt_1": -1.0, "frac_gt_3": -3.0, "frac_gt_5": -5.0}


def centered_log_likelihood(stats: TokenStats) -> torch.Tensor:
    """Per-token CLL.

    Args:
        stats: TokenStats with [B, T] logprobs, entropy and mask.

    Returns:
        phi: [B, T] fp32, ``logprobs.detach() + entropy``, 0 where mask is False.
            Detached: phi only ever scores or re-weights tokens.
    """
    phi = stats.logprobs.detach().float() + stats.entropy.float()
    return torch.where(stats.mask, phi, torch.zeros_like(phi))


def sequence_cll(phi: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sequence CLL summaries.

    Args:
        phi: [B, T] per-token CLL.
        mask: [B, T] bool, True on valid (response) tokens.

    Returns:
        Dict of [B] fp32 tensors: "avg_cll" (mean phi over valid tokens, 0 for a
        sequence with none), "frac_gt_1", "frac_gt_3", "frac_gt_5" (fraction of
        valid tokens with phi > -1, -3, -5; 0 for a sequence with none) and
        "num_tokens" (valid-token count as float).
    """
    mask = mask.bool()
    maskf = mask.float()
    phi = phi.detach().float()
    num_tokens = maskf.sum(-1)
    # clamp only guards the empty-sequence case, whose numerators are 0 anyway.
    denom = num_tokens.clamp(min=1.0)
    out = {"avg_cll": (phi * maskf).sum(-1) / denom}
    for key, threshold in _THRESHOLDS.items():
        out[key] = ((phi > threshold) & mask).float().sum(-1) / denom
    out["num_tokens"] = num_tokens
    return out
