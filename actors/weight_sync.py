"""Moving the learner's new weights into every rollout engine, in place.

One interface, `push(learners, rollout) -> metrics` (sync_seconds, sync_bytes: what reached
the workers, all together, and sync_bytes_per_s), so a faster transport can
replace the generic one without the driver loop changing.

- `ObjectStoreWeightSync` (the generic path, verified on CPU): rank 0
  serialises its weights once (actors/weights_payload.py: safetensors, tied
  weights sent once), the bytes go into the Ray object store, and every
  rollout worker takes them from there (the driver only ever holds a
  reference). Each worker reloads its vLLM engine through the engine's own
  reload entry point, resets the prefix cache, and loads the CLL scorer
  replica. The pool keeps that reference until the next push, so a worker
  that dies (during the load or later) is replaced by one holding these
  weights (actors/rollout_pool.py).
- A GPU path over vLLM's NCCL/IPC weight transfer is NOT implemented yet; the
  spec rejects any `sync.method` other than `object_store`.
"""

from __future__ import annotations

import time

from actors.learner_group import LearnerGroup
from actors.rollout_pool import RolloutPool
from jobs.spec import SyncSpec

SYNC_TIMEOUT_S = 600


class ObjectStoreWeightSync:
    def push(self, learners: LearnerGroup, rollout: RolloutPool) -> dict:
        started = time.perf_counter()
        moved = rollout.load_weights(learners.export_weights(), timeout_s=SYNC_TIMEOUT_S)
        seconds = time.perf_counter() - started
        return {"sync_seconds": seconds, "sync_bytes": moved, "sync_bytes_per_s": moved / seconds if seconds else 0.0}


def make_weight_sync(spec: SyncSpec) -> ObjectStoreWeightSync:
    if spec.method == "object_store":
        return ObjectStoreWeightSync()
    raise ValueError(f"sync.method {spec.method!r} has no implementation")
