"""The answer-first pipeline end to end (configs/hinted_idft.yaml on the tiny model), on real Ray, vLLM, DeepSpeed.

attempt -> verify -> Hinted Decoding for the wrong ones -> verify -> CLL filter -> IDFT -> sync,
for 2 iterations. The run (the `hinted_run` session fixture in conftest.py) is shared by the
tests below and by tests/test_evaluation.py.
"""

from __future__ import annotations

import pytest
import torch

from actors.rollout_worker import analysis_until_header, sampling_seed
from tests.conftest import independent_token_stats, read_jsonl

pytestmark = pytest.mark.integration


def test_every_stage_ran_and_is_counted(hinted_run):
    out, metrics = hinted_run
    for m in metrics:
        problems = 16  # rollout.prompts_per_iteration
        assert m["first_try_right"] * problems == pytest.approx(round(m["first_try_right"] * problems))
        samples = read_jsonl(out / "samples" / f"iter-{m['iteration']}.jsonl")
        attempts = [s for s in samples if s["source"] == "on_policy"]
        rewrites = [s for s in samples if s["source"] == "hinted"]
        references = [s for s in samples if s["source"] == "reference"]
        assert len(attempts) == len(references) == problems
        # Hinted Decoding ran exactly for the problems no attempt got right.
        wrong = {s["prompt_index"] for s in attempts if s["dropped"] == "wrong"}
        assert {s["prompt_index"] for s in rewrites} == wrong
        assert len(wrong) == problems - round(m["first_try_right"] * problems)
        for s in attempts + rewrites:
            # Verified: kept samples pass the verifier, dropped-as-wrong ones do not.
            assert (s["rewards"]["digits"] >= 0.35) == (s["dropped"] is None)
            assert s["reference_solution"].startswith("The answer is")
            # CLL under the plain prompt: the sample's prompt is the question alone, no hint.
            assert "Reference solution" not in s["prompt"] and len(s["token_cll"]) == len(s["response_token_ids"])
        kept = [s for s in attempts + rewrites if s["dropped"] is None]
        assert m["kept_samples"] == len(kept)
        assert m["rescued_by_hints"] * problems == pytest.approx(sum(s["dropped"] is None for s in rewrites))
        assert m["reference_cll_mean"] == pytest.approx(sum(r["cll"]["avg_cll"] for r in references) / problems)
    assert any(m["loss"] is not None and m["kept_hinted"] > 0 for m in metrics)  # IDFT trained on rewrites


RUNS = {"engine": "hinted_run", "replica": "hinted_replica_run", "engine-no-replica": "hinted_engine_only_run"}


@pytest.mark.parametrize("iteration", [0, 1])
@pytest.mark.parametrize("backend", list(RUNS))
def test_rewrites_were_decoded_with_the_weights_the_engines_held(backend, iteration, request):
    """Replay Hinted Decoding here (the replica implementation), under the weights each iteration should have used,
    for a run of each backend (the quickstart's config runs the engine's), and for the engine backend with
    rollout.cll_check: engine, whose workers hold no replica: the rewrites' and references' CLL then come from the
    engine by forced decoding.

    Iteration 1 must have used the weights synced after iteration 0 (checkpoints/iter-0): replaying
    with them reproduces every token, and replaying with the initial weights does not.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from actors.decoding.hinted_decoding import HintedRequest, HintedSampling, hinted_decode
    from jobs.stages.answer_first import hint_jobs
    from jobs.core.data import load_prompts
    from jobs.core.spec import load_spec

    out, metrics = request.getfixturevalue(RUNS[backend])
    spec = load_spec(out / "spec.yaml")
    assert spec.rollout.hinted.backend == backend.removesuffix("-no-replica")
    no_replica = backend == "engine-no-replica"
    assert spec.rollout.cll_check == ("engine" if no_replica else "replica")
    # The second copy of the model each worker holds: none without the replica.
    assert all((m["rollout_replica_mb"] == 0) == no_replica for m in metrics if "rollout_replica_mb" in m), metrics
    assert any("rollout_replica_mb" in m for m in metrics)
    if no_replica:  # the eval actor still measures forgetting (it keeps a replica of its own for that)
        evals = [m for m in read_jsonl(out / "metrics.jsonl") if m.get("kind") == "eval"]
        assert sorted(m["iteration"] for m in evals) == [-1, *[m["iteration"] for m in metrics]], evals
        assert all("forget_kl" in m for m in evals), evals
    # The engine backend decoded every pair itself (a fallback would have been the replica's work); the replica
    # backend has no fallbacks to count.
    fallbacks = [m.get("hinted_engine_fallbacks") for m in metrics]
    if backend != "replica":  # None: an iteration with every problem solved on the first try hints nothing
        assert 0 in fallbacks and set(fallbacks) <= {0, None}, fallbacks
    else:
        assert set(fallbacks) == {None}, fallbacks
    initial = out / "builtin" / "tiny-llama"
    tokenizer = AutoTokenizer.from_pretrained(initial)
    prompts = {p.index: p for p in load_prompts(spec.data, tokenizer, spec.max_prompt_tokens)[0]}
    rewrites = [s for s in read_jsonl(out / "samples" / f"iter-{iteration}.jsonl") if s["source"] == "hinted"]
    assert rewrites
    jobs = hint_jobs([prompts[s["prompt_index"]] for s in rewrites], spec, tokenizer)
    requests = [HintedRequest(j.hint_prompt_ids, j.prompt_token_ids, sampling_seed(spec.seed, iteration, j.prompt_index) + 1)
                for j in jobs]
    hinted = spec.rollout.hinted
    sampling = HintedSampling(beta=hinted.beta, top_p=hinted.top_p, temperature=hinted.temperature,
                              max_new_tokens=spec.rollout.max_new_tokens, marker=hinted.marker,
                              repeat_ngram=hinted.repeat_ngram, repeat_times=hinted.repeat_times)

    def replay(weights):
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32).eval()
        results = hinted_decode(model, tokenizer, requests, sampling, eos_ids={tokenizer.eos_token_id},
                                pad_id=tokenizer.pad_token_id, batch_size=4)
        return model, [r.token_ids for r in results]

    weights = initial if iteration == 0 else out / "checkpoints" / f"iter-{iteration - 1}"
    model, tokens = replay(weights)
    assert tokens == [s["response_token_ids"] for s in rewrites]
    if iteration == 1:
        _, stale = replay(initial)
        assert stale != tokens
    # Their CLL is the plain-prompt CLL under those same weights; so is the references' (the dataset's own text).
    references = [s for s in read_jsonl(out / "samples" / f"iter-{iteration}.jsonl") if s["source"] == "reference"]
    for s in rewrites + references[:4]:
        expected = [logp + h for logp, h in independent_token_stats(model, s["prompt_token_ids"], s["response_token_ids"])]
        assert len(s["token_cll"]) == len(expected)
        assert max(abs(a - b) for a, b in zip(s["token_cll"], expected)) < 1e-4


def test_analysis_is_cut_right_after_the_header():
    header = "### Solution"
    assert analysis_until_header("The key step is 3*4.\n### Solution", header, header) == "The key step is 3*4.\n### Solution"
    assert analysis_until_header("I ran out of tokens", None, header) is None  # no header: the sample is dropped
    assert analysis_until_header("stopped on EOS", 2, header) is None
