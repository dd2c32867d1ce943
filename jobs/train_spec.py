"""The spec section about the optimisation itself: optimizer, schedule, batch shape and the
settings of each loss (IDFT, the DPO family, RPO). Part of the one schema in jobs/spec.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from jobs.spec_base import Section


class IDFTSpec(Section):
    """ALGORITHMS.md section 2; defaults are the authors' released runs."""

    beta: float = Field(1.0, gt=0)
    gamma_min: float = Field(0.1, ge=0)
    gamma_max: float = Field(2.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    transition_ratio: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _gamma_range(self) -> "IDFTSpec":
        if self.gamma_min > self.gamma_max:
            raise ValueError(f"gamma_min ({self.gamma_min}) must not exceed gamma_max ({self.gamma_max})")
        return self


class DPOSpec(Section):
    """ALGORITHMS.md section 4. The DPO term of rpo and irft uses beta and the sigmoid loss."""

    loss: Literal["sigmoid", "robust", "ipo", "simpo"] = Field(
        "sigmoid", description="sigmoid (DPO; cDPO with label_smoothing > 0), robust, ipo, or simpo (reference-free)."
    )
    beta: float = Field(0.1, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="cDPO / robust DPO noise rate epsilon.")
    simpo_gamma: float = Field(0.5, ge=0, description="SimPO target reward margin.")


class RPOSpec(Section):
    """ALGORITHMS.md section 5: L_DPO + eta * L_SFT(chosen)."""

    eta: float = Field(0.005, ge=0)
    form: Literal["cumulative", "average"] = Field(
        "cumulative",
        description="cumulative: -beta * summed chosen log-prob (main paper); average: per-token mean NLL (appendix).",
    )


class TrainSpec(Section):
    lr: float = Field(6e-5, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.01, ge=0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    grad_clip: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(4, ge=1, description="Sequences per rank per forward pass.")
    gradient_accumulation_steps: int = Field(1, ge=1)
    epochs_per_iteration: int = Field(1, ge=1, description="Passes over each iteration's samples.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, same losses and gradients."
    )
    idft: IDFTSpec = Field(default_factory=IDFTSpec)
    dpo: DPOSpec = Field(default_factory=DPOSpec)
    rpo: RPOSpec = Field(default_factory=RPOSpec)
