"""The eval actor: what training gained on held-out problems, and what it cost everywhere else.

A rollout worker (a vLLM engine, plus the HF replica that holds the same
weights) that also keeps the frozen base model and the verifier. The driver
hands it the weights of an iteration by reference and goes on training; the
evaluation runs beside the loop (actors/evaluation.py). docs/algorithms.md section 10.

    target task   greedy pass@1 and sampled pass@k on held-out problems, judged by the verifier
    forgetting    KL(base || current), token-rank shift and hidden-state centroid shift
                  on out-of-domain text (actors/forgetting.py)
    the data      mean CLL of held-out reference solutions under the current weights: does the
                  model move towards the data, or the data towards the model?
    transfer      greedy pass@1 on a second task that is never trained on (eval.transfer)

Every judged answer comes back as a record (prompt, gold answer, extracted answer, response,
verdict), so a reader can check the score problem by problem.
"""

from __future__ import annotations

import time

import torch

from jobs.core.records import Sample
from actors.rewards.math_verifier import extract_final_answer
from actors.training.trainable_model import TORCH_DTYPES
from actors.reward_actor import scoring_requests
from actors.rewards.sources import make_source
from actors.rollout_worker import RolloutWorker, sampling_seed
from jobs.core.data_sources import column_value
from jobs.core.spec import JobSpec
from actors.forgetting_accumulator import ForgettingAccumulator

# Its engine seed; sampling seeds are per request, so this only has to differ from the rollout workers'.
EVAL_WORKER_INDEX = 1_000
# pass@k samples get their own seed stream, apart from training's (offsets 0-2 in rollout_worker.py).
PASS_AT_K_SEED_OFFSET = 3


