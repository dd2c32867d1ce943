"""Forgetting metrics (actors/forgetting.py) and their out-of-domain text (jobs/core/ood_text.py).

Pure math against naive loops and numpy, then the tiny model against itself and
against a deliberately damaged copy. No Ray, no vLLM.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from jobs.core.errors import DataError
from jobs.core.ood_text import STDLIB_DOCS, ood_passages
from actors.forgetting import HiddenMoments, centroid_shift, counted_positions, token_kl, token_rank_shift
from actors.forgetting_accumulator import ForgettingAccumulator, forgetting_stats

# Right padding, with a row of one real token (no counted position) and a full row.
ATTENTION = torch.tensor(
    [
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 0],
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
    ]
)


def _random_logits(seed: int, shape=(4, 6, 9), integer: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if integer:  # small integers: many ties, in both models' rankings
        return torch.randint(-2, 3, shape, generator=g).float()
    return torch.randn(shape, generator=g) * 2.5


# --------------------------------------------------------------------------- positions


def test_counted_positions_are_real_positions_but_the_last():
    expected = torch.tensor(
        [
            [1, 1, 1, 1, 1, 0],
            [1, 1, 1, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [1, 0, 0, 0, 0, 0],
        ]
    ).bool()
    assert torch.equal(counted_positions(ATTENTION), expected)
    with pytest.raises(ValueError, match="right padded"):
        counted_positions(torch.tensor([[0, 0, 1, 1]]))  # left padding


# --------------------------------------------------------------------------- KL and rank against loops


def _naive_kl(p_logits: list[float], q_logits: list[float]) -> float:
    def log_softmax(row):
        m = max(row)
        log_z = m + math.log(sum(math.exp(x - m) for x in row))
        return [x - log_z for x in row]

    lp, lq = log_softmax(p_logits), log_softmax(q_logits)
    return sum(math.exp(a) * (a - b) for a, b in zip(lp, lq))


def _naive_rank(base_row: list[float], current_row: list[float]) -> int:
    top = 0
    for v, value in enumerate(current_row):  # first maximum = lowest id among ties
        if value > current_row[top]:
            top = v
    return 1 + sum(1 for value in base_row if value > base_row[top])


def test_token_kl_matches_python_loop():
    base, current = _random_logits(0), _random_logits(1)
    mask = counted_positions(ATTENTION)
    out = token_kl(base, current, mask)
    total, n = 0.0, 0
    for b in range(base.shape[0]):
        for t in range(base.shape[1]):
            if not mask[b, t]:
                assert out["per_token"][b, t].item() == 0.0
                continue
            expected = _naive_kl(base[b, t].tolist(), current[b, t].tolist())
            assert out["per_token"][b, t].item() == pytest.approx(expected, abs=1e-12)
            total, n = total + expected, n + 1
    assert out["per_token"].dtype == torch.float64
    assert int(out["positions"]) == n == 9
    assert out["kl_sum"].item() == pytest.approx(total, abs=1e-11)
    assert out["kl_mean"].item() == pytest.approx(total / n, abs=1e-12)
    assert out["kl_mean"].item() > 0.1  # different random logits: far from 0
    # Not symmetric: it is KL(base || current), not the reverse.
    reverse = token_kl(current, base, mask)["kl_mean"].item()
    assert abs(reverse - out["kl_mean"].item()) > 1e-3


def test_token_kl_handles_minus_infinity():
    base, current = _random_logits(2, (1, 2, 5)), _random_logits(3, (1, 2, 5))
    mask = torch.ones(1, 2, dtype=torch.bool)
    # Token 0 impossible under both models (row 0): contributes nothing.
    base[0, 0, 0] = current[0, 0, 0] = float("-inf")
    # Token 1 possible under base, impossible under current (row 1): infinite KL.
    current[0, 1, 1] = float("-inf")
    per_token = token_kl(base, current, mask)["per_token"][0]
    expected = _naive_kl(base[0, 0, 1:].tolist(), current[0, 0, 1:].tolist())
    assert per_token[0].item() == pytest.approx(expected, abs=1e-12)
    assert per_token[1].item() == float("inf")


@pytest.mark.parametrize("integer", [False, True], ids=["distinct", "ties"])
def test_token_rank_shift_matches_python_loop(integer):
    base, current = _random_logits(4, integer=integer), _random_logits(5, integer=integer)
    mask = counted_positions(ATTENTION)
    out = token_rank_shift(base, current, mask)
    ranks = []
    for b in range(base.shape[0]):
        for t in range(base.shape[1]):
            if mask[b, t]:
                expected = _naive_rank(base[b, t].tolist(), current[b, t].tolist())
                assert out["per_token"][b, t].item() == expected, (b, t)
                ranks.append(expected)
            else:
                assert out["per_token"][b, t].item() == 0
    assert int(out["positions"]) == len(ranks)
    assert int(out["rank_sum"]) == sum(ranks)
    assert int(out["rank_gt1"]) == sum(r > 1 for r in ranks)
    assert out["rank_mean"].item() == pytest.approx(sum(ranks) / len(ranks))
    assert out["rank_gt1_frac"].item() == pytest.approx(sum(r > 1 for r in ranks) / len(ranks))
    assert out["rank_mean"].item() > 1.5  # unrelated logits disagree


def test_rank_tie_rules():
    # current's maxima at ids 1 and 3 -> id 1; base ties id 1 with id 0 and beats the rest.
    base = torch.tensor([[[5.0, 5.0, 1.0, 9.0]]])
    current = torch.tensor([[[0.0, 7.0, 2.0, 7.0]]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    assert token_rank_shift(base, current, mask)["per_token"].item() == 2  # only id 3 is strictly greater
    base_tied_top = torch.tensor([[[9.0, 9.0, 1.0, 9.0]]])
    assert token_rank_shift(base_tied_top, current, mask)["per_token"].item() == 1  # ties never push down


# --------------------------------------------------------------------------- centroid shift against numpy


def _hidden_pair(seed: int, n: int = 300, h: int = 12):
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(h, h)))
    scales = np.linspace(5.0, 0.5, h)  # well-separated principal components
    base = rng.normal(size=(n, h)) * scales @ rotation.T + rng.normal(size=h)
    current = base + rng.normal(size=h) * 2.0 + rng.normal(size=(n, h)) * 0.3
    return base, current


def _numpy_centroid_shift(base: np.ndarray, current: np.ndarray):
    mean = base.mean(0)
    _, _, vt = np.linalg.svd(base - mean, full_matrices=False)
    pcs = vt[:2].T
    base_centroid = (base - mean).mean(0) @ pcs
    current_centroid = (current - mean).mean(0) @ pcs
    return float(np.linalg.norm(current_centroid - base_centroid)), base_centroid, current_centroid, pcs


def test_centroid_shift_matches_numpy_svd():
    base, current = _hidden_pair(0)
    out = centroid_shift(torch.tensor(base, dtype=torch.float32), torch.tensor(current, dtype=torch.float32))
    expected, base_c, current_c, pcs = _numpy_centroid_shift(
        base.astype(np.float32).astype(np.float64), current.astype(np.float32).astype(np.float64)
    )
    assert out["centroid_shift"].item() == pytest.approx(expected, rel=1e-9)
    assert expected > 0.5  # the offset is not orthogonal to the plane by chance
    np.testing.assert_allclose(out["base_centroid"].numpy(), base_c, atol=1e-9)
    # A principal component is defined up to sign: coordinates may flip, the distance may not.
    np.testing.assert_allclose(np.abs(out["current_centroid"].numpy()), np.abs(current_c), rtol=1e-9)
    np.testing.assert_allclose(np.abs(out["components"].numpy()), np.abs(pcs), atol=1e-9)
    # Fitted on the base states only: swapping the roles changes the plane and the answer.
    swapped, *_ = _numpy_centroid_shift(current, base)
    assert abs(swapped - expected) > 1e-3


def test_hidden_moments_merge_equals_one_pass():
    base, current = (torch.tensor(a) for a in _hidden_pair(1, n=257))
    whole = centroid_shift(base, current)
    merged = HiddenMoments.from_states(base[:0], current[:0])
    for start, stop in [(0, 1), (1, 100), (100, 101), (101, 257)]:
        merged = merged.merge(HiddenMoments.from_states(base[start:stop], current[start:stop]))
    parts = merged.centroid_shift()
    assert merged.count == 257
    assert parts["centroid_shift"].item() == pytest.approx(whole["centroid_shift"].item(), rel=1e-10)
    torch.testing.assert_close(parts["current_centroid"], whole["current_centroid"], rtol=1e-9, atol=1e-9)


def test_centroid_shift_needs_three_positions():
    with pytest.raises(ValueError, match="at least 3"):
        centroid_shift(torch.zeros(2, 4), torch.ones(2, 4))


def test_accumulator_batches_equal_one_batch():
    g = torch.Generator().manual_seed(7)
    base_logits, current_logits = torch.randn(6, 5, 11, generator=g), torch.randn(6, 5, 11, generator=g)
    base_hidden, current_hidden = torch.randn(6, 5, 8, generator=g), torch.randn(6, 5, 8, generator=g)
    attention = torch.tensor([[1] * k + [0] * (5 - k) for k in (5, 3, 1, 4, 2, 5)])
    mask = counted_positions(attention)
    whole = ForgettingAccumulator()
    whole.add(base_logits, current_logits, base_hidden, current_hidden, mask)
    first, second = ForgettingAccumulator(), ForgettingAccumulator()
    first.add(base_logits[:2], current_logits[:2], base_hidden[:2], current_hidden[:2], mask[:2])
    second.add(base_logits[2:], current_logits[2:], base_hidden[2:], current_hidden[2:], mask[2:])
    combined = first.merge(second).result()
    expected = whole.result()
    assert combined["positions"] == expected["positions"] == int(mask.sum()) == 14
    for key in ("forget_kl", "forget_rank_mean", "forget_rank_gt1", "forget_centroid_shift"):
        assert combined[key] == pytest.approx(expected[key], rel=1e-10), key
    # And the centroid shift is the one of the counted positions only.
    direct = centroid_shift(base_hidden[mask], current_hidden[mask])["centroid_shift"].item()
    assert expected["forget_centroid_shift"] == pytest.approx(direct, rel=1e-10)
    assert expected["forget_kl"] == pytest.approx(token_kl(base_logits, current_logits, mask)["kl_mean"].item())


# --------------------------------------------------------------------------- the tiny model


REPEATED = "the the the the answer answer answer is is is " * 6


@pytest.fixture(scope="module")
def models(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    same = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()  # a separate copy

    ids = tokenizer(REPEATED, return_tensors="pt").input_ids

    def damage(lr: float, steps: int):
        # Plain next-token training on one repeated string, nothing like the eval text.
        torch.manual_seed(0)
        model = copy.deepcopy(base).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(steps):
            loss = model(input_ids=ids, labels=ids).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return model.eval()

    return tokenizer, base, same, damage(1e-2, 10), damage(1e-3, 3)


def _ood_batch(tokenizer, lengths=(48, 40, 33, 27, 48, 20, 12, 45), seed: int = 0):
    """Stdlib-docs passages cut to the given token lengths, right padded."""
    passages = ood_passages(STDLIB_DOCS, len(lengths), seed)
    rows = [tokenizer(p).input_ids[:n] for p, n in zip(passages, lengths)]
    assert [len(r) for r in rows] == list(lengths)  # every passage is long enough
    width = max(lengths)
    input_ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return input_ids, attention


def test_identical_models_show_no_forgetting(models):
    tokenizer, base, same, _, _ = models
    input_ids, attention = _ood_batch(tokenizer)
    stats = forgetting_stats(base, same, input_ids, attention)
    assert set(stats) == {"forget_kl", "forget_rank_mean", "forget_rank_gt1", "forget_centroid_shift", "positions",
                          "forget_ood_nll", "forget_ood_nll_base"}
    assert stats["positions"] == sum(int(n) - 1 for n in attention.sum(1))
    assert stats["forget_ood_nll"] == pytest.approx(stats["forget_ood_nll_base"], abs=1e-9)
    assert abs(stats["forget_kl"]) <= 1e-6
    assert stats["forget_rank_mean"] == 1.0
    assert stats["forget_rank_gt1"] == 0.0
    assert stats["forget_centroid_shift"] <= 1e-5


def test_ood_nll_is_the_mean_next_token_cross_entropy_of_each_model(models):
    """Checked against torch's cross_entropy on each passage alone (no padding), for base and damaged."""
    tokenizer, base, _, damaged, _ = models
    input_ids, attention = _ood_batch(tokenizer)
    stats = forgetting_stats(base, damaged, input_ids, attention)
    for model, key in ((damaged, "forget_ood_nll"), (base, "forget_ood_nll_base")):
        total, count = 0.0, 0
        with torch.no_grad():
            for ids, n in zip(input_ids, attention.sum(1).tolist()):
                logits = model(ids[None, :n]).logits[0]
                total += float(torch.nn.functional.cross_entropy(logits[:-1].double(), ids[1:n], reduction="sum"))
                count += n - 1
        assert stats[key] == pytest.approx(total / count, rel=1e-5)
    assert stats["forget_ood_nll"] > stats["forget_ood_nll_base"]  # the damage made the passages less likely


