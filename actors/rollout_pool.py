"""The rollout workers as one pool: spread prompts over workers, merge what they return.

A worker that dies (its process killed, its node lost) is replaced by a new one with the
same index, which loads the current weights before it re-runs the dead one's slice: the
per-request sampling seeds make that slice come out as it would have without the fault.
After faults.worker_restarts replacements the job fails instead.

Generation can be started and finished apart (`start_generate`, `finish_generate`): with
rollout.max_policy_lag > 0 the driver starts the next iteration's generation before it
trains, and the engines work while the learners do. Each actor runs its calls in the order
they came, so a generation started before a weight push is served by the weights before it:
the pool counts pushes (`weights_version`) and stamps every sample with the version that made it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from actors import placement
from jobs.core.records import Prompt, Sample
from actors.decoding.cll_scorer import logprob_gap_metrics
from actors.restarts import Replacements, died
from actors.rollout_worker import RolloutWorker, vllm_env_vars
from actors.weights.broadcast import ranks_per_rollout_worker
from jobs.core.errors import HintflowError
from jobs.core.spec import JobSpec

START_TIMEOUT_S = 600


class RolloutError(HintflowError):
    kind = "rollout error"


@dataclass
class Calls:
    """Calls of one method on several workers, started and not yet collected."""

    method: str
    args: dict[int, tuple]  # worker index -> the arguments it was given (to re-run on a replacement)
    pending: dict  # ObjectRef -> worker index
    versions: dict[int, int]  # worker index -> weights version serving its call
    rerun: bool


class RolloutPool:
    def __init__(
        self, spec: JobSpec, model_path: str, env_vars: dict[str, str], note: Callable[[str], None] | None = None
    ):
        """`note` receives one line per replaced worker (e.g. Progress.note)."""
        self.spec = spec
        self.model_path = model_path
        self.env_vars = {**env_vars, **vllm_env_vars(spec)}
        self.remote_worker = ray.remote(
            num_cpus=spec.rollout.cpus_per_worker, num_gpus=spec.rollout.gpus_per_worker
        )(RolloutWorker)
        # Not waited for here: the driver starts every group at once and waits on ready_refs().
        self.workers = [self._start(index) for index in range(spec.rollout.workers)]
        # The last weights pushed; None while the engines still hold the model they started from. After a
        # broadcast, None until a replacement needs them: `fetch_weights` then asks the learners.
        self.weights: ray.ObjectRef | None = None
        self.fetch_weights: Callable[[], ray.ObjectRef] | None = None
        self.replaced = 0  # workers replaced so far: a weight broadcast group with a dead member must be re-formed
        # Pushes so far, counted from what the engines started with (the driver sets it to the first iteration).
        self.weights_version = 0
        self.restarts = Replacements(spec, RolloutError, note)
        self.retired: set[str] = set()  # ids of replaced workers: a call they had not finished runs again

    def _start(self, index: int):
        # Its bundle in the job's placement group (actors/placement.py): a replacement takes the same one.
        return self.remote_worker.options(
            runtime_env={"env_vars": {**self.env_vars, **placement.thread_env(self.spec, placement.ROLLOUT, index)}},
            **placement.options(placement.ROLLOUT, index),
        ).remote(self.spec, self.model_path, index)

    def ready_refs(self) -> list[tuple[str, ray.ObjectRef]]:
        """One reference per worker that resolves once its engine is up, or raises why it failed to start."""
        return [(f"rollout worker {i}", worker.__ray_ready__.remote()) for i, worker in enumerate(self.workers)]

    def take_restarts(self) -> int:
        """Workers replaced since the last call, by any method (generate, hinted, score, load_weights)."""
        return self.restarts.take()

    def generate(self, prompts: list[Prompt], iteration: int) -> tuple[list[Sample], dict]:
        """k samples per prompt, CLL-scored, in prompt order; plus generation numbers."""
        return self.finish_generate(self.start_generate(prompts, iteration), iteration)

    def start_generate(self, prompts: list[Prompt], iteration: int) -> Calls:
        """Queue generation on every worker, behind whatever they are doing; collect with finish_generate."""
        return self._begin("generate", self._slices(prompts, iteration))

    def finish_generate(self, calls: Calls, iteration: int) -> tuple[list[Sample], dict]:
        """The samples of a started generation, each with its policy lag against `iteration`."""
        before = self.restarts.total
        waited = time.perf_counter()
        results = self._collect(calls)
        waited = time.perf_counter() - waited
        samples = []
        for index in sorted(results):
            for sample in results[index][0]:
                sample.policy_lag = iteration - calls.versions[index]
                samples.append(sample)
        stats = [results[index][1] for index in sorted(results)]
        # Workers run in parallel, so the slowest one is the wall time.
        generate_seconds = max(s["generate_seconds"] for s in stats)
        tokens = sum(s["generated_tokens"] for s in stats)
        lags = [s.policy_lag for s in samples]
        computed = sum(s["cll_computed_positions"] for s in stats)
        return samples, {
            "cll_padding_fraction": 1.0 - sum(s["cll_real_tokens"] for s in stats) / computed if computed else 0.0,
            "rollout_wait_seconds": waited,  # what the driver waited for: less than generation when it overlapped
            "policy_lag_mean": sum(lags) / max(1, len(lags)),
            "policy_lag_max": max(lags, default=0),
            "generate_seconds": generate_seconds,
            "generated_tokens": tokens,
            "gen_tokens_per_s": tokens / generate_seconds if generate_seconds else 0.0,
            "cll_seconds": max(s["cll_seconds"] for s in stats),
            "rollout_replica_mb": max(s["replica_mb"] for s in stats),  # the second copy of the model a worker keeps
            **logprob_gap_metrics([gap for s in stats for gap in s["logprob_gaps"]]),
            **({"engine_replica_cll_max_diff": max(s["engine_replica_cll_max_diff"] for s in stats),
                "cll_replica_fallbacks": sum(s["cll_replica_fallbacks"] for s in stats)}
               if "cll_replica_fallbacks" in stats[0] else {}),
            "rollout_worker_restarts": self.restarts.total - before,
        }

    def hinted(self, jobs: list, iteration: int) -> tuple[list[Sample], dict]:
        """Hinted Decoding of the given problems, spread over the workers; samples in job order."""
        before = self.restarts.total
        samples, stats = self._spread_samples("hinted", jobs, iteration)
        seconds = max(s["hinted_seconds"] for s in stats)
        tokens = sum(s["hinted_tokens"] for s in stats)
        return samples, {
            "hinted_analysis_seconds": max(s["hinted_analysis_seconds"] for s in stats),
            "hinted_seconds": seconds,
            "hinted_tokens_per_s": tokens / seconds if seconds else 0.0,
            "hinted_lambda_mean": sum(s["hinted_lambda_mean"] * s["hinted_tokens"] for s in stats) / max(1, tokens),
            **({"hinted_engine_fallbacks": sum(s["hinted_engine_fallbacks"] for s in stats)}
               if "hinted_engine_fallbacks" in stats[0] else {}),
            "rollout_worker_restarts": self.restarts.total - before,
        }

    def score(self, samples: list[Sample]) -> list[Sample]:
        """Teacher-forced CLL and summed log-prob of given samples, spread over the workers, in order."""
        return [sample for scored in self._spread("score", samples) for sample in scored]

    def load_weights(self, weights: ray.ObjectRef, timeout_s: float | None = None) -> int:
        """Every engine and CLL replica takes these weights, in place; returns the bytes moved, all workers together.

        The pool keeps the reference (and so the object) for as long as these are the current
        weights: a worker replaced later loads them before it takes any work.
        """
        self.weights, self.fetch_weights = weights, None
        self.weights_version += 1
        # A replacement loads self.weights as it starts: nothing is left to re-run on it.
        loaded = self._call("load_weights", {i: (weights,) for i in range(len(self.workers))}, rerun=False,
                            timeout_s=timeout_s)
        return sum(size for size in loaded.values() if size is not None)

    @property
    def weight_group_size(self) -> int:
        """Learner rank 0 and every worker's ranks (actors/weights/broadcast.py)."""
        return 1 + ranks_per_rollout_worker(self.spec) * len(self.workers)

    def start_joining_weight_group(self, address: str, port: int) -> list[ray.ObjectRef]:
        """Every worker joins the weight group; wait on these together with learner rank 0's join."""
        return [
            worker.join_weight_group.remote(address, port, 1 + ranks_per_rollout_worker(self.spec) * index,
                                            self.weight_group_size)
            for index, worker in enumerate(self.workers)
        ]

    def receive_weights(self, fetch: Callable[[], ray.ObjectRef], timeout_s: float | None = None) -> int:
        """Every engine and replica takes the weights being broadcast to the group; returns the bytes received.

        `fetch` gives the same weights through the object store, for a worker replaced before the next push.
        """
        self.weights, self.fetch_weights = None, fetch
        self.weights_version += 1
        received = self._call("receive_weights", {i: () for i in range(len(self.workers))}, rerun=False,
                              timeout_s=timeout_s)
        return sum(size for size in received.values() if size is not None)

    def current_weights(self) -> ray.ObjectRef | None:
        """The weights the engines hold, in the object store (None: the model they started from)."""
        if self.weights is None and self.fetch_weights is not None:
            self.weights = self.fetch_weights()  # kept, like a pushed reference, until the next push
        return self.weights

    def _spread_samples(self, method: str, items: list, *args) -> tuple[list[Sample], list[dict]]:
        """For methods returning (samples, stats): all samples in input order, and each worker's stats."""
        results = self._spread(method, items, *args)
        return [s for worker_samples, _ in results for s in worker_samples], [stats for _, stats in results]

    def _spread(self, method: str, items: list, *args) -> list:
        """Call `method` on every worker with one contiguous slice of `items` each; results in worker order."""
        results = self._call(method, self._slices(items, *args))
        return [results[i] for i in sorted(results)]

    def _slices(self, items: list, *args) -> dict[int, tuple]:
        """{worker index: (its contiguous slice of items, *args)}; workers with an empty slice get no call."""
        n = len(self.workers)
        # Contiguous slices keep a prompt's samples together and the output in input order.
        bounds = [len(items) * i // n for i in range(n + 1)]
        return {i: (items[bounds[i] : bounds[i + 1]], *args) for i in range(n) if bounds[i + 1] > bounds[i]}

    def _call(self, method: str, calls: dict[int, tuple], rerun: bool = True, timeout_s: float | None = None) -> dict:
        """Run `method` on the given workers at once, {worker index: args}; returns {worker index: result}."""
        return self._collect(self._begin(method, calls, rerun), timeout_s)

    def _begin(self, method: str, args: dict[int, tuple], rerun: bool = True) -> Calls:
        pending = {getattr(self.workers[i], method).remote(*a): i for i, a in args.items()}
        return Calls(method, args, pending, {i: self.weights_version for i in args}, rerun)

    def _collect(self, calls: Calls, timeout_s: float | None = None) -> dict:
        """{worker index: result} of started calls.

        A worker that dies is replaced as soon as its call fails, while the others keep
        working, and (with `rerun`) the replacement runs the same call again, on the current
        weights. A call whose worker was already replaced (while it was queued behind others)
        runs again on the replacement.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        results = {}
        while calls.pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = ray.wait(list(calls.pending), num_returns=1, timeout=left)
            if not done:
                raise GetTimeoutError(f"RolloutWorker.{calls.method} did not finish within {timeout_s:g}s")
            index = calls.pending.pop(done[0])
            try:
                results[index] = ray.get(done[0])
            except RayActorError as error:
                if error.actor_id not in self.retired:
                    if not died(error, self.workers[index]):
                        raise
                    self._replace(index, calls.method, error)
                if calls.rerun:
                    calls.versions[index] = self.weights_version
                    calls.pending[getattr(self.workers[index], calls.method).remote(*calls.args[index])] = index
                else:
                    results[index] = None
        return results

    def _replace(self, index: int, during: str, error: RayActorError) -> None:
        """Put a new worker at `index` and wait until it holds the current weights."""
        while True:
            self.restarts.allow(f"rollout worker {index}", during, error)
            # An unreachable worker may still be alive: it must not come back beside its replacement.
            ray.kill(self.workers[index])
            self.retired.add(self.workers[index]._actor_id.hex())
            worker = self.workers[index] = self._start(index)
            self.replaced += 1
            weights = self.current_weights()
            if weights is None:
                caught_up = worker.__ray_ready__.remote()
            else:
                caught_up = worker.load_weights.remote(weights)
            try:
                ray.get(caught_up, timeout=START_TIMEOUT_S)
                return
            except RayActorError as again:
                if not died(again, worker):
                    raise
                error, during = again, "its start as a replacement"

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
