"""The engine-side entropy recorder (actors/decoding/engine_entropy.py): which row is which request, and what it records."""

import math

import pytest
import torch

from actors.decoding.engine_entropy import REQUEST_KEY, EntropyRecorder, entropies_in_order

pytest.importorskip("vllm")
from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402


def added(index, key, seed, output):
    params = SamplingParams(seed=seed, extra_args={REQUEST_KEY: key} if key else None)
    return (index, params, [1, 2], output)


def update(recorder, removed=(), add=(), moved=()):
    recorder.update_state(BatchUpdate(batch_size=4, removed=list(removed), added=list(add), moved=list(moved)))


def uniform_over(n, vocab=8):
    logits = torch.full((1, vocab), -1e9)
    logits[0, :n] = 0.0
    return logits[0]


def test_records_the_entropy_of_each_keyed_row_at_its_output_position():
    recorder = EntropyRecorder(None, torch.device("cpu"), False)
    out_a, out_b = [], [7]
    update(recorder, add=[added(0, "it0-p3", 100, out_a), added(1, None, 5, []), added(2, "it0-p4", 200, out_b)])
    logits = torch.stack([uniform_over(2), uniform_over(3), uniform_over(4)])
    assert torch.equal(recorder.apply(logits.clone()), logits)  # never changes the logits
    out_a.append(9)
    # a swap moves both requests; a one-way move leaves the source row empty
    update(recorder, moved=[(0, 2, MoveDirectionality.SWAP)])
    recorder.apply(torch.stack([uniform_over(5), uniform_over(3), uniform_over(6)]))
    taken = EntropyRecorder.take(["it0-p3/100", "it0-p4/200"])
    assert taken["it0-p3/100"] == pytest.approx({0: math.log(2), 1: math.log(6)})
    # Its output did not grow between the steps (no token kept from the first): index 1 was rewritten.
    assert taken["it0-p4/200"] == pytest.approx({1: math.log(5)})
    assert EntropyRecorder.take(["it0-p3/100"]) == {}  # taken once
    update(recorder, removed=[0], moved=[(2, 3, MoveDirectionality.UNIDIRECTIONAL)])
    assert set(recorder.rows) == {3}
    EntropyRecorder.instances.remove(recorder)


def test_a_step_whose_sample_is_thrown_away_is_overwritten():
    recorder = EntropyRecorder(None, torch.device("cpu"), False)
    output = []
    update(recorder, add=[added(0, "k", 1, output)])
    recorder.apply(uniform_over(2)[None])  # a partial prefill step: no token is appended
    recorder.apply(uniform_over(4)[None])
    assert EntropyRecorder.take(["k/1"]) == {"k/1": pytest.approx({0: math.log(4)})}
    EntropyRecorder.instances.remove(recorder)


def test_only_a_recording_that_lines_up_with_the_tokens_is_used():
    assert entropies_in_order({0: 0.5, 1: 0.25}, 2) == [0.5, 0.25]
    assert entropies_in_order({1: 0.5, 2: 0.25}, 2) is None  # shifted by one
    assert entropies_in_order({0: 0.5}, 2) is None  # a position missing
    assert entropies_in_order(None, 3) is None
    assert entropies_in_order(None, 0) == []
