"""Samples and the one place where (prompt, response) pairs become tensors.

The rollout workers' CLL scorer and the learners both call `collate`, so the
tokens a sample is scored on are the tokens it is trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from losses.token_stats import response_token_stats


@dataclass
class Sample:
    """One generated response. Travels rollout -> driver -> learner and into samples/iter-N.jsonl."""

    iteration: int
    prompt_index: int
    prompt: str
    prompt_token_ids: list[int]
    response: str
    response_token_ids: list[int]
    finish_reason: str
    source: str = "on_policy"  # later also "hinted" (Hinted Decoding) and "reference"
    engine_logprobs: list[float] = field(default_factory=list)  # vLLM's log p of each sampled token
    token_cll: list[float] = field(default_factory=list)  # phi_t per response token (ALGORITHMS.md section 1)
    cll: dict[str, float] = field(default_factory=dict)  # avg_cll, frac_gt_1, frac_gt_3, frac_gt_5
    rewards: dict[str, float] = field(default_factory=dict)  # filled by the reward actor (roadmap 1)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.response_token_ids)


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # [B, L] long, right-padded
    attention_mask: torch.Tensor  # [B, L] long, 1 on real tokens
    response_mask: torch.Tensor  # [B, L] bool, True on response tokens only

    def to(self, device) -> "TokenBatch":
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device))


def collate(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int) -> TokenBatch:
    """Right-pad prompt+response pairs; only response tokens are marked for the loss and CLL."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    length = max(len(p) + len(r) for p, r in zip(prompts, responses))
    input_ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
    response_mask = torch.zeros((len(prompts), length), dtype=torch.bool)
    for row, (prompt, response) in enumerate(zip(prompts, responses)):
        n_prompt, n_total = len(prompt), len(prompt) + len(response)
        input_ids[row, :n_total] = torch.tensor(list(prompt) + list(response), dtype=torch.long)
        attention_mask[row, :n_total] = 1
        response_mask[row, n_prompt:n_total] = True
    return TokenBatch(input_ids, attention_mask, response_mask)


def collate_samples(samples: Sequence[Sample], pad_id: int) -> TokenBatch:
    return collate([s.prompt_token_ids for s in samples], [s.response_token_ids for s in samples], pad_id)


@torch.no_grad()
def teacher_forced_logprobs(model: torch.nn.Module, token_ids: Sequence[int], pad_id: int) -> list[float]:
    """log p of token_ids[1:] under `model`, each given all tokens before it."""
    device = next(model.parameters()).device
    batch = collate([token_ids[:1]], [token_ids[1:]], pad_id).to(device)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    stats = response_token_stats(logits, batch.input_ids, batch.response_mask)
    return stats.logprobs[stats.mask].tolist()