def test_damaged_model_shows_forgetting(models):
    tokenizer, base, _, damaged, _ = models
    input_ids, attention = _ood_batch(tokenizer)
    stats = forgetting_stats(base, damaged, input_ids, attention)
    # Thresholds far below what the damage gives and far above the identical case's 0.
    assert stats["forget_kl"] > 0.5, stats
    assert stats["forget_rank_mean"] > 20.0, stats
    assert stats["forget_rank_gt1"] > 0.5, stats
    assert stats["forget_centroid_shift"] > 0.5, stats


def test_more_damage_shows_more_forgetting(models):
    tokenizer, base, same, damaged, mildly_damaged = models
    input_ids, attention = _ood_batch(tokenizer, seed=1)
    none, mild, heavy = (forgetting_stats(base, m, input_ids, attention) for m in (same, mildly_damaged, damaged))
    for key in ("forget_kl", "forget_rank_mean", "forget_rank_gt1", "forget_centroid_shift"):
        assert none[key] < mild[key] < heavy[key], (key, none[key], mild[key], heavy[key])


def test_padding_is_excluded_and_batches_combine(models):
    tokenizer, base, _, damaged, _ = models
    input_ids, attention = _ood_batch(tokenizer)
    batched = forgetting_stats(base, damaged, input_ids, attention)
    # Each sequence alone, unpadded, accumulated one by one.
    accumulator = ForgettingAccumulator()
    for row, n in zip(input_ids, attention.sum(1).tolist()):
        accumulator.add_models(base, damaged, row[:n].unsqueeze(0), torch.ones(1, n, dtype=torch.long))
    alone = accumulator.result(details=True)
    assert alone["positions"] == batched["positions"]
    assert alone["forget_kl"] == pytest.approx(batched["forget_kl"], rel=1e-4)
    assert alone["forget_rank_mean"] == pytest.approx(batched["forget_rank_mean"], rel=1e-9)
    assert alone["forget_rank_gt1"] == pytest.approx(batched["forget_rank_gt1"], rel=1e-9)
    assert alone["forget_centroid_shift"] == pytest.approx(batched["forget_centroid_shift"], rel=1e-4)
    assert len(alone["forget_current_centroid"]) == len(alone["forget_pc_explained_variance"]) == 2
    # Padding that leaked in would change the numbers: garbage after each sequence must not matter.
    noisy = input_ids.clone()
    noisy[attention == 0] = 7
    assert forgetting_stats(base, damaged, noisy, attention) == pytest.approx(batched, rel=1e-4)
    # The models' train/eval mode is left as it was.
    damaged.train()
    forgetting_stats(base, damaged, input_ids, attention)
    assert damaged.training and not base.training
    damaged.eval()


