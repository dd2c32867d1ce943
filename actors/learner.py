"""One data-parallel DeepSpeed rank, run as a Ray actor.

A `LearnerGroup` (actors/learner_group.py) starts `learner.ranks` of these,
gives each an equal shard of an iteration's samples, and reads back their
numbers. Rank 0 also exports weights for the sync and writes checkpoints.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import time
from datetime import timedelta
from pathlib import Path

import torch

from actors.batching import Sample, collate_samples, teacher_forced_logprobs
from actors.weights_payload import encode_weights
from jobs.errors import TrainingError
from jobs.spec import JobSpec
from losses.cll import centered_log_likelihood
from losses.idft import idft_lambda, idft_loss
from losses.sft import sft_loss
from losses.token_stats import response_token_stats

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def lr_multiplier(step: int, total_steps: int, warmup_ratio: float, schedule: str) -> float:
    """Linear warmup, then constant or cosine decay to zero."""
    warmup = int(round(warmup_ratio * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def deepspeed_config(spec: JobSpec) -> dict:
    return {
        "train_micro_batch_size_per_gpu": spec.train.micro_batch_size,
        "gradient_accumulation_steps": spec.train.gradient_accumulation_steps,
        "gradient_clipping": spec.train.grad_clip,
        "zero_optimization": {"stage": spec.learner.zero_stage},
        # We hand DeepSpeed a torch AdamW: DeepSpeed's own Adam would
        # JIT-compile C++ for minutes on first use.
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": spec.model.dtype == "bfloat16"},
        "fp16": {"enabled": spec.model.dtype == "float16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


class Learner:
    def __init__(self, spec: JobSpec, model_path: str, rank: int, world_size: int):
        self.spec = spec
        self.model_path = model_path
        self.rank = rank
        self.world_size = world_size
        self.on_gpu = spec.learner.gpus_per_rank > 0
        self.device = torch.device("cuda", 0) if self.on_gpu else torch.device("cpu")
        self.total_steps = spec.iterations * spec.optimizer_steps_per_iteration
        torch.set_num_threads(max(1, round(spec.learner.cpus_per_rank)))

    def master_address(self) -> tuple[str, int]:
        import ray

        return ray.util.get_node_ip_address(), free_port()

    def setup(self, master_addr: str, master_port: int) -> None:
        os.environ.update(
            {
                "RANK": str(self.rank),
                "WORLD_SIZE": str(self.world_size),
                # Ray gives each GPU rank its own CUDA_VISIBLE_DEVICES, so it sees device 0.
                "LOCAL_RANK": "0" if self.on_gpu else str(self.rank),
                "LOCAL_WORLD_SIZE": "1" if self.on_gpu else str(self.world_size),
                "MASTER_ADDR": master_addr,
                "MASTER_PORT": str(master_port),
                "DS_ACCELERATOR": "cuda" if self.on_gpu else "cpu",
            }
        )
        import deepspeed
        from transformers import AutoModelForCausalLM

        deepspeed.utils.logger.setLevel(logging.WARNING)
        # The shared-memory all-reduce op would be JIT-compiled (minutes) on
        # first use; gloo is fast enough for CPU runs. Internal flag, no env var.
        getattr(deepspeed, "ops").__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend="nccl" if self.on_gpu else "gloo", timeout=timedelta(minutes=10))

        torch.manual_seed(self.spec.seed)
        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=TORCH_DTYPES[self.spec.model.dtype])
        train = self.spec.train
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=train.lr, betas=train.betas, weight_decay=train.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_multiplier(step, self.total_steps, train.warmup_ratio, train.lr_schedule),
        )
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(self.spec)
        )
        self.pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0

    def _loss(self, samples: list[Sample]) -> tuple[torch.Tensor, dict, int]:
        batch = collate_samples(samples, self.pad_id).to(self.device)
        logits = self.engine(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        stats = response_token_stats(logits, batch.input_ids, batch.response_mask)
        if self.spec.algorithm == "idft":
            idft = self.spec.train.idft
            progress = self.engine.global_steps / max(1, self.total_steps)
            loss, metrics = idft_loss(
                stats.logprobs,
                centered_log_likelihood(stats),
                stats.mask,
                beta=idft.beta,
                gamma_min=idft.gamma_min,
                gamma_max=idft.gamma_max,
                lam=idft_lambda(progress, idft.warmup_ratio, idft.transition_ratio),
            )
        else:
            loss, metrics = sft_loss(stats.logprobs, stats.mask)
        return loss, metrics, int(batch.attention_mask.sum())

    def _stop_if_not_finite(self, value: torch.Tensor, what: str, iteration: int) -> None:
        # Decided collectively: if one rank raised alone, the others would wait
        # in the next all-reduce forever.
        bad = torch.tensor([0.0 if bool(torch.isfinite(value)) else 1.0], device=self.device)
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        if bad.item():
            raise TrainingError(
                f"iteration {iteration}: {what} is not finite (optimizer step {self.engine.global_steps}); "
                f"training stopped and these weights were neither synced nor checkpointed, so no checkpoint "
                f"holds NaN weights. Lower train.lr or check this iteration's samples"
            )

    def train(self, samples: list[Sample], iteration: int) -> dict:
        """Train on this rank's shard; returns sums the group turns into means."""
        self.engine.train()
        micro = self.spec.train.micro_batch_size
        totals = {"loss": 0.0, "nll": 0.0, "gamma_mean": 0.0, "weight_mean": 0.0, "loss_tokens": 0.0}
        grad_norms, tokens, started = [], 0, time.perf_counter()
        for _ in range(self.spec.train.epochs_per_iteration):
            for start in range(0, len(samples), micro):
                loss, metrics, batch_tokens = self._loss(samples[start : start + micro])
                self._stop_if_not_finite(loss.detach(), "the loss", iteration)
                boundary = self.engine.is_gradient_accumulation_boundary()
                self.engine.backward(loss)
                if boundary and self.spec.learner.zero_stage == 0:
                    # ZeRO-0 reports no norm and applies a non-finite update
                    # without complaint, so measure the (all-reduced) gradients
                    # before stepping.
                    grad_norm = torch.nn.utils.get_total_norm(
                        [p.grad for p in self.engine.module.parameters() if p.grad is not None]
                    )
                    self._stop_if_not_finite(grad_norm, "the gradient norm", iteration)
                self.engine.step()
                if boundary:
                    if self.spec.learner.zero_stage > 0:
                        # ZeRO-1/2 have already skipped a non-finite step themselves.
                        grad_norm = torch.as_tensor(float(self.engine.get_global_grad_norm()))
                        self._stop_if_not_finite(grad_norm, "the gradient norm", iteration)
                    grad_norms.append(float(grad_norm))
                n = float(metrics["num_tokens"])
                totals["loss"] += float(loss.detach()) * n
                totals["loss_tokens"] += n
                for key in ("nll", "gamma_mean", "weight_mean"):
                    if key in metrics:
                        totals[key] += float(metrics[key]) * n
                tokens += batch_tokens
        totals.update(
            tokens=tokens,
            seconds=time.perf_counter() - started,
            grad_norm=sum(grad_norms) / max(1, len(grad_norms)),
            lr=self.engine.get_lr()[0],
            optimizer_steps=self.engine.global_steps,
        )
        return totals

    def export_weights(self) -> bytes:
        """The full weights as one payload (ZeRO 0-2 keep full parameters on every rank)."""
        return encode_weights(self.engine.module.state_dict())

    def save_checkpoint(self, directory: str) -> str:
        """Write an HF folder atomically: a reader sees the old checkpoint or the new one, never half of one."""
        from transformers import AutoTokenizer

        target = Path(directory)
        staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        # save_pretrained writes tied weights once and ties them again on load.
        self.engine.module.save_pretrained(staging)
        AutoTokenizer.from_pretrained(self.model_path).save_pretrained(staging)
        if target.exists():
            retired = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
        return str(target)

    def sequence_logprobs(self, token_ids: list[int]) -> list[float]:
        """The learner's log p of token_ids[1:]: the probe that checks weight sync."""
        return teacher_forced_logprobs(self.engine.module, token_ids, self.pad_id)
