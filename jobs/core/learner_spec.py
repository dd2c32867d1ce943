"""The spec sections about how the learner holds the model: data-parallel ranks, ZeRO
stage, offload and LoRA adapters. They decide memory, not what is computed: the same
seed and data give the same losses under every stage (tests/test_learner_memory_modes.py).
Part of the one schema in jobs/core/spec.py.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field, model_validator

from jobs.core.spec_base import Section


class LearnerSpec(Section):
    ranks: int = Field(2, ge=1)
    cpus_per_rank: float = Field(0.25, ge=0)
    gpus_per_rank: float = Field(0, ge=0)
    threads_per_rank: Optional[int] = Field(
        None, ge=1, description="CPU threads of each rank; null: chosen like rollout.threads_per_worker.",
    )
    zero_stage: Literal[0, 1, 2, 3] = Field(
        2,
        description="DeepSpeed ZeRO: 1 shards optimizer state, 2 also gradients, 3 also the parameters "
        "(weights are gathered layer by layer for the sync and for checkpoints).",
    )
    zero_options: dict[str, Any] = Field(
        default_factory=dict,
        description="More DeepSpeed zero_optimization settings, merged over hintflow's, e.g. "
        "stage3_max_live_parameters or stage3_param_persistence_threshold (DeepSpeed's own defaults otherwise).",
    )
    offload: Literal["none", "optimizer", "optimizer_and_params"] = Field(
        "none",
        description="DeepSpeed CPU offload: optimizer (ZeRO-Offload, stages 1-3) or optimizer_and_params "
        "(ZeRO-Infinity, stage 3 only).",
    )

    @model_validator(mode="after")
    def _offload_needs_a_stage_that_offloads(self) -> "LearnerSpec":
        taken = {"stage", "offload_optimizer", "offload_param"} & set(self.zero_options)
        if taken:
            raise ValueError(f"learner.zero_options: {sorted(taken)} are set by learner.zero_stage and learner.offload")
        if self.offload == "optimizer" and self.zero_stage == 0:
            raise ValueError("learner.offload 'optimizer' needs learner.zero_stage 1, 2 or 3 (got 0): "
                             "ZeRO-0 keeps no optimizer partition to offload")
        if self.offload == "optimizer_and_params" and self.zero_stage != 3:
            raise ValueError(f"learner.offload 'optimizer_and_params' needs learner.zero_stage 3 "
                             f"(got {self.zero_stage}): only ZeRO-3 partitions the parameters it would offload")
        return self


class LoraSpec(Section):
    """LoRA adapters (Hu et al. 2021, arXiv:2106.09685) through peft: only the adapters train."""

    r: int = Field(8, ge=1, description="Adapter rank.")
    alpha: float = Field(16.0, gt=0, description="Scale alpha / r on the adapter's output.")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: Union[Literal["all-linear"], list[str]] = Field(
        "all-linear",
        description="Module names (the last part, e.g. q_proj) that get adapters, or all-linear "
        "(every linear layer but the output head).",
    )
    save_merged: bool = Field(
        False,
        description="Checkpoints always hold the adapter (a peft folder); true also writes merged/, "
        "a full HF model that vLLM loads.",
    )