# --------------------------------------------------------------------------- out-of-domain text


def test_stdlib_docs_passages_count_and_determinism():
    first = ood_passages(STDLIB_DOCS, 200, seed=0)
    assert len(first) == 200
    assert len(set(first)) == 200
    assert all(p and p == p.strip() and len(p) >= 250 for p in first)
    assert all(len(p) <= 1000 for p in first)
    assert ood_passages(STDLIB_DOCS, 200, seed=0) == first
    assert ood_passages(STDLIB_DOCS, 200, seed=1) != first
    # English prose, not code: mostly letters and spaces.
    text = "".join(first)
    assert sum(c.isalpha() or c.isspace() for c in text) / len(text) > 0.85
    assert ood_passages(STDLIB_DOCS, 3, seed=5, passage_chars=400) != ood_passages(STDLIB_DOCS, 3, seed=5)


def test_user_txt_and_jsonl(tmp_path):
    txt = tmp_path / "passages.txt"
    txt.write_text("First passage,\nstill the first.\n\n  \n\nSecond one.\n\n\nThird.\n")
    got = ood_passages(str(txt), 3, seed=0)
    assert sorted(got) == sorted(["First passage,\nstill the first.", "Second one.", "Third."])
    assert ood_passages(str(txt), 3, seed=0) == got

    jsonl = tmp_path / "passages.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps(row) for row in [{"text": "alpha"}, {"text": "  "}, {"text": "beta", "id": 2}]) + "\n"
    )
    assert sorted(ood_passages(str(jsonl), 2, seed=3)) == ["alpha", "beta"]
    with pytest.raises(DataError, match="has 2 passage"):
        ood_passages(str(jsonl), 3, seed=0)


