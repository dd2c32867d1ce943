"""The score worker: `hintflow score`'s role, the CLL replica (actors/decoding/cll_scorer.py) as an actor
of its own that scores a shard of written examples and hands back what it found per example."""

from __future__ import annotations

import torch

from actors.decoding.cll_scorer import CLLScorer
from jobs.core.records import Sample


class ScoreWorker:
    def __init__(self, model_path: str, dtype: str, batch_size: int, pad_id: int, threads: int,
                 trust_remote_code: bool = False):
        torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.scorer = CLLScorer(model_path, getattr(torch, dtype), device, batch_size, pad_id, trust_remote_code)

    def score(self, samples: list[Sample]) -> list[list[float]]:
        """Each sample's per-token CLL of its response under its prompt, in the order given."""
        self.scorer.score(samples)
        return [sample.token_cll for sample in samples]
