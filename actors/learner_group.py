"""M DeepSpeed ranks as Ray actors, trained as one data-parallel learner."""

from __future__ import annotations

import random
import time

import ray

from actors import placement
from jobs.core.records import Pair, Sample
from actors.learner import Learner, micro_batches
from jobs.core.errors import HintflowError
from jobs.core.spec import JobSpec



DEATH_NOTICE_S = 10  # how long Ray may take to report a killed process as a dead actor


class LearnerDied(HintflowError):
    """A rank's process is gone: the others would wait in the next all-reduce forever, so the group stops."""

    kind = "learner failure"

    def __init__(self, message: str, rank: int = -1):
        super().__init__(message)
        self.rank = rank

    def __reduce__(self):
        return (LearnerDied, (str(self), self.rank))


class LearnerGroup:
    def __init__(self, spec: JobSpec, model_path: str, env_vars: dict[str, str], resume_from: str | None = None):
        """Starts the ranks and returns at once; `ready_refs()` tells when each one has its model and optimizer."""
        self.spec = spec
        remote_learner = ray.remote(Learner)
        self.ranks = [
            remote_learner.options(
                num_cpus=spec.learner.cpus_per_rank,
                num_gpus=spec.learner.gpus_per_rank,
                runtime_env={"env_vars": {**env_vars, **placement.thread_env(spec, placement.LEARNER, rank)}},
                **placement.options(placement.LEARNER, rank),  # its bundle in the job's placement group
            ).remote(spec, model_path, rank, spec.learner.ranks, resume_from)
            for rank in range(spec.learner.ranks)
        ]
        # Rank 0's address goes to every rank's setup as a reference: no round trip through the driver.
        master = self.ranks[0].master_address.remote()
        self._setup = [rank.setup.remote(master) for rank in self.ranks]

    def ready_refs(self) -> list[tuple[str, ray.ObjectRef]]:
        return [(f"learner rank {i}", ref) for i, ref in enumerate(self._setup)]

    def _on_every_rank(self, refs: list[ray.ObjectRef], doing: str) -> list:
        """Each rank's result. A rank that dies fails the group as soon as Ray notices, not after the
        surviving ranks time out in a collective."""
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except ray.exceptions.RayActorError as exc:
                raise self._died(refs.index(done[0]), exc, doing) from None
            except Exception:
                # A peer's death often shows first as a broken collective on a survivor
                # ("Connection reset by peer"): name the dead rank, not the symptom.
                for rank, ref in enumerate(refs):
                    if ref in pending and ray.wait([ref], timeout=DEATH_NOTICE_S)[0]:
                        try:
                            ray.get(ref)
                        except ray.exceptions.RayActorError as exc:
                            raise self._died(rank, exc, doing) from None
                        except Exception:
                            pass
                raise
        return ray.get(refs)

    @staticmethod
    def _died(rank: int, exc: Exception, doing: str) -> "LearnerDied":
        reason = (getattr(exc, "error_msg", "") or "").strip()
        reason = reason.splitlines()[0] if reason else type(exc).__name__
        return LearnerDied(f"learner rank {rank} died while {doing} ({reason})", rank)

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
        per_rank = self._on_every_rank(
            [r.train.remote([items[i] for i in shard], iteration) for r, shard in zip(self.ranks, shards)],
            f"training in iteration {iteration}",
        )
        for shard, result in zip(shards, per_rank):
            for i, record in zip(shard, result.pop("records")):
                for key, value in record.items():
                    setattr(items[i], key, value)
        weight = sum(r["weight"] for r in per_rank) or 1.0
        bookkeeping = {"weight", "tokens", "computed_positions", "seconds", "grad_norm", "lr", "optimizer_steps",
                       "peak_memory_mb", "setup_peak_memory_mb"}
        merged = {key: sum(r[key] for r in per_rank) / weight for key in per_rank[0] if key not in bookkeeping}
        seconds = max(r["seconds"] for r in per_rank)
        tokens = sum(r["tokens"] for r in per_rank)
        computed = sum(r["computed_positions"] for r in per_rank)
        merged.update(
            train_padding_fraction=1.0 - tokens / computed if computed else 0.0,
            train_seconds=seconds,
            train_tokens=tokens,
            train_tokens_per_s=tokens / seconds if seconds else 0.0,
            grad_norm=per_rank[0]["grad_norm"],
            lr=per_rank[0]["lr"],
            optimizer_steps=per_rank[0]["optimizer_steps"],
            **{f"learner_peak_memory_mb_rank{rank}": r["peak_memory_mb"] for rank, r in enumerate(per_rank)},
            **{f"learner_setup_peak_memory_mb_rank{rank}": r["setup_peak_memory_mb"] for rank, r in enumerate(per_rank)},
            **unused,
        )
        return merged

    def fill_reference_logps(self, items: list[Pair] | list[Sample]) -> float:
        """Summed response log-probs under the frozen initial model, once per pair (both responses) or
        sample (`reference_logp`); returns seconds."""
        started = time.perf_counter()
        ranks = len(self.ranks)
        shards = [list(range(len(items)))[rank::ranks] for rank in range(ranks)]
        # Under ZeRO-3 every rank runs as many forwards as the busiest (they gather together); else only
        # the ranks with items are asked.
        zero3 = self.spec.learner.zero_stage == 3
        size = self.spec.train.micro_batch_size
        forwards = max(len(micro_batches(shard, size, 1)) for shard in shards) if zero3 else 0
        asked = [(rank, shard) for rank, shard in zip(self.ranks, shards) if shard or zero3]
        results = self._on_every_rank(
            [rank.reference_logps.remote([items[i] for i in shard], forwards) for rank, shard in asked],
            "computing reference log-probs",
        )
        for (_, shard), logps in zip(asked, results):
            for i, value in zip(shard, logps):
                if isinstance(items[i], Pair):
                    items[i].reference_logp_chosen, items[i].reference_logp_rejected = value
                else:
                    items[i].reference_logp = value
        return time.perf_counter() - started

    def _rank0(self, method: str, *args) -> ray.ObjectRef:
        """Rank 0's answer. Under ZeRO-3 every rank takes part (the parameters it reads are gathered from all)."""
        callers = self.ranks if self.spec.learner.zero_stage == 3 else self.ranks[:1]
        return [getattr(rank, method).remote(*args) for rank in callers][0]

    def export_weights(self) -> ray.ObjectRef:
        """A reference to rank 0's weights in the object store; never pulled into the driver."""
        return self._rank0("export_weights")

    def weight_group_address(self) -> tuple[str, int]:
        """Where the weight broadcast group meets: rank 0's node, a port free there."""
        return ray.get(self.ranks[0].master_address.remote())

    def join_weight_group(self, address: str, port: int, world_size: int) -> ray.ObjectRef:
        """Rank 0 joins as the group's rank 0; wait on the reference together with the receivers' joins."""
        return self.ranks[0].join_weight_group.remote(address, port, world_size)

    def start_broadcast(self) -> ray.ObjectRef:
        """Rank 0 starts sending the weights (every rank gathers under ZeRO-3); resolves to the bytes sent."""
        return self._rank0("broadcast_weights")

    def save_checkpoint(self, directory: str) -> None:
        """Weights (rank 0) and every rank's optimizer shard into `directory`; the caller seals it."""
        self._on_every_rank([r.save_checkpoint.remote(directory) for r in self.ranks], "writing a checkpoint")

    def sequence_logprobs(self, token_ids: list[int]) -> list[float]:
        return ray.get(self._rank0("sequence_logprobs", token_ids))

    def shutdown(self) -> None:
        for rank in self.ranks:
            ray.kill(rank)
