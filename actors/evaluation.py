"""Evaluations beside the loop: one eval actor, the weights of an iteration handed over by reference.

The loop never waits for an evaluation to finish, only (up to eval.max_wait_seconds)
for the previous one when the next is due; what comes back is written as an eval row
of metrics.jsonl (`"kind": "eval"`) and the judged answers as eval/iter-N.jsonl.

Before the first iteration the weights the run starts from are evaluated too
(iteration -1 for a new run): the baseline the gain is measured against.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import ray

from actors.eval_worker import EvalWorker
from actors.placement import EVAL, thread_env
from jobs.core.data import heldout_data_spec, heldout_prompts, load_prompts
from jobs.core.data_sources import response_text
from jobs.core.records import Prompt
from jobs.core.ood_text import ood_passages
from jobs.algorithms.pairs import written_sample
from jobs.core.atomic_files import write_atomically
from jobs.core.spec import JobSpec

if TYPE_CHECKING:  # the driver's output files, handed in by the loop
    from jobs.outputs.progress import Progress
    from jobs.outputs.run_outputs import RunOutputs


def eval_data_spec(spec: JobSpec):
    """Held-out problems, never among the training prompts: jobs/core/data.py heldout_data_spec says how."""
    return heldout_data_spec(spec)


def transfer_data_spec(spec: JobSpec):
    """The never-trained task: its own source and columns, the training data's chat settings and next seed."""
    transfer = spec.eval.transfer
    data = spec.data.model_copy(update={
        "path": transfer.path, "task_options": transfer.task_options, "prompt_column": transfer.prompt_column,
        "answer_column": transfer.answer_column, "seed": spec.data.seed + 1, "max_prompts": transfer.problems,
    })
    data._part = None  # all of it: the training data's held-out split is not this source's
    return data


@dataclass
class EvalInputs:
    problems: list[Prompt]
    references: list  # Samples of the held-out problems' reference solutions, where the data has them
    ood_token_ids: list[list[int]]
    transfer_problems: list[Prompt] = field(default_factory=list)


def eval_inputs(spec: JobSpec, tokenizer) -> EvalInputs:
    """Problems, their reference solutions (where the data has them), tokenized out-of-domain passages, and the
    transfer task's problems."""
    data = eval_data_spec(spec)
    problems = heldout_prompts(spec, tokenizer)
    with_solution = [p for p in problems if _has(p, data.solution_column)]
    references = [written_sample(p, data.solution_column, tokenizer, -1, "reference") for p in with_solution]
    passages = ood_passages(spec.eval.ood_text, spec.eval.ood_passages, spec.seed)
    ood = [tokenizer(text, add_special_tokens=False).input_ids[: spec.eval.ood_max_tokens] for text in passages]
    transfer = []
    if spec.eval.transfer:
        transfer, _ = load_prompts(transfer_data_spec(spec), tokenizer, spec.max_prompt_tokens)
    return EvalInputs(problems, references, [ids for ids in ood if len(ids) > 1], transfer[: spec.eval.transfer.problems]
                      if spec.eval.transfer else [])


def _has(prompt: Prompt, column: str) -> bool:
    try:
        return bool(response_text(prompt.row, prompt.index, column))
    except Exception:  # a held-out set without reference solutions still measures accuracy and forgetting
        return False


def start_eval_worker(spec: JobSpec, policy_path: str, base_model_path: str, reward_model_paths: dict,
                      inputs: EvalInputs, env_vars: dict, options: dict) -> ray.actor.ActorHandle:
    """The eval actor, not waited for: `inputs` is what eval_inputs() gave."""
    from actors.rollout_worker import vllm_env_vars

    return ray.remote(EvalWorker).options(
        num_cpus=spec.eval.cpus, num_gpus=spec.eval.gpus,
        runtime_env={"env_vars": {**env_vars, **vllm_env_vars(spec), **thread_env(spec, EVAL)}}, **options,
    ).remote(spec, policy_path, base_model_path, reward_model_paths, inputs)


