"""builtin:word-problems (the evidence study's task), reasoning-gym task options, and rollout.mode verified."""

from __future__ import annotations

import re

import pytest

from jobs.core.records import Sample
from jobs.stages.answer_first import answer_first
from jobs.core.data import load_rows
from jobs.core.errors import DataError
from jobs.core.spec import DataSpec, JobSpec
from jobs.core.word_problems import TEMPLATES, word_problem_rows

STEP = re.compile(r"(-?\d+) ([-+x/]) (-?\d+) = (-?\d+)")
OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "x": lambda a, b: a * b, "/": lambda a, b: a / b}


def test_every_worked_solution_computes_right_and_ends_with_the_answer():
    rows = word_problem_rows(400, seed=3)
    assert {r["template"] for r in rows} == set(TEMPLATES)
    for row in rows:
        lines = row["solution"].splitlines()
        assert lines[-1] == f"The answer is {row['answer']}."
        steps = [STEP.search(line) for line in lines[:-1]]
        assert any(steps), row
        for step in filter(None, steps):
            a, op, b, result = step.groups()
            assert OPERATIONS[op](int(a), int(b)) == int(result), row
        # the last computed value is the gold answer
        assert int(list(filter(None, steps))[-1].group(4)) == int(row["answer"]), row


def test_seeds_are_deterministic_distinct_and_never_share_a_question():
    assert word_problem_rows(50, seed=0) == word_problem_rows(50, seed=0)
    train = {r["prompt"] for r in word_problem_rows(1000, seed=0)}
    heldout = [r["prompt"] for r in word_problem_rows(200, seed=1)]
    assert len(train) == 1000 and len(set(heldout)) == 200
    assert not train & set(heldout)


def test_the_builtin_source_and_its_max_prompts():
    rows = load_rows(DataSpec(path="builtin:word-problems", max_prompts=30, seed=2))
    assert rows == word_problem_rows(30, seed=2)
    with pytest.raises(DataError, match="builtin:word-problems"):
        load_rows(DataSpec(path="builtin:no-such-task"))


def test_reasoning_gym_task_options_reach_the_generator():
    rows = load_rows(DataSpec(path="reasoning-gym:chain_sum", max_prompts=40,
                              task_options={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}))
    for row in rows:
        numbers = re.findall(r"\d+", row["question"])
        assert len(numbers) == 2 and all(len(n) == 1 for n in numbers), row["question"]
    with pytest.raises(DataError, match="data.path 'reasoning-gym:chain_sum'.*no_such_option"):
        load_rows(DataSpec(path="reasoning-gym:chain_sum", max_prompts=4, task_options={"no_such_option": 1}))


class _Prompt:
    def __init__(self, index):
        self.index, self.text, self.token_ids = index, f"q{index}", (1, 2)
        self.row = {"prompt": f"q{index}", "answer": "1", "solution": "The answer is 1."}
        self.messages = ({"role": "user", "content": f"q{index}"},)


class _Rollout:
    """Scores CLL; records whether Hinted Decoding was asked for."""

    def __init__(self):
        self.hinted_calls = 0

    def score(self, samples):
        for s in samples:
            s.cll = {"avg_cll": -0.5}
        return samples

    def hinted(self, jobs, iteration):
        self.hinted_calls += 1
        return [], {}


class _Tokenizer:
    def __call__(self, text, add_special_tokens=False):
        return type("Encoded", (), {"input_ids": [3] * len(text.split())})()

    eos_token_id = 0


def _attempt(index, right):
    return Sample(iteration=0, prompt_index=index, prompt=f"q{index}", prompt_token_ids=[1, 2], response="r",
                  response_token_ids=[5], finish_reason="stop", cll={"avg_cll": 0.0},
                  rewards={"math_answer": 1.0 if right else 0.0})


@pytest.mark.parametrize("mode, hinted_calls", [("verified", 0), ("hinted", 1)])
def test_verified_mode_keeps_the_right_attempts_and_never_hints(mode, hinted_calls, monkeypatch):
    import jobs.stages.answer_first as stage

    monkeypatch.setattr(stage, "written_sample", lambda p, column, tok, iteration, source: Sample(
        iteration=iteration, prompt_index=p.index, prompt=p.text, prompt_token_ids=[1, 2], response="ref",
        response_token_ids=[4], finish_reason="stop", source=source))
    monkeypatch.setattr(stage, "hint_jobs", lambda prompts, spec, tok: list(prompts))
    spec = JobSpec.model_validate({"algorithm": "idft", "rollout": {"mode": mode},
                                   "reward": {"sources": [{"kind": "math_answer"}]}})
    prompts = [_Prompt(0), _Prompt(1)]
    attempts = [_attempt(0, True), _attempt(0, False), _attempt(1, False)]
    rollout = _Rollout()
    kept, recorded, metrics = answer_first(attempts, prompts, rollout, None, spec, _Tokenizer(),
                                           {p.index: p for p in prompts}, 0)
    assert kept == [attempts[0]]
    assert [s.dropped for s in attempts] == [None, "wrong", "wrong"]
    assert rollout.hinted_calls == hinted_calls  # the hinted run is the check that this can fail
    assert metrics["first_try_right"] == 0.5 and metrics["reference_cll_mean"] == -0.5
    assert [s.source for s in recorded].count("reference") == 2
