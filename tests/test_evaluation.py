"""The eval actor inside a real run (configs/hinted_idft.yaml, eval.every=1), on real Ray, vLLM and DeepSpeed.

The run is the shared `hinted_run` session fixture (conftest.py). Its eval rows are
checked against what the eval actor saved: pass@1 and pass@k are recounted from
eval/iter-N.jsonl; the forgetting numbers of the starting weights (the eval actor's
current model IS the base model then) must be zero.
"""

from __future__ import annotations

import pytest

from tests.conftest import read_jsonl

pytestmark = pytest.mark.integration


def eval_rows(out) -> dict[int, dict]:
    return {m["iteration"]: m for m in read_jsonl(out / "metrics.jsonl") if m.get("kind") == "eval"}


def test_an_eval_before_training_and_after_every_iteration(hinted_run):
    out, metrics = hinted_run
    trained = [m["iteration"] for m in metrics]
    assert sorted(eval_rows(out)) == [-1, *trained]
    for row in eval_rows(out).values():
        assert row["eval_problems"] == 16 and row["eval_k"] == 4
        assert {"forget_kl", "forget_rank_mean", "forget_rank_gt1", "forget_centroid_shift", "forget_ood_nll",
                "forget_ood_nll_base", "eval_reference_cll", "eval_seconds", "eval_transfer_pass1"} <= row.keys()


def test_pass_at_1_and_pass_at_k_equal_a_direct_count_of_the_saved_answers(hinted_run):
    out, _ = hinted_run
    for iteration, row in eval_rows(out).items():
        answers = read_jsonl(out / "eval" / f"iter-{iteration}.jsonl")
        greedy = [a for a in answers if a["mode"] == "greedy"]
        sampled = [a for a in answers if a["mode"] == "sampled"]
        assert len(greedy) == 16 and len(sampled) == 16 * 4
        assert all(a["correct"] == (a["reward"] >= 0.35) for a in answers)  # eval.pass_threshold
        assert row["eval_pass1"] == sum(a["correct"] for a in greedy) / 16
        solved = {a["problem"] for a in sampled if a["correct"]}
        assert row["eval_pass_at_k"] == len(solved) / 16


def test_transfer_answers_are_judged_against_their_own_problems_and_recorded_with_prompt_and_gold(hinted_run):
    from jobs.core.data import load_rows
    from actors.evaluation import eval_data_spec, transfer_data_spec
    from jobs.core.spec import load_spec

    out, _ = hinted_run
    spec = load_spec(out / "spec.yaml")
    transfer_rows = load_rows(transfer_data_spec(spec))
    heldout_rows = load_rows(eval_data_spec(spec))
    for iteration, row in eval_rows(out).items():
        answers = read_jsonl(out / "eval" / f"iter-{iteration}.jsonl")
        transfer = [a for a in answers if a["mode"] == "transfer"]
        assert len(transfer) == row["eval_transfer_problems"] == 8
        assert row["eval_transfer_pass1"] == sum(a["correct"] for a in transfer) / 8
        for answer in answers:  # each record names its own question and gold answer, from its own source
            source = transfer_rows if answer["mode"] == "transfer" else heldout_rows
            assert answer["prompt"] == source[answer["problem"]]["prompt"]
            assert answer["gold"] == source[answer["problem"]]["answer"]
            assert "extracted" in answer and "response" in answer


def test_forgetting_is_zero_for_the_starting_weights_and_grows_with_training(hinted_run):
    out, _ = hinted_run
    rows = eval_rows(out)
    start, end = rows[-1], rows[max(rows)]
    # The eval actor's replica and its base model hold the same weights before training.
    assert abs(start["forget_kl"]) < 1e-6
    assert start["forget_rank_mean"] == 1.0 and start["forget_rank_gt1"] == 0.0
    assert start["forget_centroid_shift"] < 1e-4
    assert start["forget_ood_nll"] == pytest.approx(start["forget_ood_nll_base"], abs=1e-6)
    assert end["forget_kl"] > 100 * max(abs(start["forget_kl"]), 1e-9)
    assert end["forget_centroid_shift"] > start["forget_centroid_shift"]


def test_the_first_row_splits_the_start_up_and_the_eval_actor_is_not_waited_for(hinted_run):
    _, metrics = hinted_run
    first = metrics[0]
    ready = {key: value for key, value in first.items() if key.startswith("startup_ready_seconds_")}
    # The eval actor starts once the training actors are ready, and the loop does not wait for it.
    assert set(ready) == {"startup_ready_seconds_rollout_worker", "startup_ready_seconds_learner_rank",
                          "startup_ready_seconds_reward_actor"}
    assert 0 < first["startup_placement_seconds"] <= min(ready.values())
    assert first["startup_before_actors_seconds"] + max(ready.values()) <= first["seconds_to_first_iteration"]
