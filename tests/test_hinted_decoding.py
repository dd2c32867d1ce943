"""Hinted Decoding (actors/decoding/hinted_decoding.py) against naive loops written here.

The naive loops run the whole growing sequence through the model every step
(no KV cache, no padding, no batching) and compute lambda and the mixture from
the formula in docs/algorithms.md section 3 themselves, in float64. Only the final
draw uses the module's `sample_top_p_temperature`, which is checked separately
against a hand computation.
"""

from __future__ import annotations

import math

import pytest
import torch

from actors.decoding.hinted_decoding import (
    HintedRequest,
    HintedSampling,
    hinted_decode,
    nucleus_mask,
    sample_top_p_temperature,
    top_p_temperature_probs,
)

QUESTIONS = [
    "What is 2+3?",
    "Compute the sum of the first ten odd numbers, then double it.",
    "Is 91 prime?",
    "A train travels 60 km in 45 minutes. What is its average speed in km per hour?",
    "Solve x^2 = 16.",
]
ANSWERS = ["5", "200", "No, 91 = 7 * 13", "80 km/h", "x = 4 or x = -4"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The tiny model's ops are too small to gain from threads; on a shared,
    # loaded machine the thread pool's spinning makes them ~10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    return model, tokenizer


def chat_ids(tokenizer, text: str) -> list[int]:
    messages = [{"role": "user", "content": text}]
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"])


def make_requests(tokenizer, count: int = 5) -> list[HintedRequest]:
    """Hint and student contexts of different lengths, so left padding is exercised."""
    requests = []
    for i, (question, answer) in enumerate(zip(QUESTIONS[:count], ANSWERS[:count])):
        hint = chat_ids(tokenizer, f"{question}\nReference answer: {answer}\nRewrite it.")
        hint += tokenizer.encode("Analysis: check the answer. " * (i % 3) + "Reasoning:")
        requests.append(HintedRequest(hint_ids=hint, student_ids=chat_ids(tokenizer, question), seed=100 + i))
    return requests


@torch.no_grad()
def last_logits(model, ids: list[int]) -> torch.Tensor:
    """[V] float64 next-token logits of one unpadded sequence, full forward, no cache."""
    return model(torch.tensor([ids])).logits[0, -1].double()


def naive_hinted(model, tokenizer, request: HintedRequest, s: HintedSampling, eos_ids: set[int]) -> dict:
    generator = torch.Generator().manual_seed(request.seed)
    tokens, lambdas, mixed, student, switched_at, finish = [], [], [], [], None, None
    for step in range(s.max_new_tokens):
        log_p = torch.log_softmax(last_logits(model, request.hint_ids + tokens), -1)
        log_q = torch.log_softmax(last_logits(model, request.student_ids + tokens), -1)
        entropy = -(log_p.exp() * log_p).sum()
        lam = min(max(s.beta * float(entropy) / math.log(log_p.shape[0]), 0.0), 1.0)
        if step == 0:
            lam = 0.0
        elif switched_at is not None:
            lam = 1.0
        m = (1 - lam) * log_p + lam * log_q
        m = m - torch.logsumexp(m, -1)
        token = sample_top_p_temperature(m.float(), s.top_p, s.temperature, generator)
        tokens.append(token)
        lambdas.append(lam)
        mixed.append(m)
        student.append(log_q)
        tail = tokens[-s.repeat_ngram :]
        occurrences = sum(
            tokens[start : start + s.repeat_ngram] == tail for start in range(len(tokens) - s.repeat_ngram + 1)
        )
        if token in eos_ids:
            finish = "stop"
        elif len(tokens) >= s.repeat_ngram and occurrences >= s.repeat_times:
            finish = "repetition"
        elif len(tokens) == s.max_new_tokens:
            finish = "length"
        if finish:
            break
        if s.marker is not None and switched_at is None and s.marker in tokenizer.decode(tokens):
            switched_at = step + 1
    return dict(tokens=tokens, lambdas=lambdas, mixed=mixed, student=student, switched_at=switched_at, finish=finish)


def assert_matches_naive(model, tokenizer, requests, sampling, eos_ids, batch_size) -> tuple[list, list]:
    """Batched, cached hinted_decode equals the naive loop: tokens, lambdas, distributions, stops."""
    results = hinted_decode(
        model,
        tokenizer,
        requests,
        sampling,
        eos_ids=eos_ids,
        pad_id=tokenizer.pad_token_id,
        batch_size=batch_size,
        record=True,
    )
    refs = []
    for request, result in zip(requests, results):
        ref = naive_hinted(model, tokenizer, request, sampling, eos_ids)
        assert result.token_ids == ref["tokens"]
        assert result.finish_reason == ref["finish"]
        assert result.switched_at == ref["switched_at"]
        assert result.lambdas == pytest.approx(ref["lambdas"], abs=1e-6)
        assert len(result.mixed_logprobs) == len(ref["mixed"])
        for ours, theirs in zip(result.mixed_logprobs, ref["mixed"]):
            assert float((ours.double() - theirs).abs().max()) < 1e-5
        assert result.lambdas[0] == 0.0
        assert all(0.0 < lam < 1.0 for lam in result.lambdas[1 : result.switched_at])
        refs.append(ref)
    return results, refs


def test_matches_naive_reference_with_switch_and_early_stops(tiny):
    model, tokenizer = tiny
    requests = make_requests(tokenizer)
    lengths = {len(r.hint_ids) for r in requests} | {len(r.student_ids) for r in requests}
    assert len(lengths) >= 6
    eos = tokenizer.eos_token_id

    # Discovery run: the random tiny model never writes \boxed{, so the marker is
    # the text of a token request 0 emits at step 3, and one "EOS" is a token
    # request 2 emits first at step >= 5: an early stop of the FIRST row of a batch
    # (length-sorted batches of 2: [0, 4], [2, 1], [3]), so finished rows
    # leave the batch and the cache while others go on.
    probe = HintedSampling(max_new_tokens=16, marker=None)
    first = hinted_decode(model, tokenizer, requests, probe, eos_ids={eos}, pad_id=tokenizer.pad_token_id, batch_size=2)
    marker = tokenizer.decode([first[0].token_ids[3]])
    assert marker.strip()
    stop_step = next(t for t in range(5, 16) if first[2].token_ids[t] not in first[2].token_ids[:t])
    early_eos = first[2].token_ids[stop_step]
    eos_ids = {eos, early_eos}

    sampling = HintedSampling(max_new_tokens=16, marker=marker)
    results, refs = assert_matches_naive(model, tokenizer, requests, sampling, eos_ids, batch_size=2)

    switched, ref = results[0], refs[0]
    assert switched.switched_at is not None and switched.switched_at <= 4
    assert len(switched.token_ids) > switched.switched_at + 3
    for step in range(switched.switched_at, len(switched.token_ids)):
        assert switched.lambdas[step] == 1.0
        assert float((switched.mixed_logprobs[step].double() - ref["student"][step]).abs().max()) < 1e-5
    assert results[2].finish_reason == "stop" and len(results[2].token_ids) == stop_step + 1
    assert len(results[1].token_ids) > stop_step + 1


def test_absolute_positions_match_naive(tiny):
    """A model with learned absolute positions (GPT-2): left padding must not shift them.

    Llama's rotary positions are relative, so a constant per-row position
    offset would not change its outputs; GPT-2's would.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tokenizer = tiny
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=64, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(config).eval()
    requests = make_requests(tokenizer, count=4)
    sampling = HintedSampling(max_new_tokens=6, marker=None)
    assert_matches_naive(model, tokenizer, requests, sampling, {tokenizer.eos_token_id}, batch_size=2)


def test_top_p_then_temperature_by_hand():
    # Vocabulary order shuffled so the kept set must be mapped back from sorted order.
    probs = torch.tensor([0.06, 0.3, 0.04, 0.5, 0.1])
    logprobs = probs.log()
    assert nucleus_mask(logprobs, 0.85).tolist() == [False, True, False, True, True]
    assert nucleus_mask(logprobs, 0.4).tolist() == [False, False, False, True, False]
    assert nucleus_mask(logprobs, 1.0).all()

    # Temperature 0.5 on the kept {0.5, 0.3, 0.1}: proportional to p^2.
    expected = torch.tensor([0.0, 0.09, 0.0, 0.25, 0.01]) / 0.35
    torch.testing.assert_close(top_p_temperature_probs(logprobs, 0.85, 0.5), expected)
    torch.testing.assert_close(top_p_temperature_probs(logprobs, 1.0, 1.0), probs)

    generator = torch.Generator().manual_seed(0)
    draws = [sample_top_p_temperature(logprobs, 0.85, 0.5, generator) for _ in range(3000)]
    counts = torch.bincount(torch.tensor(draws), minlength=5).double() / len(draws)
    assert counts[0] == 0 and counts[2] == 0
    assert torch.allclose(counts, expected.double(), atol=0.03)
    # Same seed, same draws.
    again = torch.Generator().manual_seed(0)
    assert [sample_top_p_temperature(logprobs, 0.85, 0.5, again) for _ in range(50)] == draws[:50]

    assert sample_top_p_temperature(logprobs, 0.85, 0.0, None) == 3
    assert sample_top_p_temperature(logprobs, 0.01, 0.0, None) == 3


def test_beta_zero_is_plain_sampling_from_hint_stream(tiny):
    model, tokenizer = tiny
    requests = make_requests(tokenizer, count=3)
    sampling = HintedSampling(beta=0.0, top_p=1.0, temperature=1.0, max_new_tokens=12, marker=None)
    results = hinted_decode(
        model, tokenizer, requests, sampling, eos_ids={tokenizer.eos_token_id}, pad_id=tokenizer.pad_token_id
    )
    for request, result in zip(requests, results):
        generator = torch.Generator().manual_seed(request.seed)
        tokens = []
        for _ in range(sampling.max_new_tokens):
            probs = torch.softmax(last_logits(model, request.hint_ids + tokens).float(), -1)
            tokens.append(int(torch.multinomial(probs, 1, generator=generator)))
            if tokens[-1] == tokenizer.eos_token_id:
                break
        assert result.token_ids == tokens
        assert result.lambdas == [0.0] * len(tokens)


def test_repetition_eos_and_length(tiny):
    model, tokenizer = tiny
    request = make_requests(tokenizer, count=1)[0]
    pad_id = tokenizer.pad_token_id

    def greedy(max_new_tokens, eos_ids, **kw):
        s = HintedSampling(temperature=0.0, max_new_tokens=max_new_tokens, marker=None, **kw)
        return hinted_decode(model, tokenizer, [request], s, eos_ids=eos_ids, pad_id=pad_id)[0]

    free = greedy(40, set())  # default 30-gram x 5: never triggers in 40 tokens
    assert free.finish_reason == "length" and len(free.token_ids) == 40
    short = greedy(7, set())
    assert short.finish_reason == "length" and short.token_ids == free.token_ids[:7]

    # First position where the 2-gram ending there has occurred 3 times (overlaps count).
    ids = free.token_ids
    stop = next(
        t
        for t in range(1, len(ids))
        if sum(ids[s : s + 2] == ids[t - 1 : t + 1] for s in range(t)) >= 3
    )
    repeated = greedy(40, set(), repeat_ngram=2, repeat_times=3)
    assert repeated.finish_reason == "repetition"
    assert repeated.token_ids == ids[: stop + 1]

    # EOS: a token greedy emits at step 5 (and not before) ends the row and is kept.
    step = next(t for t in range(5, len(ids)) if ids[t] not in ids[:t])
    stopped = greedy(40, {ids[step]})
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == ids[: step + 1]


def test_batching_and_order_invariance(tiny):
    model, tokenizer = tiny
    requests = make_requests(tokenizer)
    marker = tokenizer.decode([tokenizer.encode(" the")[0]])
    sampling = HintedSampling(max_new_tokens=20, marker=marker)
    kwargs = dict(eos_ids={tokenizer.eos_token_id}, pad_id=tokenizer.pad_token_id)
    one = hinted_decode(model, tokenizer, requests, sampling, batch_size=1, **kwargs)
    four = hinted_decode(model, tokenizer, requests, sampling, batch_size=4, **kwargs)
    backwards = hinted_decode(model, tokenizer, requests[::-1], sampling, batch_size=5, **kwargs)[::-1]
    for a, b, c in zip(one, four, backwards):
        assert a.token_ids == b.token_ids == c.token_ids
        assert a.switched_at == b.switched_at == c.switched_at
        assert b.lambdas == pytest.approx(a.lambdas, abs=1e-6)
    # Different seeds give different samples (the per-request generator is used).
    assert len({tuple(r.token_ids) for r in one}) == len(one)
