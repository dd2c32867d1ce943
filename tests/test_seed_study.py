"""The evidence study's bookkeeping (bench/seed_study.py): filing a finished job, the resumable skip,
the one-line refusals, and a report that regenerates byte for byte from the filed records alone."""

from __future__ import annotations

import json
import random

import pytest

from bench import seed_study
from bench.seed_study import BASE, collect, finished, read_jsonl, run_name
from bench.seed_study_report import Runs, idft_vs_sft, write_report
from tests.conftest import write_jsonl


def fake_job(run_dir, iterations: int, pass_rate: float, forget_kl: float, seed: int, at_start: bool):
    """What jobs.run leaves: metrics.jsonl with train and eval rows, eval/iter-N.jsonl, samples/iter-N.jsonl."""
    rng = random.Random(seed)
    (run_dir / "eval").mkdir(parents=True)
    (run_dir / "samples").mkdir()
    rows = [{"iteration": i, "generated_tokens": 10, "train_tokens": 20, "samples": 4} for i in range(iterations)]
    evals = [-1, iterations - 1] if at_start else [iterations - 1]
    for iteration in evals:
        rate = 0.2 if iteration == -1 else pass_rate
        records = [{"mode": "greedy", "problem": p, "prompt": f"q{p}", "gold": "1", "extracted": "1", "response": "r",
                    "correct": rng.random() < rate, "reward": 1.0, "response_tokens": 3} for p in range(200)]
        records += [{"mode": "transfer", "problem": p, "prompt": f"t{p}", "gold": "2", "extracted": None,
                     "response": "r", "correct": rng.random() < 0.1, "reward": 0.0, "response_tokens": 3}
                    for p in range(50)]
        write_jsonl(run_dir / "eval" / f"iter-{iteration}.jsonl", records)
        greedy = [r for r in records if r["mode"] == "greedy"]
        transfer = [r for r in records if r["mode"] == "transfer"]
        rows.append({"kind": "eval", "iteration": iteration, "eval_pass1": sum(r["correct"] for r in greedy) / 200,
                     "eval_transfer_pass1": sum(r["correct"] for r in transfer) / 50,
                     "forget_kl": 0.0 if iteration == -1 else forget_kl, "forget_rank_mean": 1.0,
                     "forget_rank_gt1": 0.0, "forget_centroid_shift": 0.0, "forget_ood_nll": 3.0,
                     "forget_ood_nll_base": 3.0, "eval_reference_cll": -0.2, "eval_seconds": 5.0})
    write_jsonl(run_dir / "metrics.jsonl", rows)
    write_jsonl(run_dir / "samples" / "iter-0.jsonl", [
        {"iteration": 0, "prompt_index": p, "source": source, "cll": {"avg_cll": cll}, "response_token_ids": [1, 2],
         "rewards": {"math_answer": 1.0}, "dropped": None}
        for p in range(20) for source, cll in (("on_policy", rng.gauss(0, 0.1)), ("reference", rng.gauss(-0.5, 0.1)))])


@pytest.fixture
def filed(tmp_path):
    """Base + sft and idft at two seeds, filed as the study files them."""
    results = tmp_path / "results"
    for method, seed, pass_rate, kl in (("sft", 0, 0.5, 0.010), ("sft", 1, 0.5, 0.012),
                                        ("idft", 0, 0.5, 0.004), ("idft", 1, 0.5, 0.005)):
        job = tmp_path / "work" / run_name(method, seed)
        fake_job(job, 6, pass_rate, kl, seed=seed * 10 + len(method), at_start=(method, seed) == seed_study.BASE_RUN)
        collect(job, results, method, seed, "abc1234", False, 100.0 + seed)
    return results


def test_a_filed_run_holds_its_verdicts_and_the_base_comes_from_the_first_job(filed):
    assert finished(filed, "sft-seed0") and finished(filed, BASE)
    info = json.loads((filed / "sft-seed1" / "run.json").read_text())
    records = read_jsonl(filed / "sft-seed1" / "heldout.jsonl.gz")
    assert info["heldout_n"] == 200 and info["heldout_correct"] == sum(r["correct"] for r in records
                                                                          if r["mode"] == "greedy")
    assert info["commit"] == "abc1234" and info["wall_seconds"] == 101.0 and info["iterations"] == 6
    base = json.loads((filed / BASE / "run.json").read_text())
    assert base["method"] == BASE and base["from_job"] == "sft-seed0" and base["forget_kl"] == 0.0


def test_the_report_regenerates_byte_for_byte_from_the_filed_files(filed):
    write_report(filed)
    page, plot, summary = (filed.parent / "seed-study.md", filed.parent / "seed-study.svg", filed / "summary.json")
    first = [p.read_bytes() for p in (page, plot, summary)]
    write_report(filed)
    assert [p.read_bytes() for p in (page, plot, summary)] == first
    runs = json.loads(summary.read_text())["runs"]
    assert [(r["method"], r["seed"]) for r in runs] == [(BASE, None), ("sft", 0), ("sft", 1), ("idft", 0), ("idft", 1)]
    assert all({"method", "seed", "heldout_n", "heldout_pass1", "forget_kl", "commit"} <= r.keys() for r in runs)
    assert "| CLL separates the model's own data from external data |" in page.read_text()


def test_verdicts_follow_the_figures(filed):
    word, figure, _ = idft_vs_sft(Runs(filed))
    assert word == "supports", figure  # less forgetting at both seeds; pass@1 drawn at the same rate
    for seed in (0, 1):  # make IDFT forget more than SFT: the same rule must now contradict
        path = filed / f"idft-seed{seed}" / "run.json"
        info = json.loads(path.read_text())
        path.write_text(json.dumps({**info, "forget_kl": 0.05 + seed * 0.001}))
    assert idft_vs_sft(Runs(filed))[0] == "contradicts"


def test_an_unfinished_run_is_run_again_and_does_not_reach_the_summary(filed):
    (filed / "idft-seed1" / "run.json").unlink()
    assert not finished(filed, "idft-seed1")
    write_report(filed)
    runs = json.loads((filed / "summary.json").read_text())["runs"]
    assert ("idft", 1) not in [(r["method"], r["seed"]) for r in runs]


def test_a_missing_model_folder_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        seed_study.main(["--model", str(tmp_path / "nowhere"), "--results", str(tmp_path / "r")])
    assert "--model" in str(stop.value) and "config.json" in str(stop.value) and "\n" not in str(stop.value)


def test_a_task_without_solutions_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    data = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "q", "answer": "1", "solution": "s"},
                                                 {"prompt": "q2", "answer": "2"}])
    spec = tmp_path / "study-sft-smollm2.yaml"
    spec.write_text(f"algorithm: sft\nrollout: {{mode: reference}}\ndata: {{path: {data}}}\n")
    monkeypatch.setattr(seed_study, "config_of", lambda method: spec)
    with pytest.raises(SystemExit) as stop:
        seed_study.preflight(str(tmp_path / "model"), ["sft"])
    assert "data row 1" in str(stop.value) and "solution" in str(stop.value) and "\n" not in str(stop.value)
