"""Standalone training loops on a job's own batches: the baseline of learner efficiency (and of the DPO/SFT
comparison's in-job side).

    .venv/bin/python bench/standalone_learner.py --run DIR [--threads 2,1] [--repeats 3] [--loops deepspeed,torch]

For every iteration N of the job it takes what the learner trained on (DIR/samples/iter-N.jsonl
for sft/idft, DIR/pairs/iter-N.jsonl for the pair algorithms), shuffles and trims it as
actors/learner_group.py does for rank 0 of a 1-rank group, splits it with the learner's own
`micro_batches`, and trains on it with the job's forward pass and loss (actors.training.batching.response_stats,
actors/training/objectives.py), starting from the job's starting model, in one plain process:

- deepspeed: `deepspeed.initialize` with the job's own `deepspeed_config(spec)` (gloo, world
  size 1, torch AdamW and the job's LR schedule, as actors/learner.py);
- torch: the same model, AdamW, schedule and gradient clipping with no DeepSpeed at all;
- job_learner: the job's own `actors.learner.Learner` (setup, then `train` on the rank's shard),
  outside Ray: the rank's work with its bookkeeping, minus Ray.

The first two loops are lean: forward, loss, backward, step; none of the job's per-step bookkeeping
(finite checks across ranks, gradient norms, metrics read back to Python). Tokens are counted as
the job counts them (real tokens of every sequence, prompt included, per epoch). Every
(loop, thread count) is timed on every iteration (--skip-first: 1..), interleaved, --repeats
times, after one untimed warm-up iteration. Prints one line RESULT={json}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.local_cluster import free_port  # noqa: E402 (after the path it needs)


def load_items(run: Path, spec, iteration: int) -> list:
    """What the learner trained on in this iteration, in the order the driver handed it over."""
    from jobs.core.records import Pair, Sample

    if spec.trains_on_pairs:
        path, kind = run / "pairs" / f"iter-{iteration}.jsonl", Pair
    else:
        path, kind = run / "samples" / f"iter-{iteration}.jsonl", Sample
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    items = [kind(**row) for row in rows]
    if not spec.trains_on_pairs:  # answer-first records dropped samples too; the learner gets the kept ones
        items = [s for s in items if s.dropped is None and s.source != "demonstration"]
    return items


def rank0_shard(items: list, spec, iteration: int) -> list:
    """actors/learner_group.py's shuffle and trim, for a group of spec.learner.ranks (rank 0's share)."""
    ranks = spec.learner.ranks
    usable = len(items) - len(items) % (ranks * spec.train.gradient_accumulation_steps)
    order = list(range(len(items)))
    random.Random(spec.seed * 1_000_003 + iteration).shuffle(order)
    return [items[i] for i in order[:usable][0::ranks]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="the job's output directory")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loops", default="deepspeed,torch,job_learner")
    parser.add_argument("--max-iterations", type=int, help="time at most this many iterations (the first ones)")
    parser.add_argument("--skip-first", action="store_true", help="time iterations 1.. only (the first is the warm-up)")
    args = parser.parse_args()

    import yaml

    os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "DS_ACCELERATOR": "cpu"})
    import torch
    from transformers import AutoModelForCausalLM

    from actors.training.batching import collate_samples
    from actors.learner import deepspeed_config, lr_multiplier, micro_batches, pair_logps
    from actors.training.trainable_model import load_options
    from actors.training.objectives import pair_objective, sample_objective
    from jobs.algorithms.base import PairLogps
    from jobs.core.spec import validate_spec
    try:  # the job's own forward + per-token stats (it projects only the positions that predict response tokens)
        from actors.training.batching import response_stats
    except ImportError:  # older checkouts: full logits
        from losses.token_stats import response_token_stats

        def response_stats(model, batch):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            return response_token_stats(logits, batch.input_ids, batch.response_mask)

    run = Path(args.run)
    spec = validate_spec(yaml.safe_load((run / "spec.yaml").read_text()))
    model_path = (str(run / "builtin" / spec.model.path.split(":", 1)[1])
                  if spec.model.path.startswith("builtin:") else spec.model.path)
    threads = [int(t) for t in args.threads.split(",")]
    loops = args.loops.split(",")
    train = spec.train
    iterations = sorted(int(p.stem.split("-")[1]) for p in (run / ("pairs" if spec.trains_on_pairs else "samples"))
                        .glob("iter-*.jsonl"))
    chunks, shards = {}, {}
    for i in iterations:
        shard = rank0_shard(load_items(run, spec, i), spec, i)
        if shard:
            shards[i] = shard
            chunks[i] = micro_batches(shard, train.micro_batch_size, train.gradient_accumulation_steps)
    total_steps = spec.iterations * spec.optimizer_steps_per_iteration
    load = load_options(spec)
    torch.manual_seed(spec.seed)

    def new_model():
        return AutoModelForCausalLM.from_pretrained(model_path, **load)

    def optimizer_and_schedule(model):
        optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, betas=train.betas, weight_decay=train.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_multiplier(step, total_steps, train.warmup_ratio, train.lr_schedule))
        return optimizer, schedule

    pad_id = None

    def loss_and_tokens(model, chunk, step: int):
        if spec.trains_on_pairs:
            logps, lengths = pair_logps(model, chunk, pad_id, "cpu")
            n = len(chunk)
            reference = None
            if chunk[0].reference_logp_chosen is not None:
                reference = torch.tensor([[p.reference_logp_chosen for p in chunk],
                                          [p.reference_logp_rejected for p in chunk]], dtype=torch.float32)
            loss, _ = pair_objective(spec, PairLogps(logps[:n], logps[n:], None if reference is None else reference[0],
                                                     None if reference is None else reference[1], lengths[:n], lengths[n:]))
            return loss, sum(p.num_tokens for p in chunk)
        batch = collate_samples(chunk, pad_id)
        stats = response_stats(model, batch)
        loss, _ = sample_objective(spec, stats, step / max(1, total_steps))
        return loss, int(batch.attention_mask.sum())

    trainers = {}
    if "deepspeed" in loops:
        import logging

        import deepspeed

        deepspeed.utils.logger.setLevel(logging.WARNING)
        getattr(deepspeed, "ops").__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend="gloo")
        model = new_model()
        optimizer, schedule = optimizer_and_schedule(model)
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule,
                                               config=deepspeed_config(spec))
        pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0

        def deepspeed_iteration(iteration: int) -> int:
            engine.train()
            tokens = 0
            for _ in range(train.epochs_per_iteration):
                for chunk in chunks[iteration]:
                    loss, n = loss_and_tokens(engine, chunk, engine.global_steps)
                    engine.backward(loss)
                    engine.step()
                    tokens += n
            return tokens

        trainers["deepspeed"] = deepspeed_iteration
    if "torch" in loops:
        plain = new_model()
        plain_optimizer, plain_schedule = optimizer_and_schedule(plain)
        pad_id = plain.config.pad_token_id if plain.config.pad_token_id is not None else 0
        state = {"micro": 0, "steps": 0}

        def torch_iteration(iteration: int) -> int:
            plain.train()
            tokens = 0
            accumulation = train.gradient_accumulation_steps
            for _ in range(train.epochs_per_iteration):
                for chunk in chunks[iteration]:
                    loss, n = loss_and_tokens(plain, chunk, state["steps"])
                    (loss / accumulation).backward()
                    state["micro"] += 1
                    if state["micro"] % accumulation == 0:
                        torch.nn.utils.clip_grad_norm_(plain.parameters(), train.grad_clip)
                        plain_optimizer.step()
                        plain_schedule.step()
                        plain_optimizer.zero_grad(set_to_none=True)
                        state["steps"] += 1
                    tokens += n
            return tokens

        trainers["torch"] = torch_iteration

    notes = []
    if "job_learner" in loops:
        try:  # the job's own Learner class, outside Ray: what the job's rank does, minus Ray
            from actors.learner import Learner

            learner = Learner(spec, model_path, 0, 1)
            learner.setup(("127.0.0.1", int(os.environ["MASTER_PORT"])))

            def job_learner_iteration(iteration: int) -> int:
                return int(learner.train(list(shards[iteration]), iteration)["tokens"])

            trainers["job_learner"] = job_learner_iteration
        except Exception as exc:  # the class changed shape: the other loops still stand
            notes.append(f"job_learner loop skipped: {type(exc).__name__}: {exc}")

    first = min(chunks)
    torch.set_num_threads(threads[0])
    for trainer in trainers.values():
        trainer(first)  # warm-up: allocator, optimizer state
    timed = [i for i in chunks if not (args.skip_first and i == first and len(chunks) > 1)][: args.max_iterations]
    timings = {name: {t: {i: {"tokens": None, "seconds": []} for i in timed} for t in threads} for name in trainers}
    for _ in range(args.repeats):
        for i in timed:
            for name, trainer in trainers.items():
                for t in threads:
                    torch.set_num_threads(t)
                    started = time.perf_counter()
                    tokens = trainer(i)
                    entry = timings[name][t][i]
                    entry["seconds"].append(time.perf_counter() - started)
                    entry["tokens"] = tokens
    result = {
        "model": model_path, "algorithm": spec.algorithm, "zero_stage": spec.learner.zero_stage,
        "micro_batch_size": train.micro_batch_size, "job_ranks": spec.learner.ranks,
        "micro_batches_per_iteration": {i: len(c) for i, c in chunks.items()}, "notes": notes,
        "loops": {name: {str(t): {str(i): v for i, v in per.items()} for t, per in by_threads.items()}
                  for name, by_threads in timings.items()},
    }
    print("RESULT=" + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
