"""Hinted Decoding of the same requests on a vLLM engine (actors/decoding/engine_hinted.py) and on the replica
(actors/decoding/hinted_decoding.py), in a fresh process: tests/test_engine_hinted.py compares the two.

    python tests/engine_hinted_run.py MODEL_DIR [--blocks N]

prints one line `RESULTS=<json>`: per request the engine's result (None where its pair came apart), the
replica's, and the combined result of decode_with_fallback with the fallback reasons. --blocks gives the
engine a KV cache of N blocks, small enough to preempt rows and pull pairs apart.

The engine carries every logits processor a worker with rollout.cll_check: engine has (entropy recorder,
Hinted Decoding mixer, forced tokens), and, without --blocks, the script also scores responses the engine
did not sample (each pair's rewrite under the plain prompt, and a written text) by forced decoding on the
engine (actors/decoding/engine_scoring.py) and teacher-forced on the replica (CLLScorer): `scored`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

QUESTIONS = [f"What is {a} + {b}?" for a, b in [(1, 2), (3, 4), (10, 5), (7, 8), (2, 9), (6, 6), (12, 30), (5, 5)]]


def result_dict(result) -> dict | None:
    return None if result is None else {"token_ids": result.token_ids, "lambdas": result.lambdas,
                                        "switched_at": result.switched_at, "finish_reason": result.finish_reason,
                                        "chosen_logprobs": result.chosen_logprobs}


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM

    from actors.decoding.cll_scorer import CLLScorer
    from actors.decoding.engine_entropy import PROCESSOR as RECORDER
    from actors.decoding.engine_hinted import PROCESSOR, decode_on_engine, decode_with_fallback
    from actors.decoding.engine_scoring import PROCESSOR as FORCED, EngineScorer
    from jobs.core.records import Sample
    from actors.decoding.hinted_decoding import HintedRequest, HintedSampling, hinted_decode
    from actors.weights.vllm_receiver import WORKER_EXTENSION

    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--blocks", type=int)
    parser.add_argument("--times", type=int, default=2, help="each question this many times, with other seeds")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    replica = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    llm = LLM(model=args.model, dtype="float32", max_model_len=256, enforce_eager=True, seed=0,
              worker_extension_cls=WORKER_EXTENSION, logits_processors=[RECORDER, PROCESSOR, FORCED], enable_chunked_prefill=False,
              max_num_batched_tokens=4096, **({"num_gpu_blocks_override": args.blocks} if args.blocks else {}))
    requests = [HintedRequest(hint_ids=tokenizer(q + " Reference: add the two. ### Solution").input_ids,
                              student_ids=tokenizer(q).input_ids, seed=1000 + i)
                for i, q in enumerate(QUESTIONS * args.times)]
    eos, pad = {tokenizer.eos_token_id}, tokenizer.pad_token_id or tokenizer.eos_token_id
    # The marker: what this model writes at step 6 of the first pair, so that pair switches to the student stream
    # part way, and the others may or may not.
    sampling = HintedSampling(beta=0.7, top_p=0.95, temperature=0.7, max_new_tokens=40, marker=None)
    first = hinted_decode(replica, tokenizer, requests[:1], sampling, eos_ids=eos, pad_id=pad)[0]
    sampling.marker = tokenizer.decode(first.token_ids[5:6]) or None
    engine, reasons = decode_on_engine(llm, requests, sampling, eos, "engine")
    combined, fallback_reasons = decode_with_fallback(llm, replica, tokenizer, requests, sampling, eos_ids=eos,
                                                      pad_id=pad, batch_size=4, name="combined")
    alone = hinted_decode(replica, tokenizer, requests, sampling, eos_ids=eos, pad_id=pad, batch_size=4)
    scored = {}
    if not args.blocks:
        written = tokenizer(" Add them: the answer is 3.", add_special_tokens=False).input_ids
        texts = [(r.student_ids, result.token_ids) for r, result in zip(requests, alone)] + [
            (requests[0].student_ids, written)]
        for name, scorer in (("engine", EngineScorer(llm, "test")), ("replica", CLLScorer(args.model, torch.float32,
                                                                                           "cpu", 4, pad))):
            samples = [Sample(iteration=0, prompt_index=i, prompt="", prompt_token_ids=list(prompt),
                              response="", response_token_ids=list(response), finish_reason="")
                       for i, (prompt, response) in enumerate(texts)]
            scorer.score(samples)
            scored[name] = [{"token_cll": s.token_cll, "sequence_logp": s.sequence_logp, "cll": s.cll} for s in samples]
    print("RESULTS=" + json.dumps({"engine": [result_dict(r) for r in engine], "reasons": reasons,
                                   "replica": [result_dict(r) for r in alone], "scored": scored,
                                   "combined": [result_dict(r) for r in combined], "fallbacks": fallback_reasons}))


if __name__ == "__main__":
    main()
