"""Moving the learner's new weights into every rollout engine, in place.

One interface, `push(learners, rollout) -> metrics` (sync_seconds, sync_bytes: what reached
the workers, all together, and sync_bytes_per_s), so the transport is the spec's choice
(`sync.method`) and the driver loop never changes.

- `ObjectStoreWeightSync` (the generic path, CPU and GPU): rank 0 serialises its weights once
  (actors/weights/payload.py: safetensors, tied weights sent once), the bytes go into the Ray
  object store, and every rollout worker takes them from there (the driver only ever holds a
  reference). Each worker reloads its vLLM engine through the engine's own reload entry point,
  resets the prefix cache, and loads the CLL scorer replica. The pool keeps that reference
  until the next push, so a worker that dies (during the load or later) is replaced by one
  holding these weights (actors/rollout_pool.py).
- `BroadcastWeightSync`: the same payload, broadcast by learner rank 0 over a process group of
  its own to every engine worker and replica (actors/weights/broadcast.py: gloo on CPU, NCCL on
  GPU), straight into their memory. The group is formed at the first push and again after a
  worker was replaced. A replacement loads the current weights through the object store; a
  broadcast that fails (a member died in it) is done again through the object store, so the
  engines never keep old weights.
"""

from __future__ import annotations

import time

import ray

from actors.learner_group import LearnerGroup
from actors.rollout_pool import RolloutPool
from jobs.core.spec import SyncSpec

SYNC_TIMEOUT_S = 600


def sync_metrics(started: float, moved: int, **extra) -> dict:
    seconds = time.perf_counter() - started
    return {"sync_seconds": seconds, "sync_bytes": moved, "sync_bytes_per_s": moved / seconds if seconds else 0.0,
            **extra}


class ObjectStoreWeightSync:
    def push(self, learners: LearnerGroup, rollout: RolloutPool) -> dict:
        started = time.perf_counter()
        return sync_metrics(started, rollout.load_weights(learners.export_weights(), timeout_s=SYNC_TIMEOUT_S))


class BroadcastWeightSync:
    def __init__(self):
        self.formed_after = None  # the pool's replacement count when the group was formed; None: no group

    def push(self, learners: LearnerGroup, rollout: RolloutPool) -> dict:
        started = time.perf_counter()
        if self.formed_after != rollout.replaced:
            self._form_group(learners, rollout)
        sending = learners.start_broadcast()
        try:
            received = rollout.receive_weights(learners.export_weights, timeout_s=SYNC_TIMEOUT_S)
            ray.get(sending, timeout=SYNC_TIMEOUT_S)
        except Exception as error:  # noqa: BLE001 - any failure inside the group: the object store still works
            self.formed_after = None
            try:
                ray.get(sending, timeout=SYNC_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - the sender failing with the receivers is expected
                pass
            moved = rollout.load_weights(learners.export_weights(), timeout_s=SYNC_TIMEOUT_S)
            return sync_metrics(started, moved, sync_broadcast_fallbacks=1,
                                sync_broadcast_error=f"{type(error).__name__}: {error}"[:300])
        return sync_metrics(started, received, sync_broadcast_fallbacks=0)

    def _form_group(self, learners: LearnerGroup, rollout: RolloutPool) -> None:
        address, port = learners.weight_group_address()
        joins = [learners.join_weight_group(address, port, rollout.weight_group_size),
                 *rollout.start_joining_weight_group(address, port)]
        ray.get(joins, timeout=SYNC_TIMEOUT_S)
        self.formed_after = rollout.replaced


def make_weight_sync(spec: SyncSpec) -> ObjectStoreWeightSync | BroadcastWeightSync:
    if spec.method == "object_store":
        return ObjectStoreWeightSync()
    if spec.method == "broadcast":
        return BroadcastWeightSync()
    raise ValueError(f"sync.method {spec.method!r} has no implementation")
