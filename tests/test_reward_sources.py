"""The rule-based reward sources and how their values combine; pure Python, no Ray."""

from __future__ import annotations

import pytest

from actors.rewards.sources import (
    LengthPenaltySource,
    MathAnswerSource,
    ReasoningGymSource,
    ScoringRequest,
    combine,
)
from jobs.core.errors import RewardError
from jobs.core.spec import validate_spec


def request(response: str, row: dict, tokens: int = 10) -> ScoringRequest:
    return ScoringRequest(label="iteration 0, data row 3, sample 1 (on_policy)", prompt="p", messages=[],
                          response=response, response_tokens=tokens, row=row)


def test_math_answer_reads_the_configured_column():
    spec = validate_spec({"data": {"answer_column": "meta.final"}})
    source = MathAnswerSource(None, spec)
    row = {"meta": {"final": "0.75"}}
    assert source.score([request("so \\boxed{3/4}", row), request("The answer is 0.7.", row)]) == [1.0, 0.0]


def test_reasoning_gym_scores_with_the_tasks_own_scorer():
    import reasoning_gym

    entry = dict(reasoning_gym.create_dataset("gsm_symbolic", size=1, seed=1)[0])
    source = ReasoningGymSource(None, validate_spec({}))
    right, wrong = entry["answer"], str(int(entry["answer"]) + 1)
    scores = source.score([
        request(f"<answer>{right}</answer>", entry),
        request(f"Adding up, the answer is {right}.", entry),
        request(f"The answer is {wrong}.", entry),
        request("I do not know.", entry),
    ])
    # gsm_symbolic's scorer gives 0.01 for a wrong number and 0 for no answer.
    assert scores == [1.0, 1.0, 0.01, 0.0]


def test_length_penalty_is_zero_up_to_the_free_tokens_then_linear():
    spec = validate_spec({"rollout": {"max_new_tokens": 40}, "reward": {"sources": [{"kind": "length_penalty", "free_tokens": 10}]}})
    source = LengthPenaltySource(spec.reward.sources[0], spec)
    assert source.score([request("", {}, tokens=n) for n in (5, 10, 30, 50)]) == [0.0, 0.0, -0.5, -1.0]


def test_combine_weights_the_sources_and_names_a_non_finite_value():
    rewards = combine({"a": [1.0, 0.0], "b": [0.5, 2.0]}, {"a": 2.0, "b": -1.0}, ["s0", "s1"])
    assert rewards == [{"a": 1.0, "b": 0.5, "total": 1.5}, {"a": 0.0, "b": 2.0, "total": -2.0}]
    with pytest.raises(RewardError, match="reward source 'b' gave nan for s1"):
        combine({"a": [1.0, 0.0], "b": [0.5, float("nan")]}, {"a": 1.0, "b": 1.0}, ["s0", "s1"])
