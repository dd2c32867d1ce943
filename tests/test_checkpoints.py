"""The checkpoint store on its own: commit by rename, keep_last, what counts as complete (no Ray)."""

from __future__ import annotations

from jobs.core.checkpoints import CheckpointStore


def write(store: CheckpointStore, iteration: int, weights: str = "w") -> None:
    staging = store.begin(iteration)
    (staging / "model.safetensors").write_text(weights)  # stands in for what the learners write
    store.commit(iteration, {"next_iteration": iteration + 1, "data": {}, "spec": {}})


def test_only_the_newest_keep_last_checkpoints_stay(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep_last=2)
    for iteration in range(5):
        write(store, iteration)
    assert [c.iteration for c in store.complete()] == [3, 4]
    assert sorted(p.name for p in store.dir.iterdir()) == ["iter-3", "iter-4", "latest"]
    assert (store.dir / "latest").read_text() == "iter-4\n"


def test_an_unfinished_write_is_not_a_checkpoint_and_is_cleared(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep_last=3)
    write(store, 0)
    (store.begin(1) / "model.safetensors").write_text("half")  # killed before commit
    (store.dir / "iter-7").mkdir()  # a folder with the right name but no loop state
    assert store.latest().iteration == 0
    assert store.remove_partial() == [".iter-1.partial"]
    assert not (store.dir / ".iter-1.partial").exists()


def test_the_scan_decides_not_the_latest_file(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep_last=3)
    write(store, 0)
    write(store, 1)
    (store.dir / "latest").write_text("iter-0\n")  # a kill between the rename and the pointer update
    assert store.latest().iteration == 1


def test_writing_an_iteration_again_replaces_it(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep_last=3)
    write(store, 0, "old")
    write(store, 0, "new")
    assert (store.dir / "iter-0" / "model.safetensors").read_text() == "new"
    assert [p.name for p in store.dir.iterdir() if p.name.startswith(".")] == []
