"""Preference pairs from the iteration's samples, the stage between rewards and the learners.

- online (dpo, rpo): the k samples of a prompt, ranked by `rewards["total"]`;
  best vs worst, or every pair whose reward gap exceeds `preference.min_margin`.
- irft, fsft: (demonstration, own generation) for each generation of a prompt.
- dataset (offline dpo, rpo): the rows' chosen and rejected columns.

A pair is dropped, and counted, when its two rewards tie (within the margin)
or its two responses are the same tokens: such a pair carries no preference.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations

from jobs.core.records import Pair, Prompt, Sample
from jobs.core.data import response_token_ids
from jobs.core.data_sources import response_text
from jobs.core.spec import DataSpec, PreferenceSpec


def pair_of(chosen: Sample, rejected: Sample) -> Pair:
    return Pair(
        iteration=chosen.iteration,
        prompt_index=chosen.prompt_index,
        prompt=chosen.prompt,
        prompt_token_ids=list(chosen.prompt_token_ids),
        chosen=chosen.response,
        chosen_token_ids=list(chosen.response_token_ids),
        rejected=rejected.response,
        rejected_token_ids=list(rejected.response_token_ids),
        chosen_source=chosen.source,
        rejected_source=rejected.source,
        chosen_reward=chosen.rewards.get("total"),
        rejected_reward=rejected.rewards.get("total"),
        # The scorer's log-probs are the sampler's: used when preference.reference is "sampler".
        reference_logp_chosen=chosen.sequence_logp,
        reference_logp_rejected=rejected.sequence_logp,
    )


class PairCounts:
    def __init__(self):
        self.kept = 0
        self.tie = 0
        self.identical = 0

    def keep(self, chosen: Sample, rejected: Sample, margin: float | None = None) -> bool:
        """Count the candidate; True if it is a real preference."""
        if chosen.response_token_ids == rejected.response_token_ids:
            self.identical += 1
            return False
        if margin is not None and chosen.rewards["total"] - rejected.rewards["total"] <= margin:
            self.tie += 1
            return False
        self.kept += 1
        return True

    def metrics(self) -> dict:
        return {
            "pairs": self.kept,
            "pairs_dropped": self.tie + self.identical,
            "pairs_dropped_tie": self.tie,
            "pairs_dropped_identical": self.identical,
        }


def by_prompt(samples: list[Sample]) -> dict[int, list[Sample]]:
    groups = defaultdict(list)
    for sample in samples:
        groups[sample.prompt_index].append(sample)
    return groups


def online_pairs(samples: list[Sample], spec: PreferenceSpec) -> tuple[list[Pair], dict]:
    pairs, counts = [], PairCounts()
    for group in by_prompt(samples).values():
        # Stable sort: among equal rewards the earlier sample stays first, so the result is reproducible.
        ranked = sorted(group, key=lambda s: -s.rewards["total"])
        candidates = [(ranked[0], ranked[-1])] if spec.pairs == "best_vs_worst" else combinations(ranked, 2)
        for chosen, rejected in candidates:
            if counts.keep(chosen, rejected, spec.min_margin):
                pairs.append(pair_of(chosen, rejected))
    return pairs, counts.metrics()


def written_sample(prompt: Prompt, column: str, tokenizer, iteration: int, source: str) -> Sample:
    """A response the dataset wrote, as a sample; CLL and log-probs come later if a stage needs them."""
    text = response_text(prompt.row, prompt.index, column)
    return Sample(
        iteration=iteration,
        prompt_index=prompt.index,
        prompt=prompt.text,
        prompt_token_ids=list(prompt.token_ids),
        response=text,
        response_token_ids=response_token_ids(text, tokenizer),
        finish_reason="stop",
        source=source,
    )


def demonstration_samples(prompts: list[Prompt], data: DataSpec, tokenizer, iteration: int) -> list[Sample]:
    """The dataset's own answer to each prompt (IRFT's demonstrations)."""
    return [written_sample(p, data.solution_column, tokenizer, iteration, "demonstration") for p in prompts]


def demonstration_pairs(demonstrations: list[Sample], generations: list[Sample]) -> tuple[list[Pair], dict]:
    """The demonstration beside each of the policy's own generations for the same prompt (IRFT/SPIN, f-SFT).

    A generation identical to its demonstration makes no pair (no preference for IRFT).
    """
    demo_by_prompt = {d.prompt_index: d for d in demonstrations}
    pairs, counts = [], PairCounts()
    for generation in generations:
        demonstration = demo_by_prompt[generation.prompt_index]
        if counts.keep(demonstration, generation):
            pairs.append(pair_of(demonstration, generation))
    return pairs, counts.metrics()


def dataset_pairs(prompts: list[Prompt], data: DataSpec, tokenizer, iteration: int) -> tuple[list[Pair], dict]:
    """Offline pairs from the chosen/rejected columns (checked for presence and emptiness at load time)."""
    pairs, counts = [], PairCounts()
    for prompt in prompts:
        chosen = written_sample(prompt, data.chosen_column, tokenizer, iteration, "dataset")
        rejected = written_sample(prompt, data.rejected_column, tokenizer, iteration, "dataset")
        if counts.keep(chosen, rejected):
            pairs.append(pair_of(chosen, rejected))
    return pairs, counts.metrics()
