"""Everything a run leaves in its output directory.

    DIR/spec.yaml                 the resolved spec (defaults filled in)
    DIR/metrics.jsonl             one JSON object per iteration, flushed as it happens
    DIR/samples/iter-N.jsonl      every sample of iteration N with its CLL and rewards
    DIR/pairs/iter-N.jsonl        every preference pair of iteration N with its reference and policy log-probs
    DIR/checkpoints/iter-N/       HF folder: safetensors, config, tokenizer
    DIR/checkpoints/latest        name of the newest complete checkpoint

Files are written whole-or-not-at-all (temp file + rename) or appended and
flushed line by line, so a crash leaves only complete records behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from actors.batching import Pair, Sample
from jobs.spec import JobSpec


def write_atomically(path: Path, text: str) -> None:
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    staging.write_text(text)
    os.replace(staging, path)


class RunOutputs:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory).resolve()
        self.samples_dir = self.dir / "samples"
        self.pairs_dir = self.dir / "pairs"
        self.checkpoints_dir = self.dir / "checkpoints"
        self.metrics_path = self.dir / "metrics.jsonl"
        for folder in (self.dir, self.samples_dir, self.checkpoints_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def save_spec(self, spec: JobSpec) -> None:
        write_atomically(self.dir / "spec.yaml", spec.to_yaml())

    def start_metrics(self) -> None:
        # A rerun into the same directory starts a fresh history.
        self.metrics_path.write_text("")

    def append_metrics(self, metrics: dict) -> None:
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(metrics) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def write_samples(self, iteration: int, samples: list[Sample]) -> Path:
        path = self.samples_dir / f"iter-{iteration}.jsonl"
        write_atomically(path, "".join(json.dumps(asdict(s)) + "\n" for s in samples))
        return path

    def write_pairs(self, iteration: int, pairs: list[Pair]) -> Path:
        self.pairs_dir.mkdir(exist_ok=True)
        path = self.pairs_dir / f"iter-{iteration}.jsonl"
        write_atomically(path, "".join(json.dumps(asdict(p)) + "\n" for p in pairs))
        return path

    def checkpoint_path(self, iteration: int) -> Path:
        return self.checkpoints_dir / f"iter-{iteration}"

    def mark_latest_checkpoint(self, path: Path) -> None:
        write_atomically(self.checkpoints_dir / "latest", path.name + "\n")

    def read_metrics(self) -> list[dict]:
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
