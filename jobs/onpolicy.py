"""The on-policy recipe: sample from the current policy, score with CLL, train, sync.

    for each iteration:
        prompts  <- next batch of the dataset
        samples  <- k responses per prompt from the rollout workers (current weights),
                    each scored with CLL under those same weights
        train the learner group on the samples (loss: sft or idft)
        push the new weights into every rollout engine, in place
        record metrics and samples; checkpoint when due
"""

from __future__ import annotations

import time

from actors.learner_group import LearnerGroup
from actors.rollout_pool import RolloutPool
from actors.weight_sync import make_weight_sync
from jobs.data import Prompt, PromptStream
from jobs.progress import Progress
from jobs.run_outputs import RunOutputs
from jobs.spec import JobSpec


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def cll_summary(samples) -> dict:
    """Iteration-level CLL numbers: token-weighted mean and the per-sample spread."""
    tokens = [phi for s in samples for phi in s.token_cll]
    per_sample = [s.cll["avg_cll"] for s in samples if s.token_cll]
    return {
        "cll_mean": mean(tokens),
        "cll_sample_mean": mean(per_sample),
        "cll_sample_min": min(per_sample, default=0.0),
        "cll_frac_gt_1": mean([s.cll["frac_gt_1"] for s in samples if s.token_cll]),
        "response_tokens_mean": mean([len(s.response_token_ids) for s in samples]),
        "finished_by_eos": mean([1.0 if s.finish_reason == "stop" else 0.0 for s in samples]),
    }


def run_onpolicy(spec: JobSpec, outputs: RunOutputs, model_path: str, prompts: list[Prompt], env_vars: dict) -> list[dict]:
    progress = Progress(spec.iterations)
    stream = PromptStream(prompts, shuffle=spec.data.shuffle, seed=spec.seed)
    progress.note(f"{len(prompts)} prompts from {spec.data.path}")

    progress.note(f"starting {spec.rollout.workers} rollout worker(s) and {spec.learner.ranks} learner rank(s)")
    rollout = RolloutPool(spec, model_path, env_vars)
    learners = LearnerGroup(spec, model_path, env_vars)
    weight_sync = make_weight_sync(spec.sync)

    outputs.start_metrics()
    history = []
    for iteration in range(spec.iterations):
        started = time.perf_counter()
        progress.begin(iteration, "generating")
        samples, generation = rollout.generate(stream.next_batch(spec.rollout.prompts_per_iteration), iteration)
        outputs.write_samples(iteration, samples)

        progress.step(f"training on {len(samples)} samples")
        training = learners.train(samples, iteration)

        progress.step("syncing weights")
        sync_seconds = weight_sync.push(learners, rollout)

        metrics = {
            "iteration": iteration,
            "loss": training.pop("loss"),
            **cll_summary(samples),
            "gen_tokens_per_s": generation.pop("gen_tokens_per_s"),
            "train_tokens_per_s": training.pop("train_tokens_per_s"),
            "sync_seconds": sync_seconds,
            **generation,
            **training,
            "samples": len(samples),
            "data_epoch": stream.epoch,
            "iteration_seconds": time.perf_counter() - started,
        }
        if (spec.checkpoint.every and (iteration + 1) % spec.checkpoint.every == 0) or iteration == spec.iterations - 1:
            progress.step("checkpointing")
            path = outputs.checkpoint_path(iteration)
            learners.save_checkpoint(str(path))
            outputs.mark_latest_checkpoint(path)
            metrics["checkpoint"] = str(path)
        outputs.append_metrics(metrics)
        history.append(metrics)
        progress.end(metrics)
    return history
