"""Hinted Decoding inside the vLLM engine (actors/decoding/engine_hinted.py) against the replica path
(actors/decoding/hinted_decoding.py, itself checked against a naive loop in test_hinted_decoding.py).

Same requests, same seeds, float32: the engine path must draw the same tokens, with the same lambda
and the same mixed log-prob of every chosen token (within 1e-4), on Llama (rotary positions) and on
GPT-2 (learned absolute positions). A KV cache too small for every row preempts rows and pulls
pairs apart: those pairs are decoded again on the replica, counted, and the result is what the
replica alone gives. The same engine scores responses it did not sample by forced decoding
(rollout.cll_check: engine), which must give the replica's CLL. Each engine runs in a fresh process
(tests/engine_hinted_run.py).
"""

from __future__ import annotations

import sys

import pytest
import torch

from tests.conftest import REPO, printed_json

pytestmark = pytest.mark.integration


def run_both(model_dir, *flags: str) -> dict:
    return printed_json([sys.executable, str(REPO / "tests" / "engine_hinted_run.py"), str(model_dir), *flags],
                        "RESULTS=")


def peaked(model, tokenizer, directory, scale: float):
    """The output layer x scale (the same model at temperature 1/scale): draws that depend on the logits, not a
    near-uniform distribution where any two texts look alike (nor so peaked that it repeats one token)."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(scale)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def llama(tiny_model, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return peaked(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                  AutoTokenizer.from_pretrained(tiny_model), tmp_path_factory.mktemp("peaked-llama"), 8.0)


@pytest.fixture(scope="module")
def gpt2(tiny_model, tmp_path_factory):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=64, n_layer=2, n_head=2,
                                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    return peaked(model, tokenizer, tmp_path_factory.mktemp("peaked-gpt2"), 3.0)


def assert_same_draws(engine: dict, replica: dict) -> None:
    assert engine["token_ids"] == replica["token_ids"]
    assert (engine["switched_at"], engine["finish_reason"]) == (replica["switched_at"], replica["finish_reason"])
    assert max(abs(a - b) for a, b in zip(engine["lambdas"], replica["lambdas"])) < 1e-4
    assert max(abs(a - b) for a, b in zip(engine["chosen_logprobs"], replica["chosen_logprobs"])) < 1e-4


@pytest.mark.parametrize("model", ["llama", "gpt2"])
def test_the_engine_draws_what_the_replica_draws(model, request):
    got = run_both(request.getfixturevalue(model))
    assert got["reasons"] == [] and all(r is not None for r in got["engine"])  # no pair came apart
    for engine, replica in zip(got["engine"], got["replica"]):
        assert_same_draws(engine, replica)
    # The rules were exercised, not only the mixture: the first token from the hint alone (lambda 0), mixed steps
    # (lambda strictly between), and the student alone after the marker (lambda 1).
    lambdas = [lam for r in got["replica"] for lam in r["lambdas"]]
    assert all(r["lambdas"][0] == 0.0 for r in got["replica"]) and any(0.0 < lam < 1.0 for lam in lambdas)
    assert any(r["switched_at"] for r in got["replica"]) and 1.0 in lambdas
    # rollout.cll_check engine: CLL of responses the engine did not sample (the rewrites under the plain prompt, a
    # written text), by forced decoding on the engine, is the replica's teacher-forced CLL, token by token.
    engine, replica = got["scored"]["engine"], got["scored"]["replica"]
    assert len(engine) == len(got["replica"]) + 1 and all(s["token_cll"] for s in engine)
    for forced, teacher_forced in zip(engine, replica):
        assert len(forced["token_cll"]) == len(teacher_forced["token_cll"])
        assert max(abs(a - b) for a, b in zip(forced["token_cll"], teacher_forced["token_cll"])) < 1e-4
        assert abs(forced["sequence_logp"] - teacher_forced["sequence_logp"]) < 1e-4


def test_pairs_the_scheduler_pulls_apart_are_decoded_again_on_the_replica(llama):
    got = run_both(llama, "--blocks", "12")  # 32 rows, room for 12 blocks: rows are preempted
    broken = [i for i, r in enumerate(got["engine"]) if r is None]
    assert broken and len(got["reasons"]) == len(broken), got["reasons"]
    assert len(got["fallbacks"]) > 0
    for engine, replica in zip(got["engine"], got["replica"]):
        if engine is not None:  # a pair that stayed together is still exact
            assert_same_draws(engine, replica)
    for combined, replica in zip(got["combined"], got["replica"]):  # with the fallback: every pair, as the replica
        assert_same_draws(combined, replica)
