"""Hinted Decoding: two streams of one model, one shared sampled sequence.

"Hinted Decoding" of the seed paper (docs/algorithms.md section 3) rewrites a
reference answer in the model's own words. Two contexts decode in lockstep:

- hint stream p: a prompt with the question AND the reference answer, plus the
  model's own analysis up to a header (the caller builds it);
- student stream q: the plain prompt, question only.

Every step, lambda = clamp(beta * H(p) / log|V|, 0, 1) and the next token is
sampled (top-p, then temperature) from the geometric mixture
(1 - lambda) * log p + lambda * log q, renormalised. The token is appended to
both streams. Where the hint stream is sure (low entropy) the answer's content
wins; where it hesitates, the student's own phrasing does. The first token
comes from p alone; once the final-answer marker (e.g. ``\\boxed{``) is in the
text, every later token comes from q alone. The authors' release
(`HintedDecoding/sampling/hinted_decoding.py`) runs this with transformers,
one sequence at a time; this module batches it and uses a KV cache.

Why a transformers replica and not vLLM: each step needs the FULL next-token
distributions of two different contexts, in lockstep, before either samples.
vLLM's V1 logits processors see one request's row of logits at a time, and
its scheduler may split, preempt or chunk-prefill the two requests of a pair
independently, so no public interface keeps the pair in step. The rollout
worker's transformers replica (actors/decoding/cll_scorer.py) already holds the policy
and the full logits.

Cost: two streams per generated token. Both go through the model as ONE
forward of 2n rows per step (hint rows first, then student rows), so a batch
of n requests costs about as much as plain decoding of 2n.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class HintedRequest:
    hint_ids: list[int]
    student_ids: list[int]
    seed: int  # per-request sampling seed: the result must not depend on batching


@dataclass
class HintedResult:
    token_ids: list[int]
    lambdas: list[float]  # lambda actually used at each step (0.0 at step 0; 1.0 after the switch)
    switched_at: int | None  # index of the first step decoded from q alone, or None
    finish_reason: str  # "stop" (eos), "length", or "repetition"
    # Per step [V] renormalised mixed log-probs BEFORE top-p/temperature; only when record=True.
    mixed_logprobs: list[torch.Tensor] | None = None
    # Per step, that mixture's log-prob of the token drawn: what the engine path (engine_hinted.py) records too.
    chosen_logprobs: list[float] | None = None


@dataclass
class HintedSampling:
    beta: float = 0.7
    top_p: float = 0.95
    temperature: float = 0.3
    max_new_tokens: int = 256
    marker: str | None = "\\boxed{"
    repeat_ngram: int = 30
    repeat_times: int = 5


def entropy_lambda(hint_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """lambda = clamp(beta * H(p) / log|V|, 0, 1).

    Args:
        hint_logprobs: [n, V] log p of the hint stream (normalised).
        beta: mixture strength; 0 gives lambda = 0 (hint stream alone).

    Returns:
        [n] fp32 lambda per row.
    """
    probs = hint_logprobs.exp()
    # 0 * log 0 = 0: a token with p = 0 adds nothing to the entropy.
    entropy = -torch.where(probs > 0, probs * hint_logprobs, torch.zeros_like(probs)).sum(-1)
    return (beta * entropy / math.log(hint_logprobs.shape[-1])).clamp(0.0, 1.0)


def mix_logprobs(hint_logprobs: torch.Tensor, student_logprobs: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Renormalised geometric mixture log_softmax((1 - lam) * log p + lam * log q).

    Args:
        hint_logprobs, student_logprobs: [n, V] normalised log-probs.
        lam: [n] weight of the student stream.

    Returns:
        [n, V] fp32 normalised mixed log-probs. lam = 0 gives log p, lam = 1 log q.
    """
    lam = lam.unsqueeze(-1)
    return torch.log_softmax((1.0 - lam) * hint_logprobs + lam * student_logprobs, dim=-1)


