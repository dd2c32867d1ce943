"""Everything a run leaves in its output directory.

    DIR/spec.yaml                 the resolved spec (defaults filled in)
    DIR/resumes.jsonl             one line per --resume: the checkpoint it continued from, the spec changes
    DIR/metrics.jsonl             one JSON object per iteration, flushed as it happens
    DIR/samples/iter-N.jsonl      every sample of iteration N with its CLL and rewards (no samples/ folder
                                  when nothing is sampled: offline preference training)
    DIR/pairs/iter-N.jsonl        every preference pair of iteration N with its reference and policy log-probs
    DIR/eval/iter-N.jsonl         every held-out answer the eval actor judged for the weights of iteration N
    DIR/checkpoints/iter-N/       HF folder: safetensors, config, tokenizer; training_state/ beside
                                  the weights (jobs/core/checkpoints.py)
    DIR/checkpoints/latest        name of the newest complete checkpoint
    DIR/builtin/tiny-llama/       model.path builtin:tiny-llama: the tiny model, built here on the fly
                                  (jobs/run.py resolve_model) and loaded from here by every actor

Files are written whole-or-not-at-all (temp file + rename) or appended and
flushed line by line, so a crash leaves only complete records behind.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from jobs.core.records import Pair, Sample
from jobs.core.atomic_files import write_atomically
from jobs.outputs.metrics_rows import parse_rows
from jobs.core.spec import JobSpec


class RunOutputs:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory).resolve()
        self.samples_dir = self.dir / "samples"
        self.pairs_dir = self.dir / "pairs"
        self.eval_dir = self.dir / "eval"
        self.checkpoints_dir = self.dir / "checkpoints"
        self.metrics_path = self.dir / "metrics.jsonl"
        # samples/ and pairs/ appear with their first file: a run that samples nothing names no empty folder.
        for folder in (self.dir, self.checkpoints_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def save_spec(self, spec: JobSpec) -> None:
        write_atomically(self.dir / "spec.yaml", spec.to_yaml())

    def start_metrics(self, keep_before: int = 0) -> list[dict]:
        """Keep the records of iterations before `keep_before` (a resumed run's past) and return them.

        A fresh run (0) starts an empty history; a resumed one drops what came after its checkpoint,
        since those iterations run again.
        """
        kept = [m for m in self.read_metrics() if m["iteration"] < keep_before] if self.metrics_path.exists() else []
        write_atomically(self.metrics_path, "".join(json.dumps(m) + "\n" for m in kept))
        return kept

    def append_metrics(self, metrics: dict) -> None:
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(metrics) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def write_samples(self, iteration: int, samples: list[Sample]) -> Path:
        self.samples_dir.mkdir(exist_ok=True)
        path = self.samples_dir / f"iter-{iteration}.jsonl"
        write_atomically(path, "".join(json.dumps(asdict(s)) + "\n" for s in samples))
        return path

    def write_pairs(self, iteration: int, pairs: list[Pair]) -> Path:
        self.pairs_dir.mkdir(exist_ok=True)
        path = self.pairs_dir / f"iter-{iteration}.jsonl"
        write_atomically(path, "".join(json.dumps(asdict(p)) + "\n" for p in pairs))
        return path

    def record_resume(self, checkpoint, changes: dict) -> None:
        """One line per resume in resumes.jsonl: which checkpoint, and every spec field that changed."""
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checkpoint": str(checkpoint.path),
                  "next_iteration": checkpoint.iteration + 1, "spec_changes": changes}
        with (self.dir / "resumes.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        return parse_rows(self.metrics_path.read_text())
