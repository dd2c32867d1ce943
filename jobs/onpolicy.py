"""The recipe: one loop, whose stages the spec's `algorithm` (jobs/algorithms/) plugs in.

    for each iteration:
        prompts  <- next batch of the dataset
        samples  <- k responses per prompt from the rollout workers (current weights),
                    each scored with CLL and its summed log-prob under those same weights
                    (rollout.max_policy_lag N > 0: the next N iterations' generations are already
                    queued on the engines, so they run while this iteration trains; their
                    weights are at most N updates old, and each sample records its lag)
                    (rollout.mode reference: the dataset's own solutions instead, scored the same way)
                    (irft, fsft: plus the prompts' demonstrations, scored the same way)
        rewards  <- the reward actor scores every sample (when reward sources are set)
        answer-first (rollout.mode hinted/rewrite): Hinted Decoding for the problems no sample
                    got right, verify again, keep right samples that pass the CLL filter
                    (rollout.mode verified: the same without the hints, i.e. rejection sampling)
        items    <- the algorithm's stage: the samples themselves, or pairs (dpo/rpo: best vs worst
                    by reward; irft, fsft: (demonstration, own generation); offline: the dataset's
                    chosen/rejected, and no generation at all)
        reference log-probs, once per item: the sampler's come with the samples,
                    the initial model's from a frozen copy on the learners
        the algorithm's stateful stage, if it has one (f-DPG: the target p = P/Z)
        train the learner group on the samples or the pairs
        push the new weights into every rollout engine, in place
        record metrics, samples and pairs; checkpoint when due
        evaluate when due (eval.every): the eval actor takes these weights and works beside the
                    loop; held-out pass@1 / pass@k, forgetting on out-of-domain text
    a stop signal ends the loop at the next safe point (between iterations, or before the
    weights change) with a checkpoint of the last finished iteration
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from actors.weights.sync import make_weight_sync
from jobs.algorithms.base import IterationData
from jobs.stages.answer_first import answer_first
from jobs.core.checkpoints import Checkpoint, CheckpointStore, checkpoint_due, is_adapter_checkpoint
from jobs.core.data import PromptStream
from jobs.core.records import Prompt
from jobs.algorithms.pairs import demonstration_samples
from jobs.outputs.metrics_rows import TRAIN, row_kind
from jobs.outputs.progress import Progress
from jobs.outputs.report import write_report
from jobs.outputs.run_outputs import RunOutputs
from jobs.core.spec import JobSpec
from actors.evaluation import Evaluation, eval_inputs
from jobs.startup import StoppedWhileStarting, start_actors
from jobs.stop_signals import StopRequests
from jobs.outputs.trackers import Trackers


REPORT_REFRESH_S = 10.0  # report.html is rewritten at most this often, and once more when the loop ends


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
        "cll_frac_above_minus1": mean([s.cll["frac_gt_1"] for s in samples if s.token_cll]),
        "response_tokens_mean": mean([len(s.response_token_ids) for s in samples]),
        "finished_by_eos": mean([1.0 if s.finish_reason == "stop" else 0.0 for s in samples]),
    }


def demonstration_summary(demonstrations) -> dict:
    """How far the dataset's own answers sit from the policy (CLL), and their log-likelihood under it."""
    return {
        "demonstration_cll_mean": mean([d.cll["avg_cll"] for d in demonstrations]),
        "demonstration_logp_mean": mean([d.sequence_logp for d in demonstrations]),
    }


@dataclass
class LoopEnd:
    history: list[dict]  # every iteration's metrics, including those before a resume
    checkpoint: Checkpoint | None  # the newest complete checkpoint when the loop ended
    stopped_after: int | None = None  # set when a stop signal ended the run early: the last finished iteration


@dataclass
class RunContext:
    """What jobs/run.py prepared before the loop: everything checked, nothing started."""

    spec: JobSpec
    outputs: RunOutputs
    model_path: str  # a local folder the actors load (the builtin model built, a hub model fetched)
    prompts: list[Prompt]
    env_vars: dict  # every actor's environment
    tokenizer: object
    reward_model_paths: dict[str, str]
    stop: StopRequests
    resume: Checkpoint | None = None  # where this start continues from (a --resume, or a job restart)
    started: float = 0.0  # perf_counter() when the job started, for seconds_to_first_iteration
    prompt_counts: dict | None = None  # prompts dropped or truncated for length
    quiet: bool = False  # --quiet: no progress lines, only the summary at the end


