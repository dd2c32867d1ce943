"""TRL's SFTTrainer / DPOTrainer on a job's own batches: the baseline of the vs-TRL figure.

    .venv/bin/python bench/trl_trainers.py --run DIR --kind sft|dpo [--threads 2] [--repeats 3]

Same model (the job's starting model), same data (what the job's learner trained on: the samples
or pairs files, shuffled and trimmed as the learner group does, one block per iteration, repeated
for epochs_per_iteration), same batch (per_device_train_batch_size = train.micro_batch_size,
gradient accumulation, a sequential sampler so TRL's batches are the job's micro-batches), same
number of steps, same optimizer settings (AdamW, lr, betas, weight decay, clipping, constant or
cosine schedule) and the given CPU threads; use_cpu=True, report_to=[], nothing saved or logged.

- sft: SFTTrainer on pre-tokenized rows (input_ids, labels = -100 on the prompt): the loss is on
  the response only, as the job's. (The job's IDFT loss does a little more work than SFT's.)
- dpo: DPOTrainer (sigmoid loss, the job's beta and label smoothing) on pre-tokenized
  prompt/chosen/rejected ids; its own dataset preparation (tokenizing text) is skipped. TRL's
  default computes the reference log-probs with a frozen copy inside every step.

Time is TRL's training loop (on_train_begin to on_train_end) over every iteration's block
(--skip-first: iterations 1.., as the in-job figure), after one untimed warm-up run on the first
iteration's block; tokens are every real token of every sequence trained, per epoch (the
job's count). Prints one line RESULT={json}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--kind", choices=("sft", "dpo"), required=True)
    parser.add_argument("--threads", default="2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-iterations", type=int, help="time at most this many iterations (the first ones)")
    parser.add_argument("--skip-first", action="store_true",
                        help="time iterations 1.. only (the first iteration's block is the warm-up run)")
    args = parser.parse_args()

    import torch
    import yaml
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from actors.learner import micro_batches
    from actors.training.trainable_model import load_options
    from bench.standalone_learner import load_items, rank0_shard
    from jobs.core.spec import validate_spec

    run = Path(args.run)
    spec = validate_spec(yaml.safe_load((run / "spec.yaml").read_text()))
    model_path = (str(run / "builtin" / spec.model.path.split(":", 1)[1])
                  if spec.model.path.startswith("builtin:") else spec.model.path)
    train = spec.train
    threads = [int(t) for t in args.threads.split(",")]
    folder = "pairs" if args.kind == "dpo" else "samples"
    iterations = sorted(int(p.stem.split("-")[1]) for p in (run / folder).glob("iter-*.jsonl"))
    blocks = []
    for i in iterations:
        shard = rank0_shard(load_items(run, spec, i), spec, i)
        ordered = [item for chunk in micro_batches(shard, train.micro_batch_size, train.gradient_accumulation_steps)
                   for item in chunk] if shard else []
        blocks.append(ordered * train.epochs_per_iteration)

    if args.kind == "sft":
        def row(s):
            return {"input_ids": list(s.prompt_token_ids) + list(s.response_token_ids),
                    "labels": [-100] * len(s.prompt_token_ids) + list(s.response_token_ids)}
    else:
        def row(p):
            return {"prompt_ids": list(p.prompt_token_ids), "chosen_ids": list(p.chosen_token_ids),
                    "rejected_ids": list(p.rejected_token_ids)}
    start = 1 if args.skip_first and len(blocks) > 1 else 0
    timed, timed_iterations = blocks[start:][: args.max_iterations], iterations[start:][: args.max_iterations]
    all_rows = [row(item) for block in timed for item in block]
    first_rows = [row(item) for item in blocks[0]]
    tokens = sum(item.num_tokens for block in timed for item in block)

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    load = load_options(spec)

    class TrainClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self.started
            self.steps = state.global_step

    common = dict(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"), use_cpu=True, report_to=[], save_strategy="no",
        logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, num_train_epochs=1, seed=spec.seed,
        per_device_train_batch_size=train.micro_batch_size, gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=train.lr, adam_beta1=train.betas[0], adam_beta2=train.betas[1], weight_decay=train.weight_decay,
        max_grad_norm=train.grad_clip, lr_scheduler_type="constant" if train.lr_schedule == "constant" else "cosine",
        warmup_steps=0, optim="adamw_torch", train_sampling_strategy="sequential", max_length=spec.model.max_model_len,
        bf16=spec.model.dtype == "bfloat16", fp16=spec.model.dtype == "float16",
    )

    def trainer_for(rows: list[dict]):
        model = AutoModelForCausalLM.from_pretrained(model_path, **load)
        data = Dataset.from_list(rows)
        clock = TrainClock()
        if args.kind == "sft":
            from trl import SFTConfig, SFTTrainer

            trainer = SFTTrainer(model=model, args=SFTConfig(**common, packing=False), train_dataset=data,
                                 processing_class=tokenizer, callbacks=[clock])
        else:
            from trl import DPOConfig, DPOTrainer

            class PreTokenizedDPOTrainer(DPOTrainer):
                def _prepare_dataset(self, dataset, *unused, **unused_too):
                    return dataset  # already prompt_ids / chosen_ids / rejected_ids

            dpo = spec.train.dpo
            trainer = PreTokenizedDPOTrainer(
                model=model, args=DPOConfig(**common, beta=dpo.beta, loss_type=["sigmoid"],
                                            label_smoothing=dpo.label_smoothing),
                train_dataset=data, processing_class=tokenizer, callbacks=[clock])
        return trainer, clock

    torch.set_num_threads(threads[0])
    trainer, _ = trainer_for(first_rows)
    trainer.train()  # warm-up
    timings = {t: {"seconds": [], "steps": None} for t in threads}
    for _ in range(args.repeats):
        for t in threads:
            torch.set_num_threads(t)
            trainer, clock = trainer_for(all_rows)
            trainer.train()
            timings[t]["seconds"].append(clock.seconds)
            timings[t]["steps"] = clock.steps
    import trl

    print("RESULT=" + json.dumps({"kind": args.kind, "trl_version": trl.__version__, "examples": len(all_rows),
                                  "tokens": tokens, "iterations": timed_iterations,
                                  "threads": {str(t): v for t, v in timings.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
