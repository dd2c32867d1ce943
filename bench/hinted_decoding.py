"""Hinted Decoding throughput against plain vLLM sampling and against one sequence at a time.

    .venv/bin/python bench/hinted_decoding.py [--model DIR] [--requests 32] [--tokens 64] [--repeats 3]

All decode the same prompts to exactly the same length (EOS ignored, no marker switch, no
repetition stop), on this machine, in this run:
- plain: vLLM sampling from the student prompts (what an on-policy rollout costs);
- hinted, replica: actors/decoding/hinted_decoding.py, all requests in one batch (two streams per token);
- hinted, engine: actors/decoding/engine_hinted.py, each pair two vLLM requests mixed by its logits
  processor (rollout.hinted.backend: engine), in an engine of its own;
- one at a time: the replica code with batch_size 1, the shape of the authors' release
  (transformers, one sequence at a time; ours keeps the KV cache, so this baseline is the
  faster of the two possible ones).
Targets: hinted (replica) >= 0.4x plain and >= 10x one at a time (Hinted Decoding issue); hinted
(engine) >= 0.8x plain and faster than the replica (engine issue). Reports the median of --repeats
runs of each, as tokens/s and as ratios; nothing is asserted."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VLLM_SCRIPT = """
import json, sys, time
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
model, pairs, tokens, repeats, mode = (sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                       sys.argv[5])
engine = {}
if mode == "engine":
    from actors.decoding.engine_hinted import PROCESSOR, decode_on_engine
    from actors.decoding.hinted_decoding import HintedRequest, HintedSampling
    from actors.weights.vllm_receiver import WORKER_EXTENSION
    engine = dict(logits_processors=[PROCESSOR], worker_extension_cls=WORKER_EXTENSION)
llm = LLM(model=model, dtype="float32", max_model_len=1024, enforce_eager=True, seed=0, enable_chunked_prefill=False,
          max_num_batched_tokens=8192, **engine)
seconds = []
if mode == "plain":
    params = SamplingParams(temperature=0.3, top_p=0.95, min_tokens=tokens, max_tokens=tokens, ignore_eos=True, seed=0)
    llm.generate([TokensPrompt(prompt_token_ids=pairs[0][1])], params, use_tqdm=False)  # warm-up
    for _ in range(repeats):
        started = time.perf_counter()
        outputs = llm.generate([TokensPrompt(prompt_token_ids=s) for _, s in pairs], params, use_tqdm=False)
        seconds.append(time.perf_counter() - started)
        assert all(len(o.outputs[0].token_ids) == tokens for o in outputs)
else:
    requests = [HintedRequest(h, s, seed=i) for i, (h, s) in enumerate(pairs)]
    sampling = HintedSampling(beta=0.7, top_p=0.95, temperature=0.3, max_new_tokens=tokens, marker=None,
                              repeat_ngram=10**6, repeat_times=2)
    decode_on_engine(llm, requests[:2], sampling, set(), "warm-up")
    for repeat in range(repeats):
        started = time.perf_counter()
        results, reasons = decode_on_engine(llm, requests, sampling, set(), f"repeat-{repeat}")
        seconds.append(time.perf_counter() - started)
        assert not reasons and all(len(r.token_ids) == tokens for r in results), reasons
