"""Checkpoints a run can always come back to.

    DIR/checkpoints/iter-N/                  HF folder: model.safetensors, config, tokenizer
                                             (transformers and vLLM load it as it is)
    DIR/checkpoints/iter-N/training_state/   what the weights alone do not hold: DeepSpeed's
                                             optimizer and LR-scheduler state (one shard per
                                             learner rank) and loop.json (next iteration, data
                                             position, the spec it was written under)
    DIR/checkpoints/latest                   name of the newest complete checkpoint

With model.lora, iter-N/ is a peft adapter folder (adapter_config.json, adapter_model.safetensors,
tokenizer) instead, and iter-N/merged/ the full HF model when model.lora.save_merged asks for it.

A checkpoint is written under a dot-name, every file and folder is fsynced,
and only then is it renamed into place: a job killed mid-write leaves the
previous checkpoints untouched and a dot-folder that the next start removes.
Every RNG of a run is derived from (seed, iteration, prompt, rank) rather than
carried along, so the loop state is small: the next iteration and where the
data stream stands.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from jobs.core.atomic_files import fsync_dir, write_atomically
from jobs.core.errors import HintflowError

TRAINING_STATE = "training_state"
ADAPTER_CONFIG = "adapter_config.json"  # peft's: present in a LoRA checkpoint
MERGED = "merged"  # a LoRA checkpoint's full model, on request
LOOP_STATE = "loop.json"
LOOP_STATE_VERSION = 1
_NAME = re.compile(r"^iter-(\d+)$")


def checkpoint_due(iteration: int, last_iteration: int, every: int, every_seconds: float,
                   seconds_since_last_save: float) -> bool:
    """Save after `iteration`? After the last one always; else every `every` iterations or once
    `every_seconds` of wall time have passed since the last save, whichever comes first (0 turns either off)."""
    if iteration == last_iteration:
        return True
    if every and (iteration + 1) % every == 0:
        return True
    return bool(every_seconds) and seconds_since_last_save >= every_seconds


def is_adapter_checkpoint(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


class CheckpointError(HintflowError):
    kind = "checkpoint error"


@dataclass
class Checkpoint:
    path: Path
    iteration: int  # the last iteration whose update these weights contain

    @property
    def training_state(self) -> Path:
        return self.path / TRAINING_STATE

    def loop_state(self) -> dict:
        return json.loads((self.training_state / LOOP_STATE).read_text())


def fsync_tree(root: Path) -> None:
    """Flush every file, then every folder entry, so a power cut cannot leave a renamed but empty checkpoint."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


class CheckpointStore:
    def __init__(self, directory: Path, keep_last: int = 1):
        self.dir = directory
        self.keep_last = keep_last

    def staging_path(self, iteration: int) -> Path:
        return self.dir / f".iter-{iteration}.partial"

    def begin(self, iteration: int) -> Path:
        """An empty dot-folder for the learners to write into."""
        staging = self.staging_path(iteration)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return staging

    def commit(self, iteration: int, loop_state: dict) -> Checkpoint:
        """Seal what the learners wrote into begin()'s folder: loop state, fsync, rename, point `latest` at it."""
        staging = self.staging_path(iteration)
        (staging / TRAINING_STATE).mkdir(exist_ok=True)
        (staging / TRAINING_STATE / LOOP_STATE).write_text(
            json.dumps({"version": LOOP_STATE_VERSION, **loop_state}, indent=1)
        )
        fsync_tree(staging)
        target = self.dir / f"iter-{iteration}"
        if target.exists():  # a resumed run writing an iteration again: retire the old one first
            retired = self.dir / f".iter-{iteration}.retired"
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired)
        else:
            os.replace(staging, target)
        fsync_dir(self.dir)
        write_atomically(self.dir / "latest", target.name + "\n", durable=True)
        self._prune()
        return Checkpoint(target, iteration)

    def _prune(self) -> None:
        for old in self.complete()[: -self.keep_last]:
            shutil.rmtree(old.path)

    def remove_partial(self) -> list[str]:
        """Dot-folders of writes that never finished (a crash or kill mid-checkpoint)."""
        removed = []
        for leftover in self.dir.glob(".iter-*") if self.dir.exists() else ():
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover.name)
        return removed

    def complete(self) -> list[Checkpoint]:
        """Every complete checkpoint, oldest first: a renamed folder whose loop state is there."""
        found = []
        for path in self.dir.iterdir() if self.dir.exists() else ():
            match = _NAME.match(path.name)
            if match and (path / TRAINING_STATE / LOOP_STATE).is_file():
                found.append(Checkpoint(path, int(match.group(1))))
        return sorted(found, key=lambda c: c.iteration)

    def latest(self) -> Checkpoint | None:
        """The newest complete checkpoint. The scan decides, not the `latest` file (which is for people and
        tools): a kill between the rename and the pointer update leaves a complete checkpoint it does not name."""
        complete = self.complete()
        return complete[-1] if complete else None