def run_onpolicy(run: RunContext) -> LoopEnd:
    spec, outputs, prompts, tokenizer = run.spec, run.outputs, run.prompts, run.tokenizer
    stop, resume = run.stop, run.resume
    progress = Progress(spec.iterations, quiet=run.quiet)
    stream = PromptStream(prompts, shuffle=spec.data.shuffle, seed=spec.seed)
    prompts_by_index = {p.index: p for p in prompts}
    checkpoints = CheckpointStore(outputs.checkpoints_dir, spec.checkpoint.keep_last)
    first = 0
    if resume:
        first = resume.loop_state()["next_iteration"]
        stream.restore(resume.loop_state()["data"])
        progress.note(f"resuming at iteration {first} from {resume.path}")
    progress.note(f"{len(prompts)} prompts from {spec.data.path}")

    history = [m for m in outputs.start_metrics(keep_before=first) if row_kind(m) == TRAIN]
    engine_weights = str(resume.path) if resume else run.model_path
    # vLLM cannot load a LoRA checkpoint (an adapter folder): its engines start on the base model and
    # get the learner's merged weights pushed before the first iteration.
    push_before_first = bool(resume and is_adapter_checkpoint(resume.path))
    if push_before_first:
        engine_weights = run.model_path
    actors_started = time.perf_counter()
    try:
        actors = start_actors(
            spec, progress, stop, run.model_path, engine_weights,
            str(resume.path) if resume else None, run.reward_model_paths, run.env_vars,
            eval_inputs(spec, tokenizer) if spec.eval.every else None,
        )
    except StoppedWhileStarting:
        return LoopEnd(history, resume, stopped_after=resume.iteration if resume else None)
    rollout, rewards, learners = actors.rollout, actors.rewards, actors.learners
    if rollout:
        rollout.weights_version = first  # the engines hold the weights iteration `first` starts from
    trackers = Trackers(spec, outputs.dir, first, resume.loop_state().get("trackers") if resume else None)

    report_written = [float("-inf")]

    def refresh_report(now: bool = False) -> None:
        # Rendering re-reads every row (~0.3 s on a small run): a third of an iteration of the tiny
        # model if done per row. A page someone watches needs no more than one refresh per interval.
        if not now and time.monotonic() - report_written[0] < REPORT_REFRESH_S:
            return
        try:
            write_report(outputs.dir)
            report_written[0] = time.monotonic()
        except Exception as exc:  # a derived page is never worth stopping training for
            progress.note(f"report.html not updated ({type(exc).__name__}: {exc})")

    def record(row: dict) -> None:
        """One metrics row, training or eval: metrics.jsonl, the trackers, and report.html (at most every few seconds)."""
        outputs.append_metrics(row)
        trackers.log(row)
        refresh_report()

    evaluation = Evaluation(spec, actors.evaluator, outputs, progress, record) if actors.evaluator else None
    algorithm = spec.registered_algorithm
    stage = None  # the algorithm's running state, restored from the checkpoint's loop state
    if algorithm.stateful_stage:
        stage = algorithm.stateful_stage(spec, resume.loop_state().get(algorithm.name) if resume else None)
    weight_sync = make_weight_sync(spec.sync)

    def save_checkpoint(iteration: int, data_position: dict) -> Checkpoint:
        progress.note(f"writing checkpoint iter-{iteration}")
        learners.save_checkpoint(str(checkpoints.begin(iteration)))
        loop_state = {"next_iteration": iteration + 1, "data": data_position, "spec": spec.model_dump(mode="json")}
        if stage:
            loop_state[algorithm.name] = stage.state()
        if trackers.run_ids():
            loop_state["trackers"] = trackers.run_ids()
        return checkpoints.commit(iteration, loop_state)

    with actors, trackers:  # actors killed, trackers closed, however the loop ends
        latest, finished_position, last = resume, stream.state(), spec.iterations - 1
        # Iterations whose batch is taken and whose generation is queued: iteration -> (stream position
        # before its batch, the batch, the generation). Always empty with rollout.max_policy_lag 0.
        ahead: dict[int, tuple] = {}
        last_save = time.monotonic()  # checkpoint.every_seconds counts from here, then from each save
        if push_before_first and rollout:
            weight_sync.push(learners, rollout)
        if evaluation and not resume and spec.eval.at_start:
            evaluation.start(-1, None)  # the starting weights: the baseline every gain is measured from
        for iteration in range(first, spec.iterations):
            if stop.requested:
                break
            started_iteration = time.perf_counter()
            metrics: dict = {"iteration": iteration}
            if iteration == first:  # of this start: a resumed run measures its own start-up
                metrics.update(seconds_to_first_iteration=started_iteration - run.started, **(run.prompt_counts or {}),
                               startup_before_actors_seconds=actors_started - run.started,
                               **{f"startup_{name}": seconds for name, seconds in actors.startup.items()})
                if resume:
                    metrics["resumed_from"] = str(resume.path)
            if iteration in ahead:
                _, batch, generation_calls = ahead.pop(iteration)
            else:
                batch, generation_calls = stream.next_batch(spec.rollout.prompts_per_iteration), None

            samples, demonstrations = [], []
            progress.begin(iteration, "pairing" if not rollout else "CLL-scoring the reference solutions"
                           if spec.rollout.mode == "reference" else "generating, then CLL-scoring under the same weights",
                           counts="rollout" if rollout else None)
            if spec.rollout.mode == "reference":  # SFT data as written: no generation, only its CLL
                samples = rollout.score(demonstration_samples(batch, spec.data, tokenizer, iteration))
                metrics.update(cll_summary(samples))
            elif rollout:
                generation_calls = generation_calls or rollout.start_generate(batch, iteration)
                for later in range(iteration + 1, min(iteration + spec.rollout.max_policy_lag, last) + 1):
                    if later not in ahead:
                        position = stream.state()
                        later_batch = stream.next_batch(spec.rollout.prompts_per_iteration)
                        ahead[later] = (position, later_batch, rollout.start_generate(later_batch, later))
                samples, generation = rollout.finish_generate(generation_calls, iteration)
                metrics.update(cll_summary(samples), **generation)
            if algorithm.demonstrations:
                demonstrations = rollout.score(demonstration_samples(batch, spec.data, tokenizer, iteration))
                metrics.update(demonstration_summary(demonstrations))
            if rewards and samples:
                progress.step(f"scoring {len(samples)} samples for reward", counts="reward")
                metrics.update(rewards.score(samples, prompts_by_index))
            recorded = samples + demonstrations
            if spec.rollout.mode in ("verified", "hinted", "rewrite"):
                progress.step("answer-first: keeping the verified answers"
                              + (", Hinted Decoding for the problems answered wrong" if spec.rollout.mode != "verified" else ""),
                              counts="rollout")
                samples, recorded, hinting = answer_first(
                    samples, batch, rollout, rewards, spec, tokenizer, prompts_by_index, iteration
                )
                metrics.update(hinting)
            if recorded:
                outputs.write_samples(iteration, recorded)

            items, made = algorithm.make_items(spec, IterationData(batch, samples, demonstrations, tokenizer, iteration))
            metrics.update(made)
            if spec.uses_initial_reference and items:
                progress.step(f"reference log-probs of {len(items)} {algorithm.trains_on}")
                metrics["reference_seconds"] = learners.fill_reference_logps(items)
            if stage and items:
                metrics.update(stage.score(items))

            if stop.requested:
                break  # the last safe point before the weights change: this iteration is redone on resume
            progress.step(f"training on {len(items)} {algorithm.trains_on}", counts="learner", unit=algorithm.trains_on)
            metrics.update(learners.train(items, iteration))
            if algorithm.trains_on == "pairs":
                outputs.write_pairs(iteration, items)

            if rollout:
                progress.step("syncing weights")
                metrics.update(weight_sync.push(learners, rollout))

            # A resume redoes the queued iterations from their own batches, on the checkpoint's weights.
            finished_position = ahead[min(ahead)][0] if ahead else stream.state()
            metrics.update(
                samples=len(samples), data_epoch=stream.epoch, iteration_seconds=time.perf_counter() - started_iteration
            )
            metrics.update(actors.peak_memory())
            # Replacements anywhere in the iteration (generation, hinting, scoring, the weight sync).
            if rollout:
                metrics["rollout_worker_restarts"] = rollout.take_restarts()
            if rewards:
                metrics["reward_actor_restarts"] = rewards.take_restarts()
            if checkpoint_due(iteration, last, spec.checkpoint.every, spec.checkpoint.every_seconds,
                              time.monotonic() - last_save):
                latest = save_checkpoint(iteration, finished_position)
                last_save = time.monotonic()
                metrics["checkpoint"] = str(latest.path)
            record(metrics)
            history.append(metrics)
            progress.end(metrics)
            if evaluation:
                if evaluation.due(iteration):
                    evaluation.start(iteration, rollout.current_weights() if rollout else learners.export_weights())
                evaluation.collect()

        if not stop.requested:
            if evaluation:
                progress.note("waiting for the last evaluation")
                evaluation.collect(wait_seconds=None)
            refresh_report(now=True)
            trackers.finish(outputs.dir / "report.html", str(latest.path) if latest else None)
            return LoopEnd(history, latest)
        last_finished = history[-1]["iteration"] if history else None
        if last_finished is not None and (latest is None or latest.iteration != last_finished):
            latest = save_checkpoint(last_finished, finished_position)
        refresh_report(now=True)
        trackers.finish(outputs.dir / "report.html", str(latest.path) if latest else None)
        return LoopEnd(history, latest, stopped_after=last_finished)
