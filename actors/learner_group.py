"""M DeepSpeed ranks as Ray actors, trained as one data-parallel learner."""

from __future__ import annotations

import random
import time

import ray

from actors.batching import Pair, Sample
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

    def train(self, items: list[Sample] | list[Pair], iteration: int) -> dict:
        """Shuffle, give every rank an equal shard, train, and merge the ranks' numbers.

        Every rank must run the same number of micro-batches. Sample counts tile by the spec's own
        check; pair counts vary with ties, so the last few pairs (fewer than ranks x accumulation
        steps) sit this iteration out and are counted as `pairs_unused`. Trained pairs get their
        policy log-probs and loss filled in, in place.
        """
        ranks = len(self.ranks)
        usable = len(items) - len(items) % (ranks * self.spec.train.gradient_accumulation_steps)
        order = list(range(len(items)))
        random.Random(self.spec.seed * 1_000_003 + iteration).shuffle(order)
        shards = [order[:usable][rank::ranks] for rank in range(ranks)]
        unused = {}
        if self.spec.sample_count_varies:
            unused = {("pairs_unused" if self.spec.trains_on_pairs else "samples_unused"): len(items) - usable}
        if usable == 0:
            return {"loss": None, "train_tokens_per_s": 0.0, "train_seconds": 0.0, "train_tokens": 0, **unused}
        per_rank = ray.get(
            [r.train.remote([items[i] for i in shard], iteration) for r, shard in zip(self.ranks, shards)]
        )
        for shard, result in zip(shards, per_rank):
            for i, record in zip(shard, result.pop("records")):
                for key, value in record.items():
                    setattr(items[i], key, value)
        weight = sum(r["weight"] for r in per_rank) or 1.0
        bookkeeping = {"weight", "tokens", "seconds", "grad_norm", "lr", "optimizer_steps"}
        merged = {key: sum(r[key] for r in per_rank) / weight for key in per_rank[0] if key not in bookkeeping}
        seconds = max(r["seconds"] for r in per_rank)
        tokens = sum(r["tokens"] for r in per_rank)
        merged.update(
            train_seconds=seconds,
            train_tokens=tokens,
            train_tokens_per_s=tokens / seconds if seconds else 0.0,
            grad_norm=per_rank[0]["grad_norm"],
            lr=per_rank[0]["lr"],
            optimizer_steps=per_rank[0]["optimizer_steps"],
            **unused,
        )
        return merged

    def fill_reference_logps(self, pairs: list[Pair]) -> float:
        """Summed log-probs of both responses under the frozen initial model, once per pair; returns seconds."""
        started = time.perf_counter()
        ranks = len(self.ranks)
        shards = [shard for shard in (list(range(len(pairs)))[rank::ranks] for rank in range(ranks)) if shard]
        results = ray.get([r.reference_logps.remote([pairs[i] for i in shard]) for r, shard in zip(self.ranks, shards)])
        for shard, logps in zip(shards, results):
            for i, (chosen, rejected) in zip(shard, logps):
                pairs[i].reference_logp_chosen, pairs[i].reference_logp_rejected = chosen, rejected
        return time.perf_counter() - started

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
