"""`python -m jobs.run SPEC --resume DIR`: where to continue from, and which spec changes are allowed.

DIR is a run's output directory (its newest complete checkpoint is used) or
one checkpoint folder inside it (DIR/checkpoints/iter-N). The spec given now
is compared with the one the checkpoint was written under: settings that
decide what the run computes (model, algorithm, seed, data, optimizer, world
size...) cannot change mid-run; how long it runs, where it saves and what it
runs on can.
"""

from __future__ import annotations

from pathlib import Path

from jobs.core.data_sources import is_generated
from jobs.core.checkpoints import TRAINING_STATE, Checkpoint, CheckpointError, CheckpointStore
from jobs.core.errors import SpecError
from jobs.core.spec import JobSpec

# Dotted field paths (a prefix covers its whole section) a resumed run may set differently.
CHANGEABLE_ON_RESUME = (
    "name",
    "iterations",
    "output_dir",
    "checkpoint",
    "eval",
    "faults",
    "placement",
    "logging",
    "rollout.workers",
    "rollout.cpus_per_worker",
    "rollout.gpus_per_worker",
    "rollout.engine",
    "rollout.threads_per_worker",
    "rollout.cll_from",
    "learner.threads_per_rank",
    "learner.cpus_per_rank",
    "learner.gpus_per_rank",
    "reward.cpus",
    "reward.gpus",
)


def resume_point(path: str) -> tuple[Path, Checkpoint]:
    """(run directory, checkpoint to continue from) for `--resume PATH`; one clear line if there is none."""
    given = Path(path).expanduser().resolve()
    if (given / TRAINING_STATE).is_dir():
        run_dir = given.parent.parent
        chosen = next((c for c in CheckpointStore(given.parent).complete() if c.path == given), None)
        if chosen is None:
            raise CheckpointError(f"--resume {path}: this checkpoint is incomplete (its write never finished)")
        return run_dir, chosen
    if not given.is_dir():
        raise CheckpointError(f"--resume {path}: no such directory; expected a run's output directory")
    store = CheckpointStore(given / "checkpoints")
    latest = store.latest()
    if latest is None:
        raise CheckpointError(
            f"--resume {path}: no complete checkpoint under {store.dir} (the run stopped before writing one); "
            f"start it again without --resume"
        )
    return given, latest


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def changeable(path: str) -> bool:
    return any(path == allowed or path.startswith(allowed + ".") for allowed in CHANGEABLE_ON_RESUME)


def splits_the_training_rows(key: str, before, after, spec: JobSpec) -> bool:
    """The eval settings that decide which rows of a fixed dataset train (jobs/core/data.py, eval.holdout_fraction):
    the fraction, the eval's own file, and the eval turned on or off. Changing one mid-run trains on other rows."""
    if is_generated(spec.data.path):
        return False  # generated sources are evaluated on another seed's problems: training keeps every row
    if key in ("eval.holdout_fraction", "eval.data_path"):
        return True
    return key == "eval.every" and bool(before) != bool(after)


def spec_changes(checkpoint: Checkpoint, spec: JobSpec) -> dict[str, list]:
    """{field: [then, now]} for what changed since the checkpoint; a fixed field that changed is refused."""
    then = flatten(checkpoint.loop_state()["spec"])
    now = flatten(spec.model_dump(mode="json"))
    changes = {key: [then.get(key), now.get(key)] for key in sorted(then.keys() | now.keys()) if then.get(key) != now.get(key)}
    for key, (before, after) in changes.items():
        if not changeable(key) or splits_the_training_rows(key, before, after, spec):
            raise SpecError(
                f"--resume: {key} was {before!r} when {checkpoint.path.name} was written and is {after!r} now; "
                f"it cannot change mid-run (what can: {', '.join(CHANGEABLE_ON_RESUME)})"
            )
    if spec.iterations <= checkpoint.iteration + 1:
        raise SpecError(
            f"--resume: iterations is {spec.iterations} but {checkpoint.path.name} already holds iteration "
            f"{checkpoint.iteration}; set iterations above {checkpoint.iteration + 1} to train further"
        )
    return changes
