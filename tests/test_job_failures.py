"""Bad input through the real CLI: one clear line, no traceback, nothing half-written."""

from __future__ import annotations

import json

import pytest

from tests.conftest import assert_one_line, run_cli, run_main, write_jsonl


def no_checkpoint_written(out) -> bool:
    checkpoints = out / "checkpoints"
    return not checkpoints.exists() or not any(checkpoints.iterdir())


def test_missing_model_path(tmp_path):
    out = tmp_path / "out"
    result = run_main("configs/onpolicy_idft.yaml", "--output-dir", str(out), "--set", f"model.path={tmp_path}/no-model")
    assert result.returncode == 1
    assert_one_line(result, "model error: ", "model.path", "no-model", "does not exist")
    assert no_checkpoint_written(out)


def test_model_folder_without_config(tmp_path):
    (tmp_path / "empty-model").mkdir()
    result = run_main("configs/onpolicy_idft.yaml", "--output-dir", str(tmp_path / "out"),
                      "--set", f"model.path={tmp_path}/empty-model")
    assert result.returncode == 1
    assert_one_line(result, "model error: ", "model.path", "no config.json")


def test_bad_dataset_row_is_named(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps({"prompt": "What is 1 + 1?"}) + "\n" + json.dumps({"prompt": ""}) + "\n")
    out = tmp_path / "out"
    result = run_main("configs/onpolicy_idft.yaml", "--output-dir", str(out), "--set", f"data.path={data}")
    assert result.returncode == 1
    assert_one_line(result, "data error: ", "data row 1", "'prompt'", "empty")
    assert no_checkpoint_written(out)


@pytest.mark.integration
@pytest.mark.parametrize("zero_stage", [0, 2])
def test_nan_loss_stops_training_without_writing_a_checkpoint(tmp_path, zero_stage):
    """An absurd learning rate blows the weights up after the first update; the next step is not finite.

    ZeRO-0 matters on its own: DeepSpeed applies a non-finite update there without complaint.
    """
    out = tmp_path / "out"
    # One rollout worker is enough to draw the 16 samples (the learners are what is tested): one engine
    # fewer to start.
    result = run_cli(
        "configs/onpolicy_idft.yaml", "--output-dir", str(out), "--set", f"learner.zero_stage={zero_stage}",
        "--set", "train.lr=1e30", "--set", "iterations=1", "--set", "checkpoint.every=1", "--set", "rollout.workers=1",
    )
    assert result.returncode == 1
    # Caught at the first non-finite gradient, before it is applied; without the
    # ZeRO-0 check the first symptom would be a NaN loss one step later.
    line = assert_one_line(result, "training error: ", "iteration 0", "the gradient norm is not finite", "train.lr")
    assert "neither synced nor checkpointed" in line
    assert no_checkpoint_written(out)
    # No half-written staging file or checkpoint folder either (jobs/core/atomic_files.py, jobs/core/checkpoints.py).
    assert not [p for p in out.rglob(".*") if p.name.endswith((".tmp", ".partial"))]
    assert (out / "metrics.jsonl").read_text() == ""  # the failed iteration is not recorded as done
    assert len((out / "samples" / "iter-0.jsonl").read_text().splitlines()) == 16  # the samples are kept


@pytest.mark.integration  # it starts Ray: the check reads what the cluster has
def test_resources_the_cluster_lacks_fail_fast(tmp_path):
    """Without this check Ray would wait forever for a GPU actor on a CPU machine."""
    result = run_cli("configs/onpolicy_idft.yaml", "--output-dir", str(tmp_path / "out"),
                     "--set", "learner.gpus_per_rank=1", timeout=300)
    assert result.returncode == 2
    assert_one_line(result, "spec error: ", "needs 2 GPUs", "learner.gpus_per_rank", "has 0")


# --------------------------------------------------------------------------- preference learning


OFFLINE = ["--set", "preference.source=dataset", "--set", "reward.sources=[]"]


