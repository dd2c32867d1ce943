"""Starting the job's actors: all at once, each reported as it becomes ready.

First the job's placement group reserves every actor's resources (actors/placement.py),
so a job the cluster cannot place fails before anything loads. Engines, reward models and
DeepSpeed ranks take tens of seconds each to load; started together they overlap, and a
line per actor shows where the time goes.

The eval actor is started only once the training actors are ready, and not waited for: its
first evaluation runs beside the loop anyway, and loading a fourth vLLM engine next to the
others would only slow the ones the first iteration needs (benchmarks.md, time to first
iteration). Its evaluations queue behind its start.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import ray

from actors.learner_group import LearnerDied, LearnerGroup
from actors.placement import EVAL, JobPlacement, role_of
from actors.process_memory import peak_rss_mb, peak_rss_of
from actors.progress_board import start_progress_board
from actors.reward_actor import RewardScorer
from actors.rollout_pool import RolloutPool
from jobs.outputs.progress import Progress
from jobs.core.spec import JobSpec
from jobs.stop_signals import StopRequests

START_TIMEOUT_S = 900

if TYPE_CHECKING:
    from actors.evaluation import EvalInputs


class StoppedWhileStarting(Exception):
    """A stop signal arrived before every actor was ready: nothing new to save."""


@dataclass
class Actors:
    rollout: RolloutPool | None
    rewards: RewardScorer | None
    learners: LearnerGroup
    placement: JobPlacement | None = None
    evaluator: ray.actor.ActorHandle | None = None
    # Seconds from the start of start_actors: placement_seconds, ready_seconds_<role> (its slowest actor).
    startup: dict[str, float] = field(default_factory=dict)

    def __enter__(self) -> "Actors":
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    def peak_memory(self) -> dict[str, float]:
        """Peak RSS in MiB of the driver and, per role, of its largest actor: peak_rss_mb_<role>.

        The eval actor is left out: it works beside the loop, and asking it would wait for its evaluation.
        """
        memory = {"peak_rss_mb_driver": peak_rss_mb()}
        for role, group in (("rollout", self.rollout and self.rollout.workers),
                            ("reward", self.rewards and [self.rewards.actor]), ("learner", self.learners.ranks)):
            peak = peak_rss_of(group) if group else None
            if peak is not None:
                memory[f"peak_rss_mb_{role}"] = peak
        return memory

    def shutdown(self) -> None:
        """Kill every actor now. Left to Ray's own teardown, an engine process can outlive the job by ~30 s."""
        for group in (self.rollout, self.rewards, self.learners):
            if group is not None:
                group.shutdown()
        if self.evaluator is not None:
            ray.kill(self.evaluator)
        if self.placement is not None:
            self.placement.remove()


def start_actors(
    spec: JobSpec,
    progress: Progress,
    stop: StopRequests,
    initial_model: str,
    policy_weights: str,
    resume_from: str | None,
    reward_model_paths: dict[str, str],
    env_vars: dict,
    eval_inputs: "EvalInputs | None" = None,
) -> Actors:
    """Reserve the job's placement group, start rollout workers (on `policy_weights`), the reward actor
    and the learner ranks in it, and wait for all; then start the eval actor (given `eval_inputs`).

    Where each actor landed goes to placement.json in `spec.output_dir` (jobs.run sets it to the
    resolved output directory), so a multi-node run shows which node ran what.
    """
    started = time.perf_counter()
    progress.watch(start_progress_board())  # first: every actor looks it up by name when it starts counting
    placement = JobPlacement.create(spec)
    try:
        if not placement.wait_until_placed(spec.placement.timeout_seconds, stopping=lambda: stop.requested):
            raise StoppedWhileStarting
        if spec.output_dir:
            placement.write(Path(spec.output_dir) / "placement.json")
        progress.note(f"placement group ({placement.plan.strategy}) ready: {len(placement.plan.bundles)} bundles on "
                      f"{len(set(placement.bundle_nodes.values()))} node(s) after {time.perf_counter() - started:.1f}s")
        actors = Actors(
            rollout=RolloutPool(spec, policy_weights, env_vars, note=progress.note) if spec.uses_rollout else None,
            rewards=RewardScorer(spec, reward_model_paths, env_vars, note=progress.note) if spec.reward.sources else None,
            learners=LearnerGroup(spec, initial_model, env_vars, resume_from=resume_from),
            placement=placement,
        )
    except BaseException:
        placement.remove()
        raise
    actors.startup["placement_seconds"] = time.perf_counter() - started
    labelled = [*(actors.rollout.ready_refs() if actors.rollout else []),
                *(actors.rewards.ready_refs() if actors.rewards else []), *actors.learners.ready_refs()]
    progress.note(f"starting {len(labelled)} actors: {', '.join(label for label, _ in labelled)}"
                  + (f"; the {EVAL} once they are ready" if eval_inputs is not None else ""))
    label_of = {ref: label for label, ref in labelled}
    pending = list(label_of)
    try:
        while pending:
            if stop.requested:
                raise StoppedWhileStarting
            done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            if not done:
                if time.perf_counter() - started > START_TIMEOUT_S:
                    raise TimeoutError(f"actors not ready after {START_TIMEOUT_S} s: {[label_of[r] for r in pending]}")
                continue
            try:
                ray.get(done[0])
            except ray.exceptions.RayActorError as exc:
                label = label_of[done[0]]
                if not label.startswith("learner rank"):
                    raise
                raise LearnerDied(f"{label} died while starting ({type(exc).__name__})", int(label.split()[-1])) from None
            label, ready = label_of[done[0]], time.perf_counter() - started
            progress.note(f"{label} ready after {ready:.1f}s")
            # The slowest of each role: where the start-up went, in the first metrics row.
            key = f"ready_seconds_{role_of(label).replace(' ', '_')}"
            actors.startup[key] = max(actors.startup.get(key, 0.0), ready)
        if eval_inputs is not None:
            from actors.evaluation import start_eval_worker

            actors.evaluator = start_eval_worker(spec, policy_weights, initial_model, reward_model_paths, eval_inputs,
                                                 env_vars, placement.options(EVAL))
    except BaseException:
        actors.shutdown()
        raise
    return actors