def mixture_logprobs(
    hint_logits: torch.Tensor, student_logits: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ordinary mixing step from raw logits (no first-token or marker rules).

    Args:
        hint_logits, student_logits: [n, V] next-token logits of the two streams.
        beta: mixture strength.

    Returns:
        (mixed, lam): [n, V] renormalised mixed log-probs and [n] lambda.
    """
    hint = torch.log_softmax(hint_logits.float(), dim=-1)
    student = torch.log_softmax(student_logits.float(), dim=-1)
    lam = entropy_lambda(hint, beta)
    return mix_logprobs(hint, student, lam), lam


def top_p_temperature_probs(logprobs_row: torch.Tensor, top_p: float, temperature: float) -> torch.Tensor:
    """The distribution one step samples from: nucleus at temperature 1, THEN temperature.

    Args:
        logprobs_row: [V] normalised log-probs (or [n, V]: each row on its own).
        top_p: keep the smallest set of most probable tokens whose probability
            sums to >= top_p (always at least one token).
        temperature: > 0; the kept log-probs are divided by it and renormalised.

    Returns:
        [V] (or [n, V]) fp32 probabilities in vocabulary order, 0 outside the kept set.
    """
    logprobs_row = logprobs_row.float()
    kept = nucleus_mask(logprobs_row, top_p)
    scaled = torch.where(kept, logprobs_row / temperature, torch.full_like(logprobs_row, -math.inf))
    return torch.softmax(scaled, dim=-1)


def nucleus_mask(logprobs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Bool mask of the top-p set of each [..., V] log-prob row (at least its most probable token)."""
    if top_p >= 1.0:
        # Everything; the float32 cumulative sum can reach 1 before the last token.
        return torch.ones_like(logprobs, dtype=torch.bool)
    # Stable sort: equal probabilities keep vocabulary order, so the set is deterministic.
    sorted_logprobs, order = torch.sort(logprobs, dim=-1, descending=True, stable=True)
    sorted_probs = sorted_logprobs.exp()
    # A token is kept while the mass strictly before it is still short of top_p.
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    keep_sorted = mass_before < top_p
    keep_sorted[..., 0] = True
    return torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)


def sample_top_p_temperature(
    logprobs_row: torch.Tensor, top_p: float, temperature: float, generator: torch.Generator | None
) -> int:
    """Draw one token id from a [V] log-prob row: top-p, then temperature.

    temperature == 0 is greedy: the argmax (always inside the nucleus). The draw
    is `torch.multinomial(probs, 1, generator=generator)` on the vocabulary-order
    probabilities of `top_p_temperature_probs`, so it is reproducible per generator.
    """
    if temperature == 0:
        return int(torch.argmax(logprobs_row))
    probs = top_p_temperature_probs(logprobs_row, top_p, temperature)
    return int(torch.multinomial(probs, 1, generator=generator))


class RowState:
    """Per-request bookkeeping while its batch decodes."""

    def __init__(self, request: HintedRequest, device: torch.device, sampling: HintedSampling, record: bool):
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(request.seed)
        self.tokens: list[int] = []
        self.lambdas: list[float] = []
        self.switched_at: int | None = None
        self.finish_reason: str | None = None
        self.mixed: list[torch.Tensor] | None = [] if record else None
        self.chosen: list[float] = []
        self.ngram_counts: Counter = Counter()
        self.sampling = sampling

    def append(self, token: int, eos_ids: set[int], tokenizer) -> None:
        """Add one sampled token, then decide whether the row stops or switches to q."""
        s = self.sampling
        self.tokens.append(token)
        step = len(self.tokens) - 1
        repeated = False
        if len(self.tokens) >= s.repeat_ngram:
            # Count every n-gram once as it completes: the tail n-gram's count is
            # then its number of occurrences (overlaps included) so far.
            ngram = tuple(self.tokens[-s.repeat_ngram :])
            self.ngram_counts[ngram] += 1
            repeated = self.ngram_counts[ngram] >= s.repeat_times
        if token in eos_ids:
            self.finish_reason = "stop"
        elif repeated:
            self.finish_reason = "repetition"
        elif len(self.tokens) >= s.max_new_tokens:
            self.finish_reason = "length"
        elif s.marker is not None and self.switched_at is None:
            # Checked every step, so a new marker ends in the newest token: decoding a short
            # tail (every token is at least one character) is enough, and keeps a step O(1).
            tail = self.tokens[-(len(s.marker) + 8) :]
            if s.marker in tokenizer.decode(tail, skip_special_tokens=False):
                self.switched_at = step + 1

    def result(self) -> HintedResult:
        return HintedResult(self.tokens, self.lambdas, self.switched_at, self.finish_reason, self.mixed, self.chosen)