class EvalWorker(RolloutWorker):
    def __init__(
        self,
        spec: JobSpec,
        model_path: str,
        base_model_path: str,
        reward_model_paths: dict[str, str],
        inputs,  # actors.evaluation.EvalInputs
    ):
        from transformers import AutoModelForCausalLM

        # The forgetting metrics run the current weights in transformers beside the base: the eval actor keeps its
        # replica whatever rollout.cll_check says (its weights come through the object store, never the broadcast).
        spec = spec.model_copy(update={"rollout": spec.rollout.model_copy(update={"cll_check": "replica"})})
        super().__init__(spec, model_path, EVAL_WORKER_INDEX)
        device = "cuda" if spec.eval.gpus > 0 else "cpu"
        self.base = AutoModelForCausalLM.from_pretrained(
            base_model_path, dtype=TORCH_DTYPES[spec.model.dtype], trust_remote_code=spec.model.trust_remote_code
        ).to(device).eval().requires_grad_(False)
        verifier = next(s for s in spec.reward.sources if s.key == spec.eval.verifier)
        self.verifier = make_source(verifier, spec, reward_model_paths, device)
        self.problems = inputs.problems
        self.references = inputs.references
        self.ood_token_ids = inputs.ood_token_ids
        self.transfer_problems = inputs.transfer_problems
        self.transfer_verifier = None
        if spec.eval.transfer:
            # The same verifier, reading the transfer task's own answer column.
            transfer_spec = spec.model_copy(update={"data": spec.data.model_copy(
                update={"answer_column": spec.eval.transfer.answer_column})})
            self.transfer_verifier = make_source(verifier, transfer_spec, reward_model_paths, device)

    def evaluate(self, weights: bytes | None, iteration: int) -> tuple[dict, list[dict]]:
        """Metrics of the given weights (None: the ones the engine holds), and every answer it judged."""
        if weights is not None:
            self.load_weights(weights)
        started = time.perf_counter()
        k = self.spec.eval.k
        greedy = self._answers(self.problems, iteration, n=1, temperature=0.0)
        sampled = self._answers(self.problems, iteration, n=k, temperature=self.spec.eval.temperature) if k else []
        self._judge(greedy + sampled, self.problems, self.verifier)
        metrics = {
            "eval_problems": len(self.problems),
            "eval_k": k,
            "eval_pass1": sum(s.rewards["correct"] for s in greedy) / len(greedy),
            "eval_answer_tokens_mean": sum(len(s.response_token_ids) for s in greedy) / len(greedy),
        }
        if k:
            metrics["eval_pass_at_k"] = pass_at_k(sampled, len(self.problems))
        answer_column = self.spec.data.answer_column
        groups = [("greedy", greedy, self.problems, answer_column), ("sampled", sampled, self.problems, answer_column)]
        if self.transfer_problems:
            transfer = self._answers(self.transfer_problems, iteration, n=1, temperature=0.0)
            self._judge(transfer, self.transfer_problems, self.transfer_verifier)
            metrics.update(eval_transfer_problems=len(transfer),
                           eval_transfer_pass1=sum(s.rewards["correct"] for s in transfer) / len(transfer))
            groups.append(("transfer", transfer, self.transfer_problems, self.spec.eval.transfer.answer_column))
        answers_seconds = time.perf_counter() - started
        started_forgetting = time.perf_counter()
        metrics.update(self._forgetting())
        if self.references:
            self.scorer.score(self.references)  # refills their CLL in place, under these weights
            metrics["eval_reference_cll"] = sum(r.cll["avg_cll"] for r in self.references) / len(self.references)
        metrics.update(
            eval_answer_seconds=answers_seconds,
            eval_forgetting_seconds=time.perf_counter() - started_forgetting,
        )
        records = []
        for mode, group, problems, answer_column in groups:
            by_index = {p.index: p for p in problems}
            records += [
                {"mode": mode, "problem": s.prompt_index, "prompt": by_index[s.prompt_index].question,
                 "gold": str(column_value(by_index[s.prompt_index].row, answer_column)),
                 "extracted": extract_final_answer(s.response), "response": s.response,
                 "reward": s.rewards["verifier"], "correct": bool(s.rewards["correct"]),
                 "response_tokens": len(s.response_token_ids), "finish_reason": s.finish_reason}
                for s in group
            ]
        return metrics, records

    def _answers(self, problems, iteration: int, n: int, temperature: float) -> list[Sample]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [
            SamplingParams(
                n=n, temperature=temperature, max_tokens=self.spec.rollout.max_new_tokens,
                seed=sampling_seed(self.spec.seed, iteration, p.index) + PASS_AT_K_SEED_OFFSET,
            )
            for p in problems
        ]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p.token_ids)) for p in problems], params, use_tqdm=False
        )
        return [
            Sample(
                iteration=iteration, prompt_index=p.index, prompt=p.text, prompt_token_ids=list(p.token_ids),
                response=c.text, response_token_ids=list(c.token_ids), finish_reason=str(c.finish_reason),
                source="eval",
            )
            for p, output in zip(problems, outputs) for c in output.outputs
        ]

    def _judge(self, answers: list[Sample], problems, verifier) -> None:
        rewards = verifier.score(scoring_requests(answers, {p.index: p for p in problems}))
        for sample, reward in zip(answers, rewards):
            sample.rewards = {"verifier": reward, "correct": float(reward >= self.spec.eval.pass_threshold)}

    @torch.no_grad()
    def _forgetting(self) -> dict:
        """Base vs current on the out-of-domain passages, right-padded batches combined exactly."""
        totals = ForgettingAccumulator()
        size = self.spec.rollout.cll_batch_size
        for start in range(0, len(self.ood_token_ids), size):
            batch = self.ood_token_ids[start : start + size]
            width = max(len(ids) for ids in batch)
            input_ids = torch.tensor([ids + [self.scorer.pad_id] * (width - len(ids)) for ids in batch])
            attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch])
            totals.add_models(self.base, self.scorer.model, input_ids, attention_mask)
        return totals.result()


def pass_at_k(sampled: list[Sample], problems: int) -> float:
    """Share of problems with at least one right answer among their k samples (n = k: the unbiased
    estimator 1 - C(n-c, k) / C(n, k) of Chen et al. 2021 reduces to this)."""
    solved = {s.prompt_index for s in sampled if s.rewards["correct"]}
    return len(solved) / problems
