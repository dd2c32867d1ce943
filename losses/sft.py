"""Plain supervised fine-tuning loss: token-mean negative log-likelihood."""

from __future__ import annotations

import torch


def sft_loss(
    logprobs: torch.Tensor, mask: torch.Tensor, token_weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token-mean NLL over valid tokens.

    Args:
        logprobs: [B, T] log p of the target tokens, with grad.
        mask: [B, T] bool, True on valid (response) tokens.
        token_weights: optional [B, T] detached per-token weights (losses/truncated_is.py).

    Returns:
        loss: 0-dim tensor, ``-sum(mask * w * logprobs) / max(num valid tokens, 1)``.
        metrics: {"nll", "num_tokens"} as detached 0-dim tensors.
    """
    maskf = mask.float()
    num_tokens = maskf.sum()
    # where() rather than multiply so a -inf log-prob on a masked position
    # cannot turn the sum into nan.
    nll_tok = torch.where(mask.bool(), -logprobs, torch.zeros_like(logprobs))
    nll = nll_tok.sum() / num_tokens.clamp(min=1.0)
    loss = nll if token_weights is None else (token_weights * nll_tok).sum() / num_tokens.clamp(min=1.0)
    return loss, {"nll": nll.detach(), "num_tokens": num_tokens.detach()}
