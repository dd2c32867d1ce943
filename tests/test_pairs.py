"""Pairing and micro-batching: pure Python, no Ray."""

from __future__ import annotations

import pytest

from jobs.core.records import Sample
from actors.learner import micro_batches
from jobs.algorithms.pairs import demonstration_pairs, online_pairs
from jobs.core.spec import PreferenceSpec


def sample(prompt_index: int, tokens: list[int], reward: float, source: str = "on_policy") -> Sample:
    return Sample(
        iteration=0, prompt_index=prompt_index, prompt="p", prompt_token_ids=[1], response=str(tokens),
        response_token_ids=tokens, finish_reason="stop", source=source, rewards={"total": reward}, sequence_logp=-1.0,
    )


SAMPLES = [
    # prompt 0: a clear best and worst
    sample(0, [5], 0.2), sample(0, [6], 0.9), sample(0, [7], 0.5),
    # prompt 1: every sample scores the same
    sample(1, [5], 1.0), sample(1, [6], 1.0), sample(1, [7], 1.0),
    # prompt 2: both samples are the same tokens
    sample(2, [8], 0.3), sample(2, [8], 0.3),
]


def test_best_vs_worst_drops_ties_and_counts_them():
    pairs, counts = online_pairs(SAMPLES, PreferenceSpec())
    assert [(p.prompt_index, p.chosen_token_ids, p.rejected_token_ids) for p in pairs] == [(0, [6], [5])]
    assert (pairs[0].chosen_reward, pairs[0].rejected_reward) == (0.9, 0.2)
    # the sampler's log-probs come along as the reference
    assert pairs[0].reference_logp_chosen == pairs[0].reference_logp_rejected == -1.0
    assert counts == {"pairs": 1, "pairs_dropped": 2, "pairs_dropped_tie": 1, "pairs_dropped_identical": 1}


def test_all_pairs_above_a_margin():
    pairs, counts = online_pairs(SAMPLES[:3], PreferenceSpec(pairs="all_above_margin", min_margin=0.35))
    # gaps: 0.9-0.5=0.4 kept, 0.9-0.2=0.7 kept, 0.5-0.2=0.3 dropped
    assert sorted((p.chosen_token_ids[0], p.rejected_token_ids[0]) for p in pairs) == [(6, 5), (6, 7)]
    assert counts["pairs"] == 2 and counts["pairs_dropped_tie"] == 1


def test_irft_prefers_the_demonstration_over_each_generation():
    demos = [sample(0, [1, 2], 0.0, "demonstration"), sample(1, [3], 0.0, "demonstration")]
    generations = [sample(0, [4], 0.0), sample(0, [1, 2], 0.0), sample(1, [5], 0.0)]
    pairs, counts = demonstration_pairs(demos, generations)
    assert [(p.chosen_token_ids, p.rejected_token_ids, p.chosen_source) for p in pairs] == [
        ([1, 2], [4], "demonstration"), ([3], [5], "demonstration"),
    ]
    assert counts["pairs_dropped_identical"] == 1  # the generation that reproduced its demonstration


@pytest.mark.parametrize("n, size, multiple", [(16, 4, 1), (7, 2, 1), (6, 4, 3), (3, 8, 1), (12, 5, 2)])
def test_micro_batches_are_non_empty_and_a_multiple_of_accumulation(n, size, multiple):
    chunks = micro_batches(list(range(n)), size, multiple)
    assert [x for c in chunks for x in c] == list(range(n))
    assert all(chunks) and len(chunks) % multiple == 0
    assert max(len(c) for c in chunks) - min(len(c) for c in chunks) <= 1
    assert max(len(c) for c in chunks) <= size or len(chunks) == multiple
