"""The one place where (prompt, response) becomes tensors (the records themselves: jobs/core/records.py).

The rollout workers' CLL scorer, the learners and the frozen reference all call
`collate`, so the tokens a sample is scored on are the tokens it is trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from jobs.core.records import Pair, Sample
from losses.token_stats import TokenStats, response_token_stats


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # [B, L] long, right-padded
    attention_mask: torch.Tensor  # [B, L] long, 1 on real tokens
    response_mask: torch.Tensor  # [B, L] bool, True on response tokens only

    def to(self, device) -> "TokenBatch":
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device))

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def padded_tokens(self) -> int:
        """Positions the forward pass computes, padding included."""
        return self.input_ids.numel()


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


def collate_pairs(pairs: Sequence[Pair], pad_id: int) -> TokenBatch:
    """2B rows: the B chosen sequences, then the B rejected ones, in one forward pass."""
    prompts = [p.prompt_token_ids for p in pairs] * 2
    responses = [p.chosen_token_ids for p in pairs] + [p.rejected_token_ids for p in pairs]
    return collate(prompts, responses, pad_id)


def response_stats(model: torch.nn.Module, batch: TokenBatch) -> TokenStats:
    """One forward pass and the per-token stats of the batch's response tokens (losses/token_stats.py).

    The vocabulary projection and its log-softmax run only from the first position that
    predicts a response token in any row: positions before the shortest prompt never do, and
    for a small model with a large vocabulary they cost about as much as the layers (SmolLM2:
    49k words over 576 dims). The numbers are those of response_token_stats on the full logits.
    """
    rows_with_response = batch.response_mask.any(dim=1)
    first_response = batch.response_mask.int().argmax(dim=1)[rows_with_response]
    start = max(0, int(first_response.min()) - 1) if len(first_response) else 0
    logits = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=batch.input_ids.shape[1] - start
    ).logits
    return response_token_stats(logits, batch.input_ids[:, start:], batch.response_mask[:, start:])


@torch.no_grad()
def teacher_forced_logprobs(model: torch.nn.Module, token_ids: Sequence[int], pad_id: int) -> list[float]:
    """log p of token_ids[1:] under `model`, each given all tokens before it."""
    device = next(model.parameters()).device
    stats = response_stats(model, collate([token_ids[:1]], [token_ids[1:]], pad_id).to(device))
    return stats.logprobs[stats.mask].tolist()