print("SECONDS=" + json.dumps(seconds))
"""


def problems(count: int) -> list[tuple[str, str]]:
    from jobs.core.builtin import arithmetic_rows

    rows = arithmetic_rows(count=count, seed=7)
    return [(r["prompt"], r["solution"]) for r in rows]


def vllm_seconds(mode: str, model: str, pairs: list[tuple[list[int], list[int]]], tokens: int,
                 repeats: int) -> list[float]:
    """Seconds per repeat in a fresh process: `plain` samples the student prompts, `engine` runs Hinted Decoding
    of the (hint, student) pairs on the engine."""
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
           "VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_LOGGING_LEVEL": "ERROR", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", VLLM_SCRIPT, model, json.dumps(pairs), str(tokens), str(repeats),
                             mode], capture_output=True, text=True, env=env, timeout=1800)
    lines = [line for line in result.stdout.splitlines() if line.startswith("SECONDS=")]
    if result.returncode or not lines:
        sys.exit(f"vLLM run failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("SECONDS="))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="HF model folder (default: the builtin tiny model, built on the fly)")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from actors.decoding.hinted_decoding import HintedRequest, HintedSampling, hinted_decode
    from jobs.core.builtin import build_tiny_llama

    torch.set_num_threads(args.threads)
    model_dir = args.model or str(build_tiny_llama(Path(tempfile.mkdtemp()) / "tiny-llama"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the replica sits where a rollout worker's would
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()

    def chat(system: str | None, user: str) -> list[int]:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False).input_ids

    requests = [
        HintedRequest(
            hint_ids=chat("Rewrite the reference solution in your own words.", f"Question:\n{q}\n\nReference solution:\n{s}"),
            student_ids=chat(None, q),
            seed=i,
        )
        for i, (q, s) in enumerate(problems(args.requests))
    ]
    # Exactly --tokens per request: no EOS, no marker switch, no repetition stop.
    sampling = HintedSampling(beta=0.7, top_p=0.95, temperature=0.3, max_new_tokens=args.tokens, marker=None,
                              repeat_ngram=10**6, repeat_times=2)

    def hinted_seconds(batch_size: int, subset: list) -> list[float]:
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            results = hinted_decode(model, tokenizer, subset, sampling, eos_ids=set(), pad_id=tokenizer.pad_token_id,
                                    batch_size=batch_size)
            seconds.append(time.perf_counter() - started)
            assert all(len(r.token_ids) == args.tokens for r in results)
        return seconds

    hinted_decode(model, tokenizer, requests[:2], sampling, eos_ids=set(), pad_id=tokenizer.pad_token_id)  # warm-up
    batched = statistics.median(hinted_seconds(len(requests), requests))
    # One at a time is slow: time a quarter of the requests and scale per token.
    few = requests[: max(2, len(requests) // 4)]
    single = statistics.median(hinted_seconds(1, few))
    pairs = [(r.hint_ids, r.student_ids) for r in requests]
    plain = statistics.median(vllm_seconds("plain", model_dir, pairs, args.tokens, args.repeats))
    on_engine = statistics.median(vllm_seconds("engine", model_dir, pairs, args.tokens, args.repeats))

    tokens = len(requests) * args.tokens
    rates = {
        "plain_vllm_tokens_per_s": tokens / plain,
        "hinted_engine_tokens_per_s": tokens / on_engine,
        "hinted_batched_tokens_per_s": tokens / batched,
        "hinted_one_at_a_time_tokens_per_s": len(few) * args.tokens / single,
    }
    report = {
        "model": model_dir if args.model else "builtin:tiny-llama",
        "requests": len(requests),
        "tokens_per_request": args.tokens,
        "threads": args.threads,
        "device": device,
        **{k: round(v, 1) for k, v in rates.items()},
        "hinted_vs_plain": round(rates["hinted_batched_tokens_per_s"] / rates["plain_vllm_tokens_per_s"], 3),
        "hinted_vs_one_at_a_time": round(
            rates["hinted_batched_tokens_per_s"] / rates["hinted_one_at_a_time_tokens_per_s"], 2
        ),
        "engine_vs_plain": round(rates["hinted_engine_tokens_per_s"] / rates["plain_vllm_tokens_per_s"], 3),
        "engine_vs_replica": round(rates["hinted_engine_tokens_per_s"] / rates["hinted_batched_tokens_per_s"], 3),
        "targets": {"hinted_vs_plain": ">= 0.4", "hinted_vs_one_at_a_time": ">= 10", "engine_vs_plain": ">= 0.8",
                    "engine_vs_replica": "> 1"},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
