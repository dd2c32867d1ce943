"""The answer-first pipeline (docs/algorithms.md section 3): a stage of the one loop, for rollout.mode hinted/rewrite
(and verified: the same stage with no hints, so only the policy's own right answers are kept).

    attempts   <- the on-policy samples of each problem, already scored by the reward actor
    rewrites   <- Hinted Decoding only for problems with no right attempt, then verified again
    CLL        <- every sample is scored under the PLAIN prompt (question only) with the current weights
    kept       <- right attempts and rescued rewrites whose avg CLL reaches rollout.hinted.cll_threshold
    references <- the dataset's own solutions for the same problems, CLL-scored the same way, so the
                  metrics show how far the reference sits from the policy beside what is kept

Every sample is recorded; those not trained on carry `dropped` ("wrong", "no_header",
"repetition", "cll", and "pair_apart": a Hinted Decoding pair that came apart in the engine, with no
replica to redo it on).
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.core.records import Prompt, Sample
from jobs.core.data import render_messages
from jobs.core.data_sources import response_text
from jobs.algorithms.pairs import written_sample
from jobs.core.spec import JobSpec


@dataclass
class HintJob:
    """One problem to rewrite: the plain prompt the result is trained on, and the hint stream's prompt."""

    prompt_index: int
    prompt_text: str
    prompt_token_ids: list[int]
    hint_prompt_ids: list[int]
    reference_solution: str


def hint_jobs(prompts: list[Prompt], spec: JobSpec, tokenizer) -> list[HintJob]:
    hinted = spec.rollout.hinted
    jobs = []
    for prompt in prompts:
        solution = response_text(prompt.row, prompt.index, spec.data.solution_column)
        messages = [
            {"role": "system", "content": hinted.system_prompt},
            {"role": "user", "content": f"Question:\n{prompt.question}\n\nReference solution:\n{solution}"},
        ]
        _, hint_ids = render_messages(messages, spec.data, tokenizer, f"data row {prompt.index} (hint prompt)")
        jobs.append(HintJob(prompt.index, prompt.text, list(prompt.token_ids), hint_ids, solution))
    return jobs


def passes(sample: Sample, spec: JobSpec) -> bool:
    hinted = spec.rollout.hinted
    return sample.rewards.get(hinted.verifier, float("-inf")) >= hinted.pass_threshold


def mean_or_none(values: list[float]) -> float | None:
    """None, not 0, when nothing was kept: 0 is a real CLL value."""
    return sum(values) / len(values) if values else None


def answer_first(attempts, prompts, rollout, rewards, spec: JobSpec, tokenizer, prompts_by_index, iteration):
    """Returns (samples to train on, every sample to record, metrics)."""
    solved = {s.prompt_index for s in attempts if passes(s, spec)}
    for sample in attempts:
        sample.reference_solution = response_text(prompts_by_index[sample.prompt_index].row, sample.prompt_index,
                                                  spec.data.solution_column)
        if not passes(sample, spec):
            sample.dropped = "wrong"

    unsolved = [p for p in prompts if p.index not in solved and spec.rollout.mode != "verified"]
    rewrites, hinting = rollout.hinted(hint_jobs(unsolved, spec, tokenizer), iteration) if unsolved else ([], {})
    decoded = [s for s in rewrites if s.dropped is None]
    if decoded:
        rewards.score(decoded, prompts_by_index)
    for sample in decoded:
        if not passes(sample, spec):
            sample.dropped = "wrong"
    rescued = {s.prompt_index for s in decoded if s.dropped is None}

    threshold = spec.rollout.hinted.cll_threshold
    for sample in attempts + rewrites:
        if sample.dropped is None and threshold is not None and sample.cll["avg_cll"] < threshold:
            sample.dropped = "cll"
    kept = [s for s in attempts + rewrites if s.dropped is None]

    references = rollout.score(
        [written_sample(p, spec.data.solution_column, tokenizer, iteration, "reference") for p in prompts]
    )
    for reference in references:
        reference.reference_solution = reference.response

    everything = attempts + rewrites
    metrics = {
        "first_try_right": len(solved) / len(prompts),
        "rescued_by_hints": len(rescued) / len(prompts),
        "kept_samples": len(kept),
        "dropped_fraction": sum(s.dropped is not None for s in everything) / len(everything),
        "kept_hinted": sum(s.source != "on_policy" for s in kept),
        **{f"dropped_{reason}": sum(s.dropped == reason for s in everything)
           for reason in ("wrong", "no_header", "repetition", "cll", "pair_apart")},
        "kept_cll_mean": mean_or_none([s.cll["avg_cll"] for s in kept]),
        "hinted_cll_mean": mean_or_none([s.cll["avg_cll"] for s in decoded]),
        "reference_cll_mean": mean_or_none([r.cll["avg_cll"] for r in references]),
        **hinting,
    }
    return kept, everything + references, metrics