class Evaluation:
    def __init__(self, spec: JobSpec, worker, outputs: RunOutputs, progress: Progress, record):
        """`record(row)` files an eval row wherever training rows go (metrics.jsonl, TensorBoard, report)."""
        self.spec = spec
        self.worker = worker
        self.outputs = outputs
        self.progress = progress
        self.record = record
        self.running: tuple[int, float, ray.ObjectRef] | None = None
        # When the eval actor (started beside the loop) has loaded: set from Ray's thread, noted at the next collect.
        self.ready_after: float | None = None
        self.ready_noted = False
        created = time.perf_counter()

        def loaded(future) -> None:
            if future.exception() is None:  # a failed start surfaces as the failure of the first evaluation
                self.ready_after = time.perf_counter() - created

        worker.__ray_ready__.remote().future().add_done_callback(loaded)
        self.skipped = 0
        self.failed: str | None = None  # why the eval actor is gone, once it is

    def due(self, iteration: int) -> bool:
        every = self.spec.eval.every
        return bool(every) and self.failed is None and ((iteration + 1) % every == 0 or iteration == self.spec.iterations - 1)

    def start(self, iteration: int, weights: ray.ObjectRef | None) -> None:
        """Evaluate the weights of `iteration` (None: what the eval engine holds, i.e. the starting weights)."""
        # The eval of the last iteration is never skipped: no training is left to overlap with it.
        final = iteration == self.spec.iterations - 1
        if self.running:
            self.collect(wait_seconds=None if final else self.spec.eval.max_wait_seconds)
        if self.running:
            self.skipped += 1
            self.progress.note(f"eval of iteration {iteration} skipped: the eval of iteration {self.running[0]} "
                               f"is still running (eval.max_wait_seconds={self.spec.eval.max_wait_seconds:g})")
            return
        self.running = (iteration, time.perf_counter(), self.worker.evaluate.remote(weights, iteration))

    def _note_ready(self) -> None:
        if self.ready_after is not None and not self.ready_noted:
            self.ready_noted = True
            self.progress.note(f"eval actor loaded beside the loop in {self.ready_after:.1f}s")

    def collect(self, wait_seconds: float | None = 0) -> None:
        """Record the running evaluation if it has finished (waiting up to `wait_seconds`; None: until it has)."""
        self._note_ready()
        if not self.running:
            return
        iteration, started, ref = self.running
        if not ray.wait([ref], timeout=wait_seconds)[0]:
            return
        self.running = None
        self._note_ready()
        try:
            metrics, records = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as exc:
            # Measuring is not worth the training run: note it, and evaluate no further.
            self.failed = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
            self.progress.note(f"eval of iteration {iteration} failed, no further evaluations in this run "
                               f"({self.failed})")
            return
        self.outputs.eval_dir.mkdir(exist_ok=True)
        write_atomically(self.outputs.eval_dir / f"iter-{iteration}.jsonl",
                         "".join(json.dumps(r) + "\n" for r in records))
        row = {"kind": "eval", "iteration": iteration, **metrics,
               "eval_seconds": time.perf_counter() - started, "eval_skipped": self.skipped}
        self.record(row)
        self.progress.note(
            f"eval of iteration {iteration}: pass@1 {metrics['eval_pass1']:.2f}"
            + (f"  pass@{metrics['eval_k']} {metrics['eval_pass_at_k']:.2f}" if metrics["eval_k"] else "")
            + (f"  transfer pass@1 {metrics['eval_transfer_pass1']:.2f}" if "eval_transfer_pass1" in metrics else "")
            + f"  forget_kl {metrics['forget_kl']:.4f}  rank>1 "
            f"{metrics['forget_rank_gt1']:.3f}  centroid {metrics['forget_centroid_shift']:.4f}"
            + (f"  ref cll {metrics['eval_reference_cll']:+.3f}" if "eval_reference_cll" in metrics else "")
        )
