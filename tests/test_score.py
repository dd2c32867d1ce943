"""`hintflow score`, the data audit by CLL (jobs/score.py): the numbers against the float64 oracle
written apart from losses/, bad rows counted and named rather than fatal, and the model's own samples
ranked above reference solutions it never wrote. Real Ray actors on CPU."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

from jobs.core.builtin import arithmetic_rows
from jobs.core.data import render_prompt, response_token_ids
from jobs.core.spec import DataSpec
from tests.conftest import REPO, assert_one_line, independent_token_stats, read_jsonl, write_jsonl

pytestmark = pytest.mark.integration


def score(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.score", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def oracle_cll(model, tokenizer, index: int, row: dict) -> list[float]:
    """phi_t = log p_t + H_t of each response token (and the end-of-sequence the loader appends), from
    full float64 logits; the tokens are rendered as the job's loader renders them."""
    prompt_ids = render_prompt(row, index, DataSpec(path="x.jsonl"), tokenizer)[1]
    response_ids = response_token_ids(row["solution"], tokenizer)
    return [logp + entropy for logp, entropy in independent_token_stats(model, prompt_ids, response_ids)]


def test_scores_equal_the_oracle_and_bad_rows_are_named_not_fatal(tiny_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    good = [{"prompt": r["prompt"], "solution": r["solution"]} for r in arithmetic_rows(count=6, seed=3)]
    rows = good[:3] + [{"prompt": "What is 1 + 1?"},  # no response column
                       {"prompt": "What is 2 + 2?", "solution": ""},  # an empty response
                       {"prompt": "What is 3 + 3?", "solution": "9 " * 300}] + good[3:]  # past --max-model-len
    data = tmp_path / "sft.jsonl"
    write_jsonl(data, rows)
    result = score("--model", str(tiny_model), "--data", str(data), "--out", str(tmp_path / "out"),
                   "--max-model-len", "128", "--keep-fraction", "0.5")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = read_jsonl(tmp_path / "out" / "scores.jsonl")
    assert [r["index"] for r in records] == list(range(9))
    assert [("error" in r) for r in records] == [False] * 3 + [True] * 3 + [False] * 3
    assert "data row 3" in records[3]["error"] and "solution" in records[3]["error"]
    assert "data row 4" in records[4]["error"]
    assert "data row 5" in records[5]["error"] and "--max-model-len" in records[5]["error"]

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    for record in (r for r in records if "mean_cll" in r):
        row = rows[record["index"]]
        phi = oracle_cll(model, tokenizer, record["index"], row)
        assert record["tokens"] == len(phi)
        assert record["mean_cll"] == pytest.approx(statistics.fmean(phi), abs=1e-4)
        assert record["min_cll"] == pytest.approx(min(phi), abs=1e-4)
        assert record["frac_below_minus1"] == sum(p < -1 for p in phi) / len(phi)

    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "6 of 9 rows scored" in summary and "## Rows not scored: 3" in summary
    assert (tmp_path / "out" / "cll-histogram.png").stat().st_size > 1000
    kept = read_jsonl(tmp_path / "out" / "kept.jsonl")  # the top half of the 6 scored, by mean CLL
    top = sorted((r for r in records if "mean_cll" in r), key=lambda r: -r["mean_cll"])[:3]
    assert kept == [rows[i] for i in sorted(r["index"] for r in top)]


def test_a_file_with_no_row_to_score_fails_in_one_line(tiny_model, tmp_path):
    data = tmp_path / "empty-responses.jsonl"
    write_jsonl(data, [{"prompt": "What is 1 + 1?", "solution": ""}, {"prompt": "What is 2 + 2?"}])
    result = score("--model", str(tiny_model), "--data", str(data), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert_one_line(result, "hintflow score: data error: --data", "none of its 2 row(s) can be scored", "data row 0")


def auroc(positives: list[float], negatives: list[float]) -> float:
    """Every pair counted: the oracle for jobs.score.auroc's rank formula."""
    pairs = [(p > n) + 0.5 * (p == n) for p in positives for n in negatives]
    return sum(pairs) / len(pairs)


def test_the_models_own_samples_rank_above_reference_solutions_it_never_wrote(tiny_model, tmp_path):
    """A model with a peaked distribution (the tiny model with its output layer scaled up 8x: the same
    weights at temperature 1/8), its own answers to the builtin questions drawn at temperature 1, and the
    set's reference answers, which it never wrote. The random tiny model itself is near-uniform: there
    every text scores a CLL near 0, so it could not tell the two apart, and this test would say nothing."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model_dir = tmp_path / "peaked"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = DataSpec(path="x.jsonl")
    torch.manual_seed(0)
    own, references = [], []
    for index, row in enumerate(arithmetic_rows()):
        prompt_ids = render_prompt(row, index, data, tokenizer)[1]
        drawn = model.generate(torch.tensor([prompt_ids]), do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                               max_new_tokens=32, pad_token_id=tokenizer.eos_token_id)[0, len(prompt_ids):]
        text = tokenizer.decode(drawn, skip_special_tokens=True)
        if text.strip():
            own.append({"prompt": row["prompt"], "solution": text, "own": True})
        references.append({"prompt": row["prompt"], "solution": row["solution"], "own": False})
    rows = own + references
    write_jsonl(tmp_path / "mixed.jsonl", rows)
    result = score("--model", str(model_dir), "--data", str(tmp_path / "mixed.jsonl"), "--out", str(tmp_path / "o"),
                   "--workers", "2", "--cpus-per-worker", "0.5", "--group-column", "own")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = read_jsonl(tmp_path / "o" / "scores.jsonl")
    mine = [r["mean_cll"] for r in records if "mean_cll" in r and rows[r["index"]]["own"]]
    theirs = [r["mean_cll"] for r in records if "mean_cll" in r and not rows[r["index"]]["own"]]
    area = auroc(mine, theirs)
    # Against no separation at all (AUROC 0.5): three standard errors of the AUROC under that null.
    null_error = ((len(mine) + len(theirs) + 1) / (12 * len(mine) * len(theirs))) ** 0.5
    print(f"AUROC own samples over references: {area:.3f} ({len(mine)} vs {len(theirs)})")
    assert len(mine) > 30 and area > 0.5 + 3 * null_error, (area, null_error, statistics.fmean(mine),
                                                            statistics.fmean(theirs))
    # What the command itself reports with --group-column, against this file's pairwise count.
    assert f"AUROC True over False: {area:.3f}" in result.stdout, result.stdout[-500:]
    summary = (tmp_path / "o" / "summary.md").read_text()
    assert f"AUROC {area:.3f}: a random `True` row's mean CLL is above a random `False` row's" in summary
    assert f"| True | {len(mine)} | {statistics.fmean(mine):+.3f} |" in summary


def test_the_rank_auroc_matches_counting_every_pair():
    import random

    from jobs.score import auroc as rank_auroc, group_separation

    rng = random.Random(3)
    for _ in range(20):
        a = [round(rng.gauss(0.3, 1), 1) for _ in range(rng.randint(1, 30))]  # rounded: ties happen
        b = [round(rng.gauss(0.0, 1), 1) for _ in range(rng.randint(1, 30))]
        assert abs(rank_auroc(a, b) - auroc(a, b)) < 1e-12
    records = [{"mean_cll": 1.0, "group": "own"}, {"mean_cll": -1.0, "group": "ref"}, {"mean_cll": 0.5, "group": "ref"},
               {"index": 3, "error": "empty response", "group": "own"}]
    assert group_separation(records) == ("own", "ref", 1.0)
    assert group_separation(records[:1]) is None
