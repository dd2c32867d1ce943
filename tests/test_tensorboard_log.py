"""DIR/tensorboard/: every numeric metric, at step = iteration, read back with TensorBoard's own reader."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jobs.outputs.tensorboard_log import TensorBoardLog
from tests.synthetic_runs import eval_row, read_rows, train_row


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def expected_tags(row: dict, prefix: str) -> set[str]:
    return {f"{prefix}/{key}" for key, value in row.items()
            if key != "iteration" and isinstance(value, (int, float)) and not isinstance(value, bool)}


def test_train_and_eval_rows_land_under_their_prefix_at_their_iteration(tmp_path):
    rows = [train_row(0), train_row(1), eval_row(1), train_row(2)]
    with TensorBoardLog(tmp_path) as log:
        for row in rows:
            log.log(row)
    found = scalars(tmp_path)
    assert set(found) == expected_tags(train_row(0), "train") | expected_tags(eval_row(1), "eval")
    assert found["train/loss"] == [(i, pytest.approx(train_row(i)["loss"], rel=1e-6)) for i in range(3)]
    assert found["train/generated_tokens"] == [(i, 100 + i) for i in range(3)]
    assert found["eval/eval_pass1"] == [(1, pytest.approx(eval_row(1)["eval_pass1"], rel=1e-6))]
    assert found["eval/forget_kl"] == [(1, pytest.approx(0.01, rel=1e-6))]
    # Strings (the checkpoint path) and flags are not scalars; the iteration is the step.
    assert not {"train/checkpoint", "train/iteration", "eval/kind"} & set(found)


def test_only_the_keys_a_row_has_are_written(tmp_path):
    with TensorBoardLog(tmp_path) as log:
        log.log({"iteration": 0, "loss": 0.5, "stopped": True, "resumed_from": "/x"})
        log.log({"iteration": 1, "pairs": 16})
    assert scalars(tmp_path) == {"train/loss": [(0, 0.5)], "train/pairs": [(1, 16.0)]}


def test_each_row_is_on_disk_before_the_next(tmp_path):
    """A run that crashes keeps every row logged so far: nothing waits in the writer's queue."""
    log = TensorBoardLog(tmp_path)
    log.log(train_row(0))
    assert scalars(tmp_path)["train/loss"] == [(0, 1.0)]
    log.log(eval_row(0))
    assert scalars(tmp_path)["eval/eval_pass1"] == [(0, pytest.approx(0.3))]
    log.close()


def test_a_resumed_run_replaces_the_iterations_it_does_again(tmp_path):
    with TensorBoardLog(tmp_path) as first_start:
        for iteration in range(5):
            first_start.log({"iteration": iteration, "loss": float(iteration)})
    # Resumed from the checkpoint after iteration 2: iterations 3 and 4 run again, with new values.
    with TensorBoardLog(tmp_path, first_iteration=3) as resumed:
        for iteration in range(3, 6):
            resumed.log({"iteration": iteration, "loss": 10.0 + iteration})
    assert scalars(tmp_path)["train/loss"] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 13.0), (4, 14.0), (5, 15.0)]


@pytest.mark.integration
def test_a_real_run_wrote_every_metric_of_every_row(onpolicy_run):
    """The event files the job itself wrote (DIR/tensorboard/), against its metrics.jsonl."""
    out_dir, _ = onpolicy_run
    rows = read_rows(out_dir, "train")
    found = scalars(out_dir)
    train_tags = {tag for tag in found if tag.startswith("train/")}
    assert train_tags == set().union(*(expected_tags(row, "train") for row in rows))
    assert found["train/reward_mean"] == [(r["iteration"], pytest.approx(r["reward_mean"], rel=1e-6)) for r in rows]
    assert found["train/loss"] == [(r["iteration"], pytest.approx(r["loss"], rel=1e-6)) for r in rows]
