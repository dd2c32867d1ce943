"""Truncated importance weights: on-policy token losses on samples from a slightly different policy.

The engine that sampled a response is not exactly the policy being trained. vLLM in bf16
differs from the learner's float32 forward pass (0.6-1.5 nats at the worst token on an H100),
and with `rollout.max_policy_lag` > 0 the sampler is a few updates behind. Each response token's
loss is weighted by the detached ratio, truncated at C:

    w_t = min(π_θ(y_t | y_<t) / π_sampler(y_t | y_<t), C)

This is truncated importance sampling (Ionides 2008), as verl's and prime-rl's "TIS" apply it to
the engine/trainer mismatch. π_sampler is the engine's own log-prob of each sampled token
(`Sample.engine_logprobs`); a sample without it (a dataset solution, a hinted rewrite, which no
engine sampled as written) gets w = 1.
"""

from __future__ import annotations

import torch


def sampler_token_logprobs(engine_logprobs: list[list[float]], logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T] the sampler's log-prob at each response position (row-major, as the mask orders them);
    rows with no engine log-probs take `logprobs` itself, so their ratio is 1."""
    sampler = logprobs.detach().clone()
    for row, values in enumerate(engine_logprobs):
        if values:
            positions = mask[row].nonzero(as_tuple=True)[0]
            if len(values) != len(positions):
                raise ValueError(f"sample {row}: {len(values)} engine log-probs for {len(positions)} response tokens")
            sampler[row, positions] = torch.tensor(values, dtype=sampler.dtype, device=sampler.device)
    return sampler


def truncated_importance_weights(
    logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, mask: torch.Tensor, cap: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token weights min(exp(logprobs − sampler_logprobs), cap), 0 off the mask, detached.

    Args:
        logprobs: [B, T] the policy's log-probs of the response tokens (the gradient is not taken through w).
        sampler_logprobs: [B, T] the sampler's (`sampler_token_logprobs`).
        mask: [B, T] bool, True on response tokens.
        cap: C ≥ 1.

    Returns:
        weights: [B, T]; metrics: "is_weight_mean" (before the cap, over response tokens) and
        "is_truncated_fraction" (tokens whose ratio exceeded C).
    """
    with torch.no_grad():
        mask = mask.bool()
        ratio = torch.where(mask, (logprobs.float() - sampler_logprobs.float()).exp(), torch.zeros_like(logprobs))
        tokens = mask.sum().clamp(min=1)
        weights = ratio.clamp(max=cap)
        return weights, {
            "is_weight_mean": ratio.sum() / tokens,
            "is_truncated_fraction": (ratio > cap).sum() / tokens,
        }
