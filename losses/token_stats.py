"""Per-token statistics of a causal LM's logits over the response tokens.

This module is the single place where the next-token shift, the log-prob gather
and the response masking happen; every loss and the CLL scorer consume its
output so that they cannot disagree about which token a position scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TokenStats:
    """Shifted per-token quantities; position t scores ``input_ids[:, t + 1]``.

    Attributes:
        logprobs: [B, L-1] fp32 log p of token t+1 given its prefix; carries grad
            if the logits did.
        entropy: [B, L-1] fp32 entropy of the full next-token distribution at
            temperature 1; detached.
        mask: [B, L-1] bool, True where the *target* token is a response token.
    """

    logprobs: torch.Tensor
    entropy: torch.Tensor
    mask: torch.Tensor


def response_token_stats(
    logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor
) -> TokenStats:
    """Shift, gather and mask a causal LM's logits.

    Args:
        logits: [B, L, V], any float dtype (upcast to fp32).
        input_ids: [B, L] long.
        response_mask: [B, L] bool/int, nonzero on response tokens; prompt and
            padding are 0.

    Returns:
        TokenStats with [B, L-1] tensors. Position t scores ``input_ids[:, t+1]``
        with ``logits[:, t]``.
    """
    # The last position predicts a token beyond the sequence, and the first
    # token has no prefix to be predicted from.
    shifted_logits = logits[:, :-1, :].float()
    targets = input_ids[:, 1:].long()
    mask = response_mask[:, 1:].bool()

    # fp32 log_softmax: bf16 log-probs are too coarse for CLL thresholds and
    # for p^gamma weights.
    logp_all = torch.log_softmax(shifted_logits, dim=-1)
    logprobs = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    # Entropy is a per-token statistic (CLL centring), never a training signal.
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)

    return TokenStats(logprobs=logprobs, entropy=entropy, mask=mask)


def sequence_logps(stats: TokenStats) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-prob and response length of each sequence.

    Returns:
        logps: [B] fp32, sum of log p over response tokens (grad flows if it did into stats).
        num_tokens: [B] fp32, number of response tokens.
    """
    logps = torch.where(stats.mask, stats.logprobs, torch.zeros_like(stats.logprobs)).sum(-1)
    return logps, stats.mask.float().sum(-1)
