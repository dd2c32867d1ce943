"""The spec sections about running a job rather than what it computes: weight sync,
checkpoints, faults, placement. Most of them may change when a run is resumed
(jobs/resume.py); they are part of the one schema in jobs/core/spec.py.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from jobs.core.spec_base import Section


class SyncSpec(Section):
    method: Literal["object_store", "broadcast"] = Field(
        "object_store",
        description="How learner weights reach the rollout engines. object_store: safetensors bytes "
        "through the Ray object store into a vLLM worker extension (works on CPU and GPU). broadcast: the "
        "same bytes from learner rank 0 over a process group of its own to every engine and CLL replica "
        "(gloo on CPU, NCCL on GPU; engines on GPUs of their own, not colocated with a learner rank).",
    )


class CheckpointSpec(Section):
    every: int = Field(
        10, ge=0, description="Save after every Nth iteration (and always after the last); 0: no count-based saves."
    )
    every_seconds: float = Field(
        1800, ge=0, description="Also save after the first iteration that ends this many seconds (wall time) after "
        "the last save, or after the loop started; whichever of the two is due first saves. 0: no time-based saves.",
    )
    keep_last: int = Field(
        3, ge=1, description="Keep the newest N complete checkpoints; older ones are deleted once a new one is complete."
    )


class FaultSpec(Section):
    """What the job survives: a dead actor is replaced, a dead learner rank restarts the job or ends it."""

    worker_restarts: int = Field(
        3,
        ge=0,
        description="How many times a dead rollout worker or reward actor is replaced (engine reloaded with the "
        "current weights, its work re-queued) before the job fails.",
    )
    job_restarts: int = Field(
        0,
        ge=0,
        description="When a learner rank dies: 0 fails the job with one line naming the rank and the last good "
        "checkpoint; N restarts the whole job from that checkpoint up to N times.",
    )


class PlacementSpec(Section):
    strategy: Literal["pack", "spread"] = Field(
        "pack",
        description="How the job's placement group spreads its bundles over Ray nodes: pack fills one node first, "
        "spread uses as many nodes as possible.",
    )
    colocate: bool = Field(
        False,
        description="Rollout worker i and learner rank i share one bundle (time-sharing the same cores or GPU); "
        "false gives every actor its own.",
    )
    timeout_seconds: float = Field(
        30.0, gt=0,
        description="How long the job waits for its placement group when the cluster could hold it but other jobs "
        "hold the resources now; then it fails in one line naming its bundles and what is free. A bundle no node "
        "could ever hold fails at once.",
    )
    # Ray tells the cluster's size only once it runs; these say it before, so a GPU layout
    # that cannot fit is refused in seconds (jobs/gpu_checks.py), not after the actors start.
    gpus_per_node: Optional[int] = Field(
        None,
        ge=0,
        description="GPUs on each node of the cluster the job is written for; null: not said, and only Ray's own "
        "count is checked, once it runs. Set, the job is refused before Ray starts when one bundle needs more GPUs "
        "than a node has, or all bundles more than placement.nodes x placement.gpus_per_node.",
    )
    nodes: int = Field(1, ge=1, description="Nodes of the cluster the job is written for (with placement.gpus_per_node).")


class LoggingSpec(Section):
    """Where the metrics rows go besides metrics.jsonl and report.html (jobs/outputs/trackers.py)."""

    backends: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Each optional: tensorboard (DIR/tensorboard/), wandb (Weights & Biases; pip install -e "
        "'.[wandb]'; WANDB_MODE=offline logs without a network), mlflow (pip install -e '.[mlflow]'). Every "
        "row, training and eval, at its iteration; the resolved spec as the run's config; report.html and the "
        "final checkpoint's path at the end. A resumed run continues the same W&B and MLflow runs.",
    )
    project: str = Field("hintflow", min_length=1, description="The W&B project and the MLflow experiment.")
    mlflow_tracking_uri: Optional[str] = Field(
        None, description="MLflow's store (file:///path, sqlite:///path.db, http://host:5000); null: MLflow's own "
        "default (MLFLOW_TRACKING_URI, else ./mlruns).",
    )

