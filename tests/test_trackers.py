"""logging.backends: W&B (offline, read back from its run file) and MLflow (a local file store, queried
with MlflowClient) get every row at its iteration, the spec as config, report.html and the final
checkpoint; a resumed run continues the same runs; a missing package is one line naming the extra."""

from __future__ import annotations

import importlib.util
import json

import pytest

from jobs.core.errors import SpecError
from jobs.core.spec import load_spec
from jobs.outputs.trackers import Trackers, check_backends
from tests.conftest import REPO, read_jsonl
from tests.synthetic_runs import eval_row, train_row
from tests.wandb_offline import offline_runs


def spec_with(*backends: str, store=None):
    overrides = [f"logging.backends=[{', '.join(backends)}]", "name=tracked"]
    if store:
        overrides.append(f"logging.mlflow_tracking_uri={store}")
    return load_spec(REPO / "configs" / "onpolicy_idft.yaml", overrides)


ROWS = [eval_row(-1), train_row(0), train_row(1), eval_row(1)]
MORE = [train_row(2), eval_row(2)]  # after a resume from the checkpoint of iteration 1


@pytest.fixture
def file_store(tmp_path, monkeypatch) -> str:
    """A local MLflow file store (MLflow 3 asks for this opt-in; a sqlite store needs SQLAlchemy too)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return f"file://{tmp_path / 'mlruns'}"


def test_mlflow_gets_every_row_the_spec_the_report_and_continues_on_resume(tmp_path, file_store):
    from mlflow.tracking import MlflowClient

    store = file_store
    report = tmp_path / "run" / "report.html"
    report.parent.mkdir()
    report.write_text("<html></html>")
    spec = spec_with("mlflow", store=store)
    first = Trackers(spec, tmp_path / "run", 0)
    for row in ROWS:
        first.log(row)
    ids = first.run_ids()
    first.finish(report, "/runs/x/checkpoints/iter-1")
    again = Trackers(spec, tmp_path / "run", 2, run_ids=ids)  # the resume: loop.json's ids
    assert again.run_ids() == ids
    for row in MORE:
        again.log(row)
    again.finish(report, "/runs/x/checkpoints/iter-2")

    client = MlflowClient(tracking_uri=store)
    run_id = ids["mlflow"]
    rows = ROWS + MORE
    for name, kind in (("loss", "train"), ("eval_pass1", "eval")):
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run_id, f"{kind}/{name}"))
        assert logged == [(r["iteration"], pytest.approx(r[name])) for r in rows if r.get("kind", "train") == kind]
    run = client.get_run(run_id)
    assert run.data.tags["final_checkpoint"] == "/runs/x/checkpoints/iter-2" and run.info.run_name == "tracked"
    assert run.data.params["seed"] == "0" and run.data.params["algorithm"] == '"idft"'
    assert {a.path for a in client.list_artifacts(run_id)} == {"report.html", "spec.json"}
    assert client.get_experiment(run.info.experiment_id).name == "hintflow"


def test_wandb_offline_gets_every_row_at_its_iteration_and_continues_on_resume(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    spec = spec_with("wandb")
    first = Trackers(spec, tmp_path / "run", 0)
    for row in ROWS:
        first.log(row)
    ids = first.run_ids()
    first.finish(None, "/runs/x/checkpoints/iter-1")
    again = Trackers(spec, tmp_path / "run", 2, run_ids=ids)
    for row in MORE:
        again.log(row)
    again.finish(None, "/runs/x/checkpoints/iter-2")
    wandb.teardown()
    before, after = offline_runs(tmp_path / "run")
    assert before["id"] == after["id"] == ids["wandb"]
    for found, rows in ((before, ROWS), (after, MORE)):
        assert [(h["iteration"], h.get("train/loss"), h.get("eval/eval_pass1")) for h in found["history"]] == [
            (r["iteration"], r.get("loss"), r.get("eval_pass1")) for r in rows]
    assert after["summary"]["final_checkpoint"] == "/runs/x/checkpoints/iter-2"
    assert before["config"]["seed"] == 0 and before["config"]["algorithm"] == "idft"


def test_only_the_listed_backends_run(tmp_path, file_store):
    trackers = Trackers(spec_with("mlflow", store=file_store), tmp_path / "run", 0)
    trackers.log(train_row(0))
    trackers.finish()
    assert not (tmp_path / "run" / "tensorboard").exists() and not (tmp_path / "run" / "wandb").exists()


@pytest.mark.parametrize("backend", ["wandb", "mlflow"])
def test_a_missing_tracker_package_is_one_line_naming_the_extra(monkeypatch, backend):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == backend else real(name, *a))
    with pytest.raises(SpecError) as failure:
        check_backends(spec_with("tensorboard", backend))
    assert failure.value.one_line() == (f"spec error: logging.backends: {backend} needs the {backend} package, which is "
                                        f"not installed: pip install -e '.[{backend}]'")


@pytest.mark.integration
def test_a_real_run_sent_every_row_to_wandb_and_mlflow(onpolicy_run, monkeypatch):
    """The shared run (conftest.py) logged to both: their histories against its own metrics.jsonl."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # as the job had it (conftest.TRACKERS_OFFLINE)

    out, _ = onpolicy_run
    rows = [row for row in read_jsonl(out / "metrics.jsonl") if row.get("kind", "train") == "train"]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    (run,) = offline_runs(out)
    assert [(h["iteration"], h["train/loss"]) for h in run["history"]] == [(r["iteration"], r["loss"]) for r in rows]
    assert run["summary"]["final_checkpoint"] == str(out / "checkpoints" / "iter-2")
    state = json.loads((out / "checkpoints" / "iter-2" / "training_state" / "loop.json").read_text())
    assert state["trackers"]["wandb"] == run["id"]
    client = MlflowClient(tracking_uri=f"file://{out / 'mlruns'}")
    history = client.get_metric_history(state["trackers"]["mlflow"], "train/reward_mean")
    assert sorted((m.step, m.value) for m in history) == [(r["iteration"], pytest.approx(r["reward_mean"]))
                                                           for r in rows]
    assert "report.html" in {a.path for a in client.list_artifacts(state["trackers"]["mlflow"])}
