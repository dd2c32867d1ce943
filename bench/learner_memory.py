"""Peak memory per learner rank under every ZeRO stage, offload and LoRA setting, and the memory model fitted to it.

    .venv/bin/python -m bench.learner_memory [--model PATH ...] [--ranks 2] [--only SETTING ...]

For each model (default: the builtin tiny model; add a local HF folder such as SmolLM2-135M) and
each setting, a fresh LearnerGroup (real Ray and DeepSpeed, gloo on CPU) trains 2 iterations of
SFT on fixed synthetic samples (64-token prompts, 192-token responses, micro-batch 2), and each
rank reports its peak memory while training (`learner_peak_memory_mb_rank{r}`: peak RSS on CPU,
torch's peak allocation on a GPU) and while loading (`learner_setup_peak_memory_mb_rank{r}`). An idle rank (the same imports and process group, no model) gives the
process's fixed cost. Results go to bench/learner-memory.json; docs/scaling.md explains them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("learner-memory.json")
# DeepSpeed's communication buckets default to 5e8 elements (2 GB in fp32): more than a 135M model, so
# stage 2 holds every gradient in its bucket before reducing it. A bucket near a layer's size shows what
# the stage itself saves; a 7B run keeps the defaults, which are small next to its model.
SMALL_BUCKETS = {"reduce_bucket_size": 5_000_000, "allgather_bucket_size": 5_000_000}
# Likewise ZeRO-3 keeps up to 1e9 gathered elements alive by default: all of a 135M model.
ZERO3_SMALL_LIVE = {**SMALL_BUCKETS, "stage3_max_live_parameters": 10_000_000, "stage3_max_reuse_distance": 10_000_000,
                    "stage3_prefetch_bucket_size": 5_000_000}
SETTINGS = {
    "zero0": {"learner": {"zero_stage": 0}},
    "zero1": {"learner": {"zero_stage": 1}},
    "zero2": {"learner": {"zero_stage": 2}},
    "zero3": {"learner": {"zero_stage": 3}},
    "zero1+small_buckets": {"learner": {"zero_stage": 1, "zero_options": SMALL_BUCKETS}},
    "zero2+small_buckets": {"learner": {"zero_stage": 2, "zero_options": SMALL_BUCKETS}},
    "zero3+small_live": {"learner": {"zero_stage": 3, "zero_options": ZERO3_SMALL_LIVE}},
    "zero2+checkpointing": {"learner": {"zero_stage": 2, "zero_options": SMALL_BUCKETS},
                            "train": {"gradient_checkpointing": True}},
    "zero3+checkpointing": {"learner": {"zero_stage": 3, "zero_options": ZERO3_SMALL_LIVE},
                            "train": {"gradient_checkpointing": True}},
    "zero2+offload_optimizer": {"learner": {"zero_stage": 2, "offload": "optimizer", "zero_options": SMALL_BUCKETS}},
    "zero3+offload_optimizer": {"learner": {"zero_stage": 3, "offload": "optimizer", "zero_options": ZERO3_SMALL_LIVE}},
    "zero3+offload_optimizer_and_params": {"learner": {"zero_stage": 3, "offload": "optimizer_and_params",
                                                       "zero_options": ZERO3_SMALL_LIVE}},
    "zero0+lora_r8": {"learner": {"zero_stage": 0}, "model": {"lora": {"r": 8}}},
    "zero2+lora_r8": {"learner": {"zero_stage": 2, "zero_options": SMALL_BUCKETS}, "model": {"lora": {"r": 8}}},
    "zero3+lora_r8": {"learner": {"zero_stage": 3, "zero_options": ZERO3_SMALL_LIVE}, "model": {"lora": {"r": 8}}},
}


def samples(rank_count: int, iteration: int, vocab: int):
    from jobs.core.records import Sample

    rng = random.Random(iteration)
    return [Sample(iteration=iteration, prompt_index=i, prompt="", response="", finish_reason="length",
                   prompt_token_ids=[rng.randrange(3, vocab) for _ in range(64)],
                   response_token_ids=[rng.randrange(3, vocab) for _ in range(192)])
            for i in range(8 * rank_count)]


def idle_rank_mb(ranks: int) -> float:
    """Peak RSS of a rank that imports what a learner imports and joins the process group, with no model."""
    import ray

    @ray.remote(num_cpus=0)
    def idle(rank: int, port: int) -> float:
        import os
        from datetime import timedelta

        os.environ.update(RANK=str(rank), WORLD_SIZE=str(ranks), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port), DS_ACCELERATOR="cpu")
        import deepspeed
        import transformers  # noqa: F401

        import actors.learner  # noqa: F401
        from actors.process_memory import peak_rss_mb

        getattr(deepspeed, "ops").__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend="gloo", timeout=timedelta(minutes=5))
        return peak_rss_mb()

    from actors.weights.broadcast import free_address

    _, port = free_address()
    return max(ray.get([idle.remote(r, port) for r in range(ranks)]))


def measure(model: str, name: str, setting: dict, ranks: int, malloc_mmap_threshold: int | None) -> dict:
    import ray
    from transformers import AutoConfig

    from actors.learner_group import LearnerGroup
    from jobs.run import actor_env_vars
    from jobs.core.spec import validate_spec

    raw = {"algorithm": "sft", "iterations": 2, "model": {"path": model, **setting.get("model", {})},
           "learner": {"ranks": ranks, **setting["learner"]},
           "rollout": {"prompts_per_iteration": 8 * ranks, "samples_per_prompt": 1, "max_new_tokens": 192},
           "train": {"micro_batch_size": 2, "warmup_ratio": 0.0, **setting.get("train", {})}}
    spec = validate_spec(raw)
    vocab = AutoConfig.from_pretrained(model).vocab_size
    started = time.perf_counter()
    env = actor_env_vars(spec)
    if malloc_mmap_threshold:
        # glibc keeps freed heap memory and counts it in the resident set; with large blocks mmapped, a
        # freed tensor leaves the RSS at once, so the peak RSS is the peak of live memory, as on a GPU.
        env["MALLOC_MMAP_THRESHOLD_"] = str(malloc_mmap_threshold)
    learners = LearnerGroup(spec, model, env)
    try:
        ray.get([ref for _, ref in learners.ready_refs()], timeout=900)
        rows = [learners.train(samples(ranks, i, vocab), iteration=i) for i in range(2)]
    finally:
        learners.shutdown()
    peaks = [rows[-1][f"learner_peak_memory_mb_rank{r}"] for r in range(ranks)]
    setup = [rows[-1][f"learner_setup_peak_memory_mb_rank{r}"] for r in range(ranks)]
    return {"peak_mb_per_rank": [round(p) for p in peaks], "setup_peak_mb_per_rank": [round(p) for p in setup], "loss": [r["loss"] for r in rows],
            "train_tokens_per_s": round(rows[-1]["train_tokens_per_s"]), "seconds": round(time.perf_counter() - started, 1)}


def parameter_count(model: str) -> tuple[int, int]:
    """(all parameters, parameters LoRA r=8 on every linear layer but the head would add)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model)
    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in net.parameters())
    lora = sum(8 * (m.in_features + m.out_features) for n, m in net.named_modules()
               if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head"))
    return total, lora


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.learner_memory", description=__doc__.split("\n")[0])
    p.add_argument("--model", nargs="+", default=["builtin:tiny-llama"], help="builtin:tiny-llama and/or local HF folders")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--only", nargs="+", choices=list(SETTINGS), metavar="SETTING")
    p.add_argument("--malloc-mmap-threshold", type=int, default=65536, metavar="BYTES",
                   help="glibc MALLOC_MMAP_THRESHOLD_ for the ranks (0: glibc's default, which keeps freed memory resident)")
    args = p.parse_args()

    import ray

    from jobs.core.builtin import build_tiny_llama

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    ray.init(num_cpus=max(2, args.ranks), include_dashboard=False, log_to_driver=False)
    try:
        idle = idle_rank_mb(args.ranks)
        print(f"idle rank (imports + process group, no model): {idle:.0f} MiB", flush=True)
        for model in args.model:
            path = str(build_tiny_llama(Path("runs/bench/tiny-llama"), seed=0)) if model == "builtin:tiny-llama" else model
            parameters, lora_parameters = parameter_count(path)
            entry = results.setdefault(model, {"parameters": parameters, "lora_r8_parameters": lora_parameters,
                                               "settings": {}})
            entry.update(idle_rank_mb=round(idle), ranks=args.ranks, machine=f"{os.cpu_count()} cores, CPU",
                         malloc_mmap_threshold=args.malloc_mmap_threshold)
            for name in args.only or SETTINGS:
                result = measure(path, name, SETTINGS[name], args.ranks, args.malloc_mmap_threshold)
                entry["settings"][name] = result
                print(f"{model:40} {name:36} training peak/rank {result['peak_mb_per_rank']} MiB  "
                      f"setup {result['setup_peak_mb_per_rank']} MiB  "
                      f"loss {result['loss'][-1]:.4f}  {result['seconds']}s", flush=True)
                RESULTS.write_text(json.dumps(results, indent=1))
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
