"""The reward actor: every configured reward source in one Ray actor, scoring in batches.

It writes one entry per source into `Sample.rewards`, plus the weighted
"total" that pairs are ranked by. It has its own CPUs/GPUs (`reward.cpus`,
`reward.gpus`), so a reward model does not compete with the engines or the
learners for memory. A reward actor that dies is replaced and the batch scored
again, up to faults.worker_restarts times in a job (as rollout workers are).
"""

from __future__ import annotations

import time
from typing import Callable

import ray
from ray.exceptions import RayActorError

from actors import placement
from jobs.core.records import Prompt, Sample
from actors.rewards.sources import ScoringRequest, combine, make_source
from actors.restarts import Replacements, died
from actors.progress_board import PhaseCounter
from jobs.core.errors import RewardError
from jobs.core.spec import JobSpec

SCORE_TIMEOUT_S = 1800
PROGRESS_PIECE = 8  # requests scored between two progress counts


class RewardActor:
    def __init__(self, spec: JobSpec, model_paths: dict[str, str]):
        device = "cuda" if spec.reward.gpus > 0 else "cpu"
        self.sources = {s.key: make_source(s, spec, model_paths, device) for s in spec.reward.sources}
        self.weights = {s.key: s.weight for s in spec.reward.sources}
        self.spec = spec

    def score(self, requests: list[ScoringRequest]) -> list[dict[str, float]]:
        # In pieces, so the job's progress lines can count them; a piece holds several of a reward model's
        # batches, so its length sorting still has rows to sort.
        piece = max([PROGRESS_PIECE] + [4 * s.batch_size for s in self.spec.reward.sources if hasattr(s, "batch_size")])
        counter = PhaseCounter("reward", len(requests))
        rewards = []
        for start in range(0, len(requests), piece):
            part = requests[start : start + piece]
            per_source = {key: source.score(part) for key, source in self.sources.items()}
            rewards += combine(per_source, self.weights, [r.label for r in part])
            counter.add(len(part), sum(r.response_tokens for r in part))
        counter.finish()
        return rewards


def scoring_requests(samples: list[Sample], prompts_by_index: dict[int, Prompt]) -> list[ScoringRequest]:
    requests, seen = [], {}
    for sample in samples:
        prompt = prompts_by_index[sample.prompt_index]
        # k-th sample of this prompt in this batch, to name it in errors.
        nth = seen[sample.prompt_index] = seen.get(sample.prompt_index, -1) + 1
        requests.append(
            ScoringRequest(
                label=f"iteration {sample.iteration}, data row {sample.prompt_index}, sample {nth} ({sample.source})",
                prompt=sample.prompt,
                messages=list(prompt.messages),
                response=sample.response,
                response_tokens=len(sample.response_token_ids),
                row=prompt.row,
            )
        )
    return requests


class RewardScorer:
    """The driver's handle on the reward actor."""

    def __init__(
        self,
        spec: JobSpec,
        model_paths: dict[str, str],
        env_vars: dict[str, str],
        note: Callable[[str], None] | None = None,
    ):
        """`note` receives one line per replaced actor (e.g. Progress.note)."""
        self.spec = spec
        self.model_paths = model_paths
        self.remote_actor = ray.remote(RewardActor).options(
            num_cpus=spec.reward.cpus, num_gpus=spec.reward.gpus, runtime_env={"env_vars": {**env_vars, **placement.thread_env(spec, placement.REWARD)}},
            **placement.options(placement.REWARD),  # its bundle in the job's placement group, replacements too
        )
        # Not waited for here: the driver starts every group at once and waits on ready_refs().
        self.actor = self._start()
        self.restarts = Replacements(spec, RewardError, note)

    def _start(self):
        return self.remote_actor.remote(self.spec, self.model_paths)

    def ready_refs(self) -> list[tuple[str, ray.ObjectRef]]:
        """A reference that resolves once the reward sources are loaded, or raises why they failed to."""
        return [("reward actor", self.actor.__ray_ready__.remote())]

    def take_restarts(self) -> int:
        """Reward actors replaced since the last call."""
        return self.restarts.take()

    def shutdown(self) -> None:
        ray.kill(self.actor)

    def score(self, samples: list[Sample], prompts_by_index: dict[int, Prompt]) -> dict:
        """Fill `rewards` of every sample; return the iteration's reward numbers."""
        started = time.perf_counter()
        before = self.restarts.total
        requests = scoring_requests(samples, prompts_by_index)
        while True:
            try:
                rewards = ray.get(self.actor.score.remote(requests), timeout=SCORE_TIMEOUT_S)
                break
            except RayActorError as error:
                if not died(error, self.actor):
                    raise
                self.restarts.allow("the reward actor", "scoring", error)
                # An unreachable actor may still be alive: it must not come back beside its replacement.
                ray.kill(self.actor)
                self.actor = self._start()
        for sample, entry in zip(samples, rewards):
            sample.rewards = entry
        metrics = {
            "reward_seconds": time.perf_counter() - started,
            "reward_actor_restarts": self.restarts.total - before,
        }
        for key in rewards[0] if rewards else ():
            name = "reward_mean" if key == "total" else f"reward_{key}_mean"
            metrics[name] = sum(entry[key] for entry in rewards) / len(rewards)
        return metrics
