"""M DeepSpeed ranks as Ray actors, trained as one data-parallel learner."""

from __future__ import annotations

import random

import ray

from actors.batching import Sample
from actors.learner import Learner
from jobs.spec import JobSpec

SETUP_TIMEOUT_S = 600


class LearnerGroup:
    def __init__(self, spec: JobSpec, model_path: str, env_vars: dict[str, str]):
        self.spec = spec
        remote_learner = ray.remote(Learner).options(
            num_cpus=spec.learner.cpus_per_rank,
            num_gpus=spec.learner.gpus_per_rank,
            runtime_env={"env_vars": env_vars},
        )
        self.ranks = [
            remote_learner.remote(spec, model_path, rank, spec.learner.ranks) for rank in range(spec.learner.ranks)
        ]
        master_addr, master_port = ray.get(self.ranks[0].master_address.remote(), timeout=SETUP_TIMEOUT_S)
        ray.get([r.setup.remote(master_addr, master_port) for r in self.ranks], timeout=SETUP_TIMEOUT_S)

    def train(self, samples: list[Sample], iteration: int) -> dict:
        """Shuffle, give every rank an equal shard, train, and merge the ranks' numbers."""
        order = list(range(len(samples)))
        random.Random(self.spec.seed * 1_000_003 + iteration).shuffle(order)
        shards = [[samples[i] for i in order[rank :: len(self.ranks)]] for rank in range(len(self.ranks))]
        per_rank = ray.get([r.train.remote(shard, iteration) for r, shard in zip(self.ranks, shards)])
        loss_tokens = sum(r["loss_tokens"] for r in per_rank) or 1.0
        merged = {key: sum(r[key] for r in per_rank) / loss_tokens for key in ("loss", "nll", "gamma_mean", "weight_mean")}
        if self.spec.algorithm != "idft":
            del merged["gamma_mean"], merged["weight_mean"]
        seconds = max(r["seconds"] for r in per_rank)
        tokens = sum(r["tokens"] for r in per_rank)
        merged.update(
            train_seconds=seconds,
            train_tokens=tokens,
            train_tokens_per_s=tokens / seconds if seconds else 0.0,
            grad_norm=per_rank[0]["grad_norm"],
            lr=per_rank[0]["lr"],
            optimizer_steps=per_rank[0]["optimizer_steps"],
        )
        return merged

    def export_weights(self) -> ray.ObjectRef:
        """A reference to rank 0's weights in the object store; never pulled into the driver."""
        return self.ranks[0].export_weights.remote()

    def save_checkpoint(self, directory: str) -> str:
        return ray.get(self.ranks[0].save_checkpoint.remote(directory))

    def sequence_logprobs(self, token_ids: list[int]) -> list[float]:
        return ray.get(self.ranks[0].sequence_logprobs.remote(token_ids))

    def shutdown(self) -> None:
        for rank in self.ranks:
            ray.kill(rank)