@torch.no_grad()
def hinted_decode(
    model,
    tokenizer,
    requests: list[HintedRequest],
    sampling: HintedSampling,
    *,
    eos_ids: set[int],
    pad_id: int,
    batch_size: int = 16,
    record: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[HintedResult]:
    """Decode every request with Hinted Decoding; results in request order.

    Up to `batch_size` requests decode together. A request's result depends only
    on its own contexts and seed, not on its batch or position in it. `on_batch(requests, tokens)`
    hears of each finished batch (the job's progress lines).
    """
    if sampling.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {sampling.max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 < sampling.top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {sampling.top_p}")
    if sampling.temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {sampling.temperature}")
    results: list[HintedResult | None] = [None] * len(requests)
    # Similar lengths together waste less compute on left padding.
    order = sorted(range(len(requests)), key=lambda i: max(len(requests[i].hint_ids), len(requests[i].student_ids)))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        decoded = _decode_batch(model, tokenizer, [requests[i] for i in chunk], sampling, eos_ids, pad_id, record)
        for i, result in zip(chunk, decoded):
            results[i] = result
        if on_batch:
            on_batch(len(decoded), sum(len(r.token_ids) for r in decoded))
    return results


def _decode_batch(model, tokenizer, requests, sampling, eos_ids, pad_id, record) -> list[HintedResult]:
    from transformers import DynamicCache

    device = next(model.parameters()).device
    n = len(requests)
    rows = [RowState(r, device, sampling, record) for r in requests]

    # 2n contexts, hint rows first then student rows, left-padded so every
    # row's next-token logits sit in the last column.
    contexts = [r.hint_ids for r in requests] + [r.student_ids for r in requests]
    if any(len(c) == 0 for c in contexts):
        raise ValueError("hint_ids and student_ids must be non-empty")
    length = max(len(c) for c in contexts)
    input_ids = torch.full((2 * n, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((2 * n, length), dtype=torch.long)
    for row, context in enumerate(contexts):
        input_ids[row, length - len(context) :] = torch.tensor(context, dtype=torch.long)
        attention_mask[row, length - len(context) :] = 1
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    # Positions count real tokens only, so left padding shifts nothing (it would
    # not matter to RoPE, which is relative, but does to learned absolute positions).
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)

    alive = list(range(n))  # request index of each hint row still in the cache
    step = 0
    while True:
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        cache = out.past_key_values
        logits = out.logits[:, -1, :].float()
        k = len(alive)
        hint = torch.log_softmax(logits[:k], dim=-1)
        student = torch.log_softmax(logits[k:], dim=-1)
        lam = entropy_lambda(hint, sampling.beta)
        if step == 0:
            lam = torch.zeros_like(lam)  # the first token comes from the hint stream alone
        else:
            switched = [rows[i].switched_at is not None for i in alive]
            if any(switched):  # after the final-answer marker: the student stream alone
                lam = torch.where(torch.tensor(switched, device=lam.device), torch.ones_like(lam), lam)
        mixed = mix_logprobs(hint, student, lam)
        lam_values = lam.tolist()

        # The same per-row distribution sample_top_p_temperature builds, for all rows in one go;
        # only the draw is per row, with the row's own generator.
        if sampling.temperature == 0:
            drawn = torch.argmax(mixed, dim=-1).tolist()
        else:
            probs = top_p_temperature_probs(mixed, sampling.top_p, sampling.temperature)
            drawn = [int(torch.multinomial(probs[j], 1, generator=rows[i].generator)) for j, i in enumerate(alive)]
        next_tokens = []
        chosen = mixed.gather(-1, torch.tensor(drawn, device=mixed.device).unsqueeze(-1)).squeeze(-1).tolist()
        for j, i in enumerate(alive):
            state = rows[i]
            state.lambdas.append(lam_values[j])
            state.chosen.append(chosen[j])
            if state.mixed is not None:
                state.mixed.append(mixed[j].cpu())
            state.append(drawn[j], eos_ids, tokenizer)
            next_tokens.append(drawn[j])
        step += 1

        # Drop finished rows from the batch and the cache (both of their streams).
        keep = [j for j, i in enumerate(alive) if rows[i].finish_reason is None]
        if not keep:
            break
        if len(keep) < k:
            index = torch.tensor(keep + [k + j for j in keep], device=device)
            cache.batch_select_indices(index)
            attention_mask = attention_mask[index]
            position_ids = position_ids[index]
            alive = [alive[j] for j in keep]
            next_tokens = [next_tokens[j] for j in keep]

        # The sampled token goes to BOTH streams.
        input_ids = torch.tensor(next_tokens * 2, dtype=torch.long, device=device).unsqueeze(-1)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=-1)
        position_ids = position_ids[:, -1:] + 1
    return [state.result() for state in rows]