@pytest.mark.parametrize(
    "bad_row, words",
    [
        ({"prompt": "What is 2 + 2?", "chosen": "4"}, ["data row 1", "no column 'rejected'"]),
        ({"prompt": "What is 2 + 2?", "chosen": "  ", "rejected": "5"}, ["data row 1", "'chosen' is empty"]),
    ],
)
def test_offline_pairs_with_a_bad_row(tmp_path, bad_row, words):
    good = {"prompt": "What is 1 + 1?", "chosen": "2", "rejected": "3"}
    data = write_jsonl(tmp_path / "pairs.jsonl", [good, bad_row])
    out = tmp_path / "out"
    result = run_main("configs/dpo.yaml", "--output-dir", str(out), *OFFLINE, "--set", f"data.path={data}")
    assert result.returncode == 1
    assert_one_line(result, "data error: ", *words)
    assert "starting" not in result.stdout  # found before any actor started
    assert no_checkpoint_written(out)


def test_reward_model_that_does_not_load(tmp_path, tiny_model):
    """A causal LM is not a reward model: refused before any actor starts."""
    result = run_main(
        "configs/dpo.yaml", "--output-dir", str(tmp_path / "out"),
        "--set", f"reward.sources=[{{kind: reward_model, path: {tiny_model}}}]"
    )
    assert result.returncode == 1
    assert_one_line(result, "model error: ", "reward.sources[0].path", "LlamaForCausalLM", "sequence-classification")
    assert "starting" not in result.stdout

    missing = run_main(
        "configs/dpo.yaml", "--output-dir", str(tmp_path / "out"),
        "--set", f"reward.sources=[{{kind: reward_model, path: {tmp_path}/no-rm}}]"
    )
    assert missing.returncode == 1
    assert_one_line(missing, "model error: ", "reward.sources[0].path", "no-rm", "does not exist")


def test_reward_function_that_does_not_import(tmp_path):
    result = run_main(
        "configs/dpo.yaml", "--output-dir", str(tmp_path / "out"),
        "--set", "reward.sources=[{kind: function, function: 'tests.no_such_module:score'}]"
    )
    assert result.returncode == 2
    assert_one_line(result, "spec error: ", "tests.no_such_module:score", "cannot be imported", "ModuleNotFoundError")


def test_rows_without_the_gold_answer(tmp_path):
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "What is 1 + 1?", "answer": "2"}, {"prompt": "Hi?"}])
    result = run_main("configs/dpo.yaml", "--output-dir", str(tmp_path / "out"), "--set", f"data.path={data}")
    assert result.returncode == 1
    assert_one_line(result, "data error: ", "data row 1", "no gold answer", "'answer'", "data.answer_column")


@pytest.mark.integration
def test_reward_function_that_raises_names_the_sample(tmp_path):
    out = tmp_path / "out"
    # It fails while scoring, before any training: one learner rank is enough (one fewer to start).
    result = run_cli(
        "configs/dpo.yaml", "--output-dir", str(out), "--set", "learner.ranks=1",
        "--set", "reward.sources=[{kind: function, function: 'tests.reward_functions:explode'}]",
    )
    assert result.returncode == 1
    assert_one_line(
        result, "reward error: ", "tests.reward_functions:explode", "iteration 0, data row", "sample 0",
        "ValueError: this reward function always fails",
    )
    assert no_checkpoint_written(out)
    assert (out / "metrics.jsonl").read_text() == ""


def test_hinted_rows_without_a_reference_solution(tmp_path):
    data = write_jsonl(tmp_path / "problems.jsonl", [
        {"prompt": "What is 1 + 1?", "answer": "2", "solution": "1 + 1 = 2. The answer is 2."},
        {"prompt": "What is 2 + 2?", "answer": "4"},
    ])
    # eval.every 0: with the eval on, a two-row file would keep one row back for it (eval.holdout_fraction),
    # and this test is about a training row.
    result = run_main("configs/hinted_idft.yaml", "--output-dir", str(tmp_path / "out"), "--set", f"data.path={data}",
                      "eval.every=0")
    assert result.returncode == 1
    assert_one_line(result, "data error: ", "data row 1", "no column 'solution'")
    assert "starting" not in result.stdout


def test_hinted_verifier_must_be_a_reward_source(tmp_path):
    result = run_main("configs/hinted_idft.yaml", "--output-dir", str(tmp_path / "out"),
                      "--set", "rollout.hinted.verifier=exact")
    assert result.returncode == 2
    assert_one_line(result, "spec error: ", "rollout.hinted.verifier 'exact'", "answer", "digits")
