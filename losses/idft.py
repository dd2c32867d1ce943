"""IDFT (in-distribution fine-tuning) loss, from "Towards On-Policy SFT" (DDT).

Each response token's NLL is re-weighted by sg(p_t ** gamma_t), where gamma_t
grows as the token's centred log-likelihood phi_t falls: out-of-distribution
tokens (phi << 0) get gamma -> gamma_max and are suppressed, in-distribution
tokens (phi > 0) get gamma -> gamma_min and are trained almost like plain SFT.
Fixed gamma = 0 is plain SFT, fixed gamma = 1 is DFT.
"""

from __future__ import annotations

import torch


def idft_lambda(
    progress: float, warmup_ratio: float = 0.0, transition_ratio: float = 0.0
) -> float:
    """Strength lambda of the IDFT re-weighting at a point of training.

    Args:
        progress: fraction of training done, in [0, 1].
        warmup_ratio: fraction of training with lambda = 0, i.e. gamma = 1 (DFT
            weighting; not plain SFT).
        transition_ratio: fraction over which lambda ramps linearly 0 -> 1.

    Returns:
        lambda in [0, 1]; 1.0 everywhere when both ratios are 0 (the released
        runs).
    """
    if progress < warmup_ratio:
        return 0.0
    if transition_ratio <= 0.0:
        return 1.0
    return float(min(1.0, (progress - warmup_ratio) / transition_ratio))


def idft_loss(
    logprobs: torch.Tensor,
    phi: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float = 1.0,
    gamma_min: float = 0.1,
    gamma_max: float = 2.0,
    lam: float = 1.0,
    fixed_gamma: float | None = None,
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IDFT loss, token-mean over valid tokens.

    gamma_raw = clip(exp(-phi / beta), gamma_min, gamma_max)
    gamma     = 1 + lam * (gamma_raw - 1)     (or fixed_gamma if given)
    l_t       = -sg(p_t ** gamma_t) * logprobs_t,  p_t = exp(logprobs).clamp(1e-10, 1)
    L         = sum(mask * l) / max(num valid tokens, 1)

    Args:
        logprobs: [B, T] log p of the target tokens, with grad.
        phi: [B, T] centred log-likelihood from the same forward pass; treated
            as a constant.
        mask: [B, T] bool, True on valid (response) tokens.
        beta: temperature of the phi -> gamma map.
        gamma_min, gamma_max: clip range of gamma_raw.
        lam: schedule strength from ``idft_lambda``. Note lam = 0 gives
            gamma = 1 everywhere, i.e. DFT weighting, not plain SFT (the
            authors' trainer behaves the same during its warmup).
        fixed_gamma: overrides gamma everywhere (0 -> plain SFT, 1 -> DFT).
        token_weights: optional [B, T] detached per-token weights multiplying l_t
            (losses/truncated_is.py).

    Returns:
        loss: 0-dim tensor.
        metrics: detached 0-dim tensors "nll" (token-mean NLL), "gamma_mean" and
            "weight_mean" (means over valid tokens of gamma and sg(p^gamma)),
            "num_tokens".
    """
    mask = mask.bool()
    maskf = mask.float()
    num_tokens = maskf.sum()
    denom = num_tokens.clamp(min=1.0)

    with torch.no_grad():
        if fixed_gamma is not None:
            gamma = torch.full_like(logprobs, float(fixed_gamma), dtype=torch.float32)
        else:
            gamma_raw = torch.exp(-phi.float() / beta).clamp(gamma_min, gamma_max)
            gamma = 1.0 + lam * (gamma_raw - 1.0)
        # Same epsilon as the authors' trainer; the floor also keeps the weight
        # of a -inf log-prob at a defined value instead of 0 ** gamma.
        p = logprobs.detach().float().exp().clamp(1e-10, 1.0)
        # Zeroing masked positions keeps a non-finite phi on padding out of the
        # loss and the metrics (0 * nan would still be nan).
        gamma = torch.where(mask, gamma, torch.zeros_like(gamma))
        weight = torch.where(mask, p.pow(gamma), torch.zeros_like(p))
        applied = weight if token_weights is None else weight * token_weights

    # where() so masked positions (possibly -inf log-probs) cannot leak nan.
    logprobs = logprobs.float()
    nll_tok = torch.where(mask, -logprobs, torch.zeros_like(logprobs))
    loss = (applied * nll_tok).sum() / denom

    metrics = {
        "nll": nll_tok.detach().sum() / denom,
        "gamma_mean": gamma.sum() / denom,
        "weight_mean": weight.sum() / denom,
        "num_tokens": num_tokens.detach(),
    }
    return loss, metrics