def _one_line_error(source: str, count: int = 1) -> str:
    with pytest.raises(DataError) as info:
        ood_passages(source, count, seed=0)
    message = info.value.one_line()
    assert "\n" not in message and message.startswith("data error: ")
    return message


def test_ood_source_errors(tmp_path):
    assert "does not exist" in _one_line_error(str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    assert "no passages" in _one_line_error(str(empty))
    blank_jsonl = tmp_path / "blank.jsonl"
    blank_jsonl.write_text("")
    assert "no passages" in _one_line_error(str(blank_jsonl))
    no_text = tmp_path / "no_text.jsonl"
    no_text.write_text('{"text": "fine"}\n{"content": "x"}\n')
    assert "line 2" in _one_line_error(str(no_text)) and "'text'" in _one_line_error(str(no_text))
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "fine"}\n{"text": \n')
    assert "line 2: not valid JSON" in _one_line_error(str(bad_json))
    csv = tmp_path / "data.csv"
    csv.write_text("text\nhello\n")
    assert ".txt" in _one_line_error(str(csv))
    assert "not a file" in _one_line_error(str(tmp_path))
    assert "unknown builtin" in _one_line_error("builtin:wikipedia")
    assert "fewer than the 100000" in _one_line_error(STDLIB_DOCS, count=100000)
    with pytest.raises(ValueError, match="at least 1"):
        ood_passages(STDLIB_DOCS, 0, seed=0)


def test_stdlib_docs_without_docstrings_is_a_data_error():
    script = (
        "from jobs.core.ood_text import ood_passages\n"
        "from jobs.core.errors import DataError\n"
        "try:\n    ood_passages('builtin:stdlib-docs', 3, 0)\n"
        "except DataError as exc:\n    print(exc.one_line())\n"
    )
    result = subprocess.run([sys.executable, "-OO", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "strips docstrings" in result.stdout
