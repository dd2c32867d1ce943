"""CLL from the engine itself: the entropy of every sampled position, recorded while vLLM samples.

CLL needs, per response token, log p of the token and the entropy H of the full next-token
distribution (docs/algorithms.md section 1). vLLM returns the first (its raw log-probs) but not
the second. Without this module a teacher-forced pass over every sample on the CLL replica
provides both, which on a CPU costs about as much as generating (issue: performance).

`EntropyRecorder` is a vLLM V1 logits processor. vLLM applies the processors that are not
argmax-invariant to the float32 logits before penalties, temperature and top-p/top-k (see
vllm/v1/sample/sampler.py), so the distribution it sees is the model's own at temperature 1,
the one CLL is defined on. For every row whose request carries `extra_args[REQUEST_KEY]` it
stores H at the index of the token about to be sampled (the length of that request's output
so far: a step whose sample is thrown away, as in a chunked prefill, is overwritten by the
next). It never changes the logits.

The recorder lives in vLLM's worker process; the rollout worker collects what it recorded
through the worker extension (actors/weights/vllm_receiver.py, `hintflow_take_entropies`).
A sample whose recorded positions are not exactly 0..T-1 is scored on the replica instead,
and counted (`cll_replica_fallbacks`).
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

REQUEST_KEY = "hintflow_entropy_key"
PROCESSOR = "actors.decoding.engine_entropy:EntropyRecorder"  # vLLM wants <module>:<class>


def follow_batch(rows: dict, batch_update: BatchUpdate | None, entry) -> list:
    """Keep a logits processor's map of batch row -> its entry for the request there, through one BatchUpdate
    (removed, then added, then moved: the order vLLM asks for). `entry(params, output_tokens)` makes a new
    request's entry, None for a request the processor ignores. Returns the entries added."""
    if batch_update is None:
        return []
    for index in batch_update.removed:
        rows.pop(index, None)
    added = []
    for index, params, _, output in batch_update.added:
        value = entry(params, output)
        if value is None:
            rows.pop(index, None)
        else:
            rows[index] = value
            added.append(value)
    for first, second, direction in batch_update.moved:
        a, b = rows.pop(first, None), rows.pop(second, None)
        if a is not None:
            rows[second] = a
        if b is not None and direction == MoveDirectionality.SWAP:
            rows[first] = b
    return added


class EntropyRecorder(LogitsProcessor):
    # The instances in this process (one per engine); the worker extension reads them.
    instances: list["EntropyRecorder"] = []

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.rows: dict[int, tuple[str, list[int]]] = {}  # batch row -> (request key, its running output tokens)
        self.recorded: dict[str, dict[int, float]] = {}  # request key -> {token index: entropy}
        EntropyRecorder.instances.append(self)

    def is_argmax_invariant(self) -> bool:
        # Otherwise vLLM skips it for greedy batches and applies it after temperature.
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        def entry(params, output):
            key = (params.extra_args or {}).get(REQUEST_KEY)
            # The n samples of one request are cloned with seeds seed, seed + 1, ...: the seed tells them apart.
            return None if key is None else (f"{key}/{params.seed}", output)

        follow_batch(self.rows, batch_update, entry)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if self.rows:
            rows = sorted(i for i in self.rows if i < logits.shape[0])
            with torch.no_grad():
                log_dist = torch.log_softmax(logits[rows].float(), dim=-1)
                entropy = (-(log_dist.exp() * log_dist).sum(-1)).tolist()
            for row, value in zip(rows, entropy):
                key, output = self.rows[row]
                self.recorded.setdefault(key, {})[len(output)] = value
        return logits

    @classmethod
    def take(cls, keys: list[str]) -> dict[str, dict[int, float]]:
        """What was recorded for these request keys (key/seed), removed from the recorders."""
        taken = {}
        for recorder in cls.instances:
            for key in keys:
                if key in recorder.recorded:
                    taken[key] = recorder.recorded.pop(key)
        return taken


def entropies_in_order(recorded: dict[int, float] | None, length: int) -> list[float] | None:
    """The entropies of token 0..length-1, or None when the recording does not line up with the tokens."""
    if length == 0:
        return []
    if recorded is None or sorted(recorded) != list(range(length)):
        return None
    return [recorded[t] for t in range(length)]
