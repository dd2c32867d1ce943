#!/usr/bin/env python
"""Held-out accuracy of a model on a spec's reasoning-gym task (greedy decoding, vLLM on CPU).

    python bench/realmodel/heldout_accuracy.py --model DIR --spec configs/dpo-smollm2.yaml --seed 12345 --n 100 [--out FILE.json]

The spec gives the data settings (task, prompt column, system prompt, chat template) and
rollout.max_new_tokens; --seed and --n override data.seed and data.max_prompts, so a seed other
than the training one (0) gives problems the run never saw. Each response's answer is extracted
the way the reward actor does it (reasoning-gym's <answer> tags, else "The answer is ..."/\\boxed{})
and scored with reasoning-gym's own scorer; score == 1.0 counts as correct.

Imports jobs.core.spec, jobs.core.data and actors.rewards.math_verifier from the repo on PYTHONPATH.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF model folder (the initial model or a checkpoint)")
    ap.add_argument("--spec", required=True, help="job spec YAML (data and rollout settings)")
    ap.add_argument("--seed", type=int, default=12345, help="data.seed for the held-out problems")
    ap.add_argument("--n", type=int, default=100, help="number of problems (data.max_prompts)")
    ap.add_argument("--out", help="write the JSON result here")
    args = ap.parse_args()

    from jobs.core.spec import is_reasoning_gym, load_spec
    from jobs.core.data import load_prompts
    from actors.rewards.math_verifier import extract_final_answer

    spec = load_spec(args.spec, [f"data.seed={args.seed}", f"data.max_prompts={args.n}", f"model.path={args.model}"])
    if not is_reasoning_gym(spec.data.path):
        sys.exit(f"{args.spec}: data.path {spec.data.path!r} is not a reasoning-gym task")

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompts, _ = load_prompts(spec.data, tokenizer, spec.max_prompt_tokens)

    import reasoning_gym
    from reasoning_gym.utils import extract_answer
    from vllm import LLM, SamplingParams

    t0 = time.time()
    llm = LLM(model=args.model, dtype="float32", max_model_len=spec.model.max_model_len, enforce_eager=True, seed=0)
    load_s = time.time() - t0
    params = SamplingParams(temperature=0.0, max_tokens=spec.rollout.max_new_tokens)
    t1 = time.time()
    outputs = llm.generate([{"prompt_token_ids": list(p.token_ids)} for p in prompts], params)
    gen_s = time.time() - t1

    scorers: dict = {}
    correct = answered = 0
    records = []
    for prompt, output in zip(prompts, outputs):
        text = output.outputs[0].text
        answer = extract_answer(text) or extract_final_answer(text)
        task = prompt.row["metadata"]["source_dataset"]
        if task not in scorers:
            scorers[task] = reasoning_gym.get_score_answer_fn(task)
        score = float(scorers[task](answer, prompt.row))
        correct += score == 1.0
        answered += answer is not None and str(answer).strip() != ""
        records.append(
            {
                "index": prompt.index,
                "question": prompt.row["question"] if "question" in prompt.row else None,
                "gold": prompt.row.get("answer"),
                "response": text,
                "extracted": answer,
                "score": score,
                "finish_reason": output.outputs[0].finish_reason,
                "response_tokens": len(output.outputs[0].token_ids),
            }
        )

    n = len(prompts)
    result = {
        "model": os.path.abspath(args.model),
        "spec": args.spec,
        "task": spec.data.path,
        "seed": args.seed,
        "n": n,
        "accuracy": correct / n,
        "answered_fraction": answered / n,
        "correct": correct,
        "answered": answered,
        "mean_response_tokens": sum(r["response_tokens"] for r in records) / n,
        "truncated_fraction": sum(r["finish_reason"] == "length" for r in records) / n,
        "max_new_tokens": spec.rollout.max_new_tokens,
        "engine_load_seconds": round(load_s, 1),
        "generate_seconds": round(gen_s, 1),
        "examples": records[:3],
    }
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}, indent=2))
    for r in records[:3]:
        print(f"--- row {r['index']} gold={r['gold']!r} extracted={r['extracted']!r} score={r['score']}")
        print(r["response"])
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**result, "all": records}, f, indent=2)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
