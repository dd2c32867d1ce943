"""The engine-vs-trainer log-prob gap in bf16, with the model's own head and with float32 heads on both sides.

    python -m bench.head_dtype_gap --model /path/to/SmolLM2-135M-Instruct [--dtype bfloat16] [--prompts 32]

One rollout worker (vLLM and its CLL replica, in this process) per setting samples the same
prompts with the same seeds; the replica scores every sample teacher-forced (`cll_from: replica`)
and the per-token |engine − replica| log-prob gaps are summarised as the job's metrics are
(mean, p99, max). Prints one JSON line per setting. Runs by hand; docs/gpu.md says what it is for.
"""

from __future__ import annotations

import argparse
import json
import time


def measure(model: str, dtype: str, head: str, prompts: int, max_new_tokens: int) -> dict:
    from transformers import AutoTokenizer

    from actors.decoding.cll_scorer import logprob_gap_metrics
    from actors.rollout_worker import RolloutWorker, vllm_env_vars
    from jobs.core.data import load_prompts
    from jobs.core.spec import validate_spec

    spec = validate_spec({
        "model": {"path": model, "dtype": dtype, "lm_head_dtype": head, "max_model_len": 512},
        "data": {"path": "builtin:arithmetic"},
        "rollout": {"samples_per_prompt": 2, "max_new_tokens": max_new_tokens, "cll_from": "replica"},
    })
    import os

    os.environ.update(vllm_env_vars(spec))
    tokenizer = AutoTokenizer.from_pretrained(model)
    batch, _ = load_prompts(spec.data, tokenizer, max_prompt_tokens=256)
    worker = RolloutWorker(spec, model, 0)
    started = time.perf_counter()
    samples, stats = worker.generate(batch[:prompts], 0)
    return {"dtype": dtype, "lm_head_dtype": head, "samples": len(samples), "tokens": len(stats["logprob_gaps"]),
            "seconds": round(time.perf_counter() - started, 1), **logprob_gap_metrics(stats["logprob_gaps"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--head", choices=["model", "float32"], action="append",
                        help="settings to measure (default: both)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    for head in args.head or ["model", "float32"]:
        print(json.dumps(measure(args.model, args.dtype, head, args.prompts, args.max_new_tokens)), flush=True)


if __name__ == "__main__":
    main()
