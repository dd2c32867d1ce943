"""One data-parallel DeepSpeed rank, run as a Ray actor.

A `LearnerGroup` (actors/learner_group.py) starts `learner.ranks` of these,
gives each an equal shard of an iteration's samples, and reads back their
numbers. Rank 0 also exports weights for the sync and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from datetime import timedelta
from pathlib import Path

import torch

from actors.training.batching import collate_pairs, collate_samples, response_stats, teacher_forced_logprobs

from jobs.core.records import Pair, Sample
from actors.decoding.float32_head import use_float32_head
from actors.weights.full_weights import full_weights, plain_model
from actors.training.objectives import pair_objective, sample_objective
from actors.process_memory import peak_rss_mb, reset_peak_rss
from actors.progress_board import PhaseCounter
from actors.weights.broadcast import free_address, gloo_on_node_address, open_group, send_payload
from actors.training.trainable_model import load_options, load_trainable_model
from jobs.algorithms.base import PairLogps
from jobs.core.checkpoints import MERGED, TRAINING_STATE, CheckpointError
from jobs.core.errors import TrainingError
from jobs.core.spec import JobSpec
from losses.token_stats import sequence_logps

DEEPSPEED_TAG = "deepspeed"


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
    zero = {"stage": spec.learner.zero_stage}
    zero.update(spec.learner.zero_options)
    pin = spec.learner.gpus_per_rank > 0  # pinned host memory speeds up GPU<->CPU copies; on CPU there are none
    if spec.learner.offload in ("optimizer", "optimizer_and_params"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
    if spec.learner.offload == "optimizer_and_params":
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin}
    return {
        "train_micro_batch_size_per_gpu": spec.train.micro_batch_size,
        "gradient_accumulation_steps": spec.train.gradient_accumulation_steps,
        "gradient_clipping": spec.train.grad_clip,
        "zero_optimization": zero,
        # We hand DeepSpeed a torch AdamW: DeepSpeed's own Adam (and DeepSpeedCPUAdam, which offload
        # would otherwise insist on) JIT-compile C++ for minutes on first use.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "bf16": {"enabled": spec.model.dtype == "bfloat16"},
        "fp16": {"enabled": spec.model.dtype == "float16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def inference_config(training_config: dict) -> dict:
    """The DeepSpeed config of a frozen ZeRO-3 model (the reference): sharded like the policy, no optimizer."""
    optimizer_keys = ("gradient_clipping", "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer")
    frozen = {k: v for k, v in training_config.items() if k not in optimizer_keys}
    frozen["zero_optimization"] = {k: v for k, v in training_config["zero_optimization"].items()
                                   if k != "offload_optimizer"}
    return frozen


def micro_batches(items: list, size: int, multiple_of: int) -> list[list]:
    """Consecutive, near-equal, non-empty chunks of at most ~`size` items; their count is a multiple of `multiple_of`.

    `len(items)` must be a multiple of `multiple_of` (LearnerGroup.train sees to it). Every rank gets
    the same number of items, so every rank runs the same number of micro-batches and steps.
    """
    count = -(-len(items) // size)
    count = -(-count // multiple_of) * multiple_of
    bounds = [len(items) * i // count for i in range(count + 1)]
    return [items[bounds[i] : bounds[i + 1]] for i in range(count)]


def pair_logps(model, pairs: list[Pair], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """[2B] summed response log-probs and [2B] response lengths: the B chosen, then the B rejected.

    Carries grad when `model` does: the learner trains through it, the frozen reference does not.
    """
    return sequence_logps(response_stats(model, collate_pairs(pairs, pad_id).to(device)))


class Learner:
    def __init__(self, spec: JobSpec, model_path: str, rank: int, world_size: int, resume_from: str | None = None):
        self.spec = spec
        self.model_path = model_path  # the initial model: tokenizer, and the frozen reference
        self.resume_from = resume_from  # a checkpoint folder: the policy's weights and training state
        self.rank = rank
        self.world_size = world_size
        self.on_gpu = spec.learner.gpus_per_rank > 0
        self.device = torch.device("cuda", 0) if self.on_gpu else torch.device("cpu")
        self.total_steps = spec.iterations * spec.optimizer_steps_per_iteration
        self.zero3 = spec.learner.zero_stage == 3  # parameters sharded: gathers and forwards are collective

    def master_address(self) -> tuple[str, int]:
        """This rank's node address and a free port there: for DeepSpeed's group, and for the weight group."""
        return free_address()

    def setup(self, master: tuple[str, int]) -> None:
        master_addr, master_port = master
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
        gloo_on_node_address()  # DeepSpeed's CPU group is gloo
        import deepspeed
        from transformers import AutoModelForCausalLM

        deepspeed.utils.logger.setLevel(logging.WARNING)
        # The shared-memory all-reduce op would be JIT-compiled (minutes) on
        # first use; gloo is fast enough for CPU runs. Internal flag, no env var.
        getattr(deepspeed, "ops").__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend="nccl" if self.on_gpu else "gloo", timeout=timedelta(minutes=10))

        torch.manual_seed(self.spec.seed)
        config = deepspeed_config(self.spec)
        model, self._zero3_marker = load_trainable_model(self.spec, self.model_path, self.resume_from, config)
        train = self.spec.train
        optimizer = torch.optim.AdamW(  # LoRA: only the adapters require grad, so only they hold optimizer state
            [p for p in model.parameters() if p.requires_grad], lr=train.lr, betas=train.betas,
            weight_decay=train.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_multiplier(step, self.total_steps, train.warmup_ratio, train.lr_schedule),
        )
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
        )
        # The weights go into the HF folder as safetensors; DeepSpeed's checkpoint would hold a second,
        # pickled copy of them. Its optimizer and scheduler state is what it keeps for us.
        self.engine.module_state_dict = lambda *args, **kwargs: {}
        if self.resume_from:
            loaded, _ = self.engine.load_checkpoint(
                str(Path(self.resume_from) / TRAINING_STATE), tag=DEEPSPEED_TAG,
                load_module_strict=False, custom_load_fn=lambda src, dst: None,  # weights came from the HF folder
            )
            if loaded is None:
                raise CheckpointError(f"{self.resume_from}: no DeepSpeed training state for rank {self.rank}")
        self.pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        self.reference = None
        if self.spec.uses_initial_reference and not self.spec.model.lora:
            # A frozen copy of the starting weights, only ever read. (With LoRA the reference is free: the
            # same model with its adapters switched off.) Under ZeRO-3 it loads sharded like the policy (the
            # marker is alive), and a DeepSpeed engine without an optimizer gathers a layer at a time for its
            # forward: no rank holds a whole second model.
            reference = AutoModelForCausalLM.from_pretrained(self.model_path, **load_options(self.spec))
            if self.spec.model.lm_head_dtype == "float32":
                use_float32_head(reference)
            reference.eval().requires_grad_(False)
            if self.zero3:
                self.reference, _, _, _ = deepspeed.initialize(model=reference, config=inference_config(config))
            else:
                self.reference = reference.to(self.device)
        # Loading has a one-off peak of its own (a full state dict on every rank, DeepSpeed flattening
        # the parameters): reported apart, and the training peak counts from here.
        self.setup_peak_memory_mb = self.peak_memory_mb()
        if self.on_gpu:
            torch.cuda.reset_peak_memory_stats()
        else:
            reset_peak_rss()

    def reference_logps(self, items: list[Pair] | list[Sample], forwards: int = 0) -> list[tuple[float, float]] | list[float]:
        """Summed response log-probs under the frozen initial model: (chosen, rejected) per pair, one per sample.

        Under ZeRO-3 a forward is collective (each layer is gathered from every rank), so every rank runs
        `forwards` of them: the busiest rank's count, made up with a two-token stand-in where this rank
        has fewer items (or none).
        """
        results = []
        lora = self.reference is None
        model = self.engine.module.eval() if lora else self.reference
        chunks = micro_batches(items, self.spec.train.micro_batch_size, 1)
        with torch.no_grad(), model.disable_adapter() if lora else contextlib.nullcontext():
            for chunk in chunks:
                if isinstance(chunk[0], Pair):
                    logps, _ = pair_logps(model, chunk, self.pad_id, self.device)
                    results += list(zip(logps[: len(chunk)].tolist(), logps[len(chunk) :].tolist()))
                else:
                    logps, _ = sequence_logps(response_stats(model, collate_samples(chunk, self.pad_id).to(self.device)))
                    results += logps.tolist()
            for _ in range(forwards - len(chunks)):
                model(input_ids=torch.full((1, 2), self.pad_id, device=self.device))
        if self.zero3:  # a forward with no backward after it leaves the gathered layers whole
            (self.engine if lora else self.reference).empty_partition_cache()
        return results

    # Each loss returns (loss, metrics, weight, (real tokens, token positions computed), per-item records).
    def _sample_loss(self, samples: list[Sample]) -> tuple[torch.Tensor, dict, float, tuple[int, int], list]:
        batch = collate_samples(samples, self.pad_id).to(self.device)
        stats = response_stats(self.engine, batch)
        loss, metrics = sample_objective(self.spec, stats, self.engine.global_steps / max(1, self.total_steps), samples)
        weight = float(metrics.pop("weight", metrics["num_tokens"]))  # token-mean losses weigh by tokens
        return loss, metrics, weight, (batch.real_tokens, batch.padded_tokens), []

    def _pair_loss(self, pairs: list[Pair]) -> tuple[torch.Tensor, dict, float, tuple[int, int], list]:
        logps, lengths = pair_logps(self.engine, pairs, self.pad_id, self.device)
        n = len(pairs)
        reference = None
        if pairs[0].reference_logp_chosen is not None:
            reference = torch.tensor(
                [[p.reference_logp_chosen for p in pairs], [p.reference_logp_rejected for p in pairs]],
                dtype=torch.float32, device=self.device,
            )
        loss, metrics = pair_objective(self.spec, PairLogps(
            logps[:n], logps[n:], None if reference is None else reference[0],
            None if reference is None else reference[1], lengths[:n], lengths[n:],
        ))
        records = [
            {"policy_logp_chosen": chosen, "policy_logp_rejected": rejected, "loss": pair_loss}
            for chosen, rejected, pair_loss in zip(
                logps[:n].tolist(), logps[n:].tolist(), metrics["per_pair_loss"].tolist()
            )
        ]
        longest = max(len(p.prompt_token_ids) + max(len(p.chosen_token_ids), len(p.rejected_token_ids)) for p in pairs)
        return loss, metrics, float(n), (sum(p.num_tokens for p in pairs), 2 * n * longest), records

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

    def train(self, items: list[Sample] | list[Pair], iteration: int) -> dict:
        """Train on this rank's shard of samples or pairs; returns weighted sums the group turns into means.

        For pairs, also the per-pair records of the first epoch (policy log-probs and loss, taken in
        the forward pass that trains on the pair).
        """
        self.engine.train()
        # Dropout and any sampling in a loss draw from here. Seeding from (seed, iteration, rank) makes a
        # resumed iteration draw exactly what the uninterrupted one drew, with no RNG state to carry.
        torch.manual_seed((self.spec.seed * 1_000_003 + iteration) * 1_009 + self.rank)
        compute_loss = self._pair_loss if self.spec.trains_on_pairs else self._sample_loss
        chunks = micro_batches(items, self.spec.train.micro_batch_size, self.spec.train.gradient_accumulation_steps)
        totals: dict[str, float] = {"loss": 0.0, "weight": 0.0}
        records: list[dict] = []
        grad_norms, tokens, computed, started = [], 0, 0, time.perf_counter()
        counter = PhaseCounter("learner", len(items) * self.spec.train.epochs_per_iteration)
        for epoch in range(self.spec.train.epochs_per_iteration):
            for chunk in chunks:
                loss, metrics, weight, (batch_tokens, batch_positions), chunk_records = compute_loss(chunk)
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
                totals["loss"] += float(loss.detach()) * weight
                totals["weight"] += weight
                for key, value in metrics.items():
                    if key != "num_tokens" and value.dim() == 0:
                        totals[key] = totals.get(key, 0.0) + float(value) * weight
                if epoch == 0:
                    records += chunk_records
                tokens += batch_tokens
                computed += batch_positions
                counter.add(len(chunk), batch_tokens)
        counter.finish()
        totals.update(
            tokens=tokens,
            computed_positions=computed,
            seconds=time.perf_counter() - started,
            grad_norm=sum(grad_norms) / max(1, len(grad_norms)),
            lr=self.engine.get_lr()[0],
            optimizer_steps=self.engine.global_steps,
            peak_memory_mb=self.peak_memory_mb(),
            setup_peak_memory_mb=self.setup_peak_memory_mb,
            records=records,
        )
        return totals

    def peak_memory_mb(self) -> float:
        """The most memory this rank has held since setup (or during it, until then): on a GPU what torch
        allocated there, on CPU the peak RSS."""
        return torch.cuda.max_memory_allocated() / 2**20 if self.on_gpu else peak_rss_mb()

    def export_weights(self) -> bytearray | None:
        """The full (LoRA-merged) weights as one payload on rank 0. Under ZeRO-3 every rank must call it."""
        return full_weights(self.engine.module, self.zero3, keep=self.rank == 0)

    def join_weight_group(self, address: str, port: int, world_size: int) -> None:
        """Rank 0 only: be rank 0 of the weight broadcast group (actors/weights/broadcast.py)."""
        self.weight_group = open_group(address, port, 0, world_size, self.device)

    def broadcast_weights(self) -> int | None:
        """Rank 0 sends the full weights to the weight group; returns the bytes. Under ZeRO-3 every rank
        must call it (the gather)."""
        payload = self.export_weights()
        return send_payload(self.weight_group, payload, self.device) if self.rank == 0 else None

    def save_checkpoint(self, directory: str) -> None:
        """Every rank writes its optimizer shard under training_state/; rank 0 also writes the model.

        The model is an HF folder (config, model.safetensors, tokenizer), or with LoRA a peft adapter
        folder, plus merged/ as an HF folder when model.lora.save_merged asks for it. Collective: all
        ranks must call it. `directory` is the checkpoint store's staging folder, which the driver
        seals (fsync, rename) once every rank has returned.
        """
        lora = self.spec.model.lora
        weights = None
        if not lora or lora.save_merged:
            weights = full_weights(self.engine.module, self.zero3, keep=self.rank == 0)
        if lora:
            import deepspeed

            # Under ZeRO-3 the adapters are sharded too: every rank joins the gather, rank 0 writes them.
            adapters = [p for p in self.engine.module.parameters() if p.requires_grad] if self.zero3 else []
            with deepspeed.zero.GatheredParameters(adapters) if adapters else contextlib.nullcontext():
                if self.rank == 0:
                    self.engine.module.save_pretrained(directory)  # adapter_config.json + adapter_model.safetensors
                    self._write_tokenizer(directory)
        if self.rank == 0:
            if weights is not None:
                model_folder = Path(directory) / MERGED if lora else Path(directory)
                model_folder.mkdir(exist_ok=True)
                (model_folder / "model.safetensors").write_bytes(weights)
                plain = plain_model(self.engine.module)
                plain.config.save_pretrained(model_folder)
                if plain.generation_config is not None:
                    plain.generation_config.save_pretrained(model_folder)
                self._write_tokenizer(model_folder)
        self.engine.save_checkpoint(str(Path(directory) / TRAINING_STATE), tag=DEEPSPEED_TAG, save_latest=False)

    def _write_tokenizer(self, folder) -> None:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=self.spec.model.trust_remote_code).save_pretrained(folder)

    def sequence_logprobs(self, token_ids: list[int]) -> list[float]:
        """The learner's log p of token_ids[1:]: the probe that checks weight sync."""
        logprobs = teacher_forced_logprobs(self.engine.module, token_ids, self.pad_id)
        if self.zero3:
            # A forward with no backward after it leaves every gathered parameter whole on every rank.
            self.engine.empty_partition_cache()
        return logprobs
