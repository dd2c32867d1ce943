"""Experiment trackers beside metrics.jsonl: TensorBoard, Weights & Biases, MLflow (`logging.backends`).

Every metrics row, training and eval, goes to each backend at its iteration: W&B gets the row's
numbers under train/ or eval/ with `iteration` as their x-axis; MLflow the same names at step =
iteration. The resolved spec is the run's config (W&B config; MLflow params of the top-level
fields and spec.json as an artifact). At the end report.html goes up as a file, and the final
checkpoint's path as a summary value (W&B) or tag (MLflow). The W&B and MLflow run ids go into
every checkpoint's loop state, so a resumed run continues the same runs; the iterations it does
again are logged again (W&B and MLflow keep both, later at a higher step count; metrics.jsonl and
TensorBoard keep the redone ones only).

A backend whose package is missing fails before any actor starts, in one line naming the extra to
install (`check_backends`).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from jobs.core.errors import SpecError
from jobs.core.spec import JobSpec
from jobs.outputs.metrics_rows import numeric_scalars, row_kind
from jobs.outputs.tensorboard_log import TensorBoardLog

PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}  # backend -> the module it imports, also its pip extra


def check_backends(spec: JobSpec) -> None:
    for backend in spec.logging.backends:
        package = PACKAGES.get(backend)
        if package and importlib.util.find_spec(package) is None:
            raise SpecError(f"logging.backends: {backend} needs the {package} package, which is not installed: "
                            f"pip install -e '.[{package}]'")


def scalars(row: dict) -> dict[str, float]:
    return {f"{row_kind(row)}/{key}": value for key, value in numeric_scalars(row).items()}


class WandbRun:
    def __init__(self, spec: JobSpec, run_dir: Path, run_id: str | None):
        import wandb

        self.run = wandb.init(project=spec.logging.project, name=spec.name, id=run_id,
                              resume="allow" if run_id else None, config=spec.model_dump(mode="json"),
                              dir=str(run_dir))
        self.run.define_metric("iteration")
        self.run.define_metric("train/*", step_metric="iteration")
        self.run.define_metric("eval/*", step_metric="iteration")
        self.id = self.run.id

    def log(self, row: dict) -> None:
        self.run.log({"iteration": int(row["iteration"]), **scalars(row)})

    def finish(self, report: Path | None, checkpoint: str | None) -> None:
        if checkpoint:
            self.run.summary["final_checkpoint"] = checkpoint
        if report and report.is_file():
            self.run.save(str(report), base_path=str(report.parent), policy="now")
        self.run.finish()


class MlflowRun:
    def __init__(self, spec: JobSpec, run_dir: Path, run_id: str | None):
        import mlflow

        self.mlflow = mlflow
        if spec.logging.mlflow_tracking_uri:
            mlflow.set_tracking_uri(spec.logging.mlflow_tracking_uri)
        if run_id is None:
            mlflow.set_experiment(spec.logging.project)
        config = spec.model_dump(mode="json")
        self.run = mlflow.start_run(run_id=run_id, run_name=None if run_id else spec.name)
        self.id = self.run.info.run_id
        if run_id is None:
            mlflow.log_params({key: json.dumps(value)[:500] for key, value in config.items()})
            mlflow.log_dict(config, "spec.json")

    def log(self, row: dict) -> None:
        values = scalars(row)
        if values:
            self.mlflow.log_metrics(values, step=int(row["iteration"]))

    def finish(self, report: Path | None, checkpoint: str | None) -> None:
        if checkpoint:
            self.mlflow.set_tag("final_checkpoint", checkpoint)
        if report and report.is_file():
            self.mlflow.log_artifact(str(report))
        self.mlflow.end_run()


class Trackers:
    """The run's backends as one: `log(row)` to each, `run_ids()` for the checkpoint, `finish()` at the end."""

    def __init__(self, spec: JobSpec, run_dir: str | Path, first_iteration: int, run_ids: dict | None = None):
        run_dir, run_ids = Path(run_dir), run_ids or {}
        backends = spec.logging.backends
        self.tensorboard = TensorBoardLog(run_dir, first_iteration) if "tensorboard" in backends else None
        self.runs = {}
        if "wandb" in backends:
            self.runs["wandb"] = WandbRun(spec, run_dir, run_ids.get("wandb"))
        if "mlflow" in backends:
            self.runs["mlflow"] = MlflowRun(spec, run_dir, run_ids.get("mlflow"))

    def log(self, row: dict) -> None:
        if self.tensorboard:
            self.tensorboard.log(row)
        for run in self.runs.values():
            run.log(row)

    def run_ids(self) -> dict[str, str]:
        return {name: run.id for name, run in self.runs.items()}

    def finish(self, report: Path | None = None, checkpoint: str | None = None) -> None:
        """Files and the final checkpoint's path up, then every backend closed (once)."""
        runs, self.runs = self.runs, {}
        for run in runs.values():
            run.finish(report, checkpoint)
        if self.tensorboard:
            self.tensorboard.close()
            self.tensorboard = None

    def __enter__(self) -> "Trackers":
        return self

    def __exit__(self, *exc_info) -> None:
        self.finish()
