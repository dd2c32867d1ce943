"""The rollout workers as one pool: spread prompts over workers, merge what they return."""

from __future__ import annotations

import ray

from actors.batching import Sample
from actors.rollout_worker import RolloutWorker, vllm_env_vars
from jobs.data import Prompt
from jobs.spec import JobSpec

START_TIMEOUT_S = 600


class RolloutPool:
    def __init__(self, spec: JobSpec, model_path: str, env_vars: dict[str, str]):
        remote_worker = ray.remote(RolloutWorker).options(
            num_cpus=spec.rollout.cpus_per_worker,
            num_gpus=spec.rollout.gpus_per_worker,
            runtime_env={"env_vars": {**env_vars, **vllm_env_vars(spec)}},
        )
        self.workers = [remote_worker.remote(spec, model_path, index) for index in range(spec.rollout.workers)]
        # Surface a failed engine start here, not at the first generate.
        ray.get([w.__ray_ready__.remote() for w in self.workers], timeout=START_TIMEOUT_S)

    def generate(self, prompts: list[Prompt], iteration: int) -> tuple[list[Sample], dict]:
        """k samples per prompt, CLL-scored, in prompt order; plus generation numbers."""
        samples, stats = self._spread_samples("generate", prompts, iteration)
        # Workers run in parallel, so the slowest one is the wall time.
        generate_seconds = max(s["generate_seconds"] for s in stats)
        tokens = sum(s["generated_tokens"] for s in stats)
        return samples, {
            "generate_seconds": generate_seconds,
            "generated_tokens": tokens,
            "gen_tokens_per_s": tokens / generate_seconds if generate_seconds else 0.0,
            "cll_seconds": max(s["cll_seconds"] for s in stats),
            "engine_scorer_logprob_max_diff": max(s["engine_scorer_logprob_max_diff"] for s in stats),
        }

    def hinted(self, jobs: list, iteration: int) -> tuple[list[Sample], dict]:
        """Hinted Decoding of the given problems, spread over the workers; samples in job order."""
        samples, stats = self._spread_samples("hinted", jobs, iteration)
        seconds = max(s["hinted_seconds"] for s in stats)
        tokens = sum(s["hinted_tokens"] for s in stats)
        return samples, {
            "hinted_analysis_seconds": max(s["hinted_analysis_seconds"] for s in stats),
            "hinted_seconds": seconds,
            "hinted_tokens_per_s": tokens / seconds if seconds else 0.0,
            "hinted_lambda_mean": sum(s["hinted_lambda_mean"] * s["hinted_tokens"] for s in stats) / max(1, tokens),
        }

    def score(self, samples: list[Sample]) -> list[Sample]:
        """Teacher-forced CLL and summed log-prob of given samples, spread over the workers, in order."""
        return [sample for scored in self._spread("score", samples) for sample in scored]

    def _spread_samples(self, method: str, items: list, *args) -> tuple[list[Sample], list[dict]]:
        """For methods returning (samples, stats): all samples in input order, and each worker's stats."""
        results = self._spread(method, items, *args)
        return [s for worker_samples, _ in results for s in worker_samples], [stats for _, stats in results]

    def _spread(self, method: str, items: list, *args) -> list:
        """Call `method` on every worker with one contiguous slice of `items` each; results in worker order."""
        n = len(self.workers)
        # Contiguous slices keep a prompt's samples together and the output in input order.
        bounds = [len(items) * i // n for i in range(n + 1)]
        return ray.get(
            [
                getattr(worker, method).remote(items[bounds[i] : bounds[i + 1]], *args)
                for i, worker in enumerate(self.workers)
                if bounds[i + 1] > bounds[i]
            ]
        )

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
