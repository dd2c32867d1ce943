"""The spec section about the optimisation itself: optimizer, schedule, batch shape and the
settings of each loss (IDFT, the DPO family, RPO, f-DPG, f-SFT). Part of the one schema in jobs/core/spec.py.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from jobs.core.spec_base import Section


class IDFTSpec(Section):
    """docs/algorithms.md section 2; defaults are the authors' released runs."""

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
    """docs/algorithms.md section 4. The DPO term of rpo and irft uses beta and the sigmoid loss."""

    loss: Literal["sigmoid", "robust", "ipo", "simpo"] = Field(
        "sigmoid", description="sigmoid (DPO; cDPO with label_smoothing > 0), robust, ipo, or simpo (reference-free)."
    )
    beta: float = Field(0.1, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="cDPO / robust DPO noise rate epsilon.")
    simpo_gamma: float = Field(0.5, ge=0, description="SimPO target reward margin.")


class RPOSpec(Section):
    """docs/algorithms.md section 5: L_DPO + eta * L_SFT(chosen)."""

    eta: float = Field(0.005, ge=0)
    form: Literal["cumulative", "average"] = Field(
        "cumulative",
        description="cumulative: -beta * summed chosen log-prob (main paper); average: per-token mean NLL (appendix).",
    )


class FDPGSpec(Section):
    """f-DPG (losses/fdpg.py, docs/algorithms.md section 7): minimise D_f(pi || p) to the target p = P / Z."""

    divergence: Literal["kl", "reverse_kl", "js", "tv", "chi2", "reverse_chi2"] = Field(
        "js", description="The f-divergence to the target; JS is the paper's recommendation."
    )
    target: Literal["constraint", "reward"] = Field(
        "constraint",
        description="constraint: P(x) = a(x) b(x), b = 1 when reward source `constraint` scores at least "
        "`threshold`, else 0; reward: P(x) = a(x) exp(r(x) / beta) with r the total reward. a is the initial model.",
    )
    constraint: Optional[str] = Field(None, description="The reward source whose score decides b(x); default: the first.")
    threshold: float = Field(0.5, description="b(x) = 1 when the constraint's score is at least this.")
    beta: float = Field(1.0, gt=0, description="Temperature of the reward tilt (target: reward).")
    baseline_window: int = Field(512, ge=1, description="Samples in the moving average the pseudo-rewards are centred on.")


class FSFTSpec(Section):
    """f-divergence SFT (losses/fsft.py, docs/design.md): SFT on demonstrations plus a pull towards the initial model."""

    divergence: Literal["tv", "pearson", "hellinger"] = Field(
        "pearson", description="tv is plain SFT; pearson (chi-squared) and hellinger keep a penalty on the policy's "
        "own samples that grows as their implicit reward beta log(pi / pi_ref) leaves 0.",
    )
    beta: float = Field(0.1, gt=0, description="Scale of the implicit reward; the penalty is about beta/4 x the squared "
                        "sequence log-ratio for pearson.")


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
    truncated_is_cap: Optional[float] = Field(
        None, ge=1, description="sft, idft, dft: weigh each sampled token's loss by min(pi / pi_sampler, cap), the sampler "
        "being the engine that generated it (bf16 mismatch, rollout.max_policy_lag); null: no weighting.",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, same losses and gradients."
    )
    idft: IDFTSpec = Field(default_factory=IDFTSpec)
    dpo: DPOSpec = Field(default_factory=DPOSpec)
    rpo: RPOSpec = Field(default_factory=RPOSpec)
    fdpg: FDPGSpec = Field(default_factory=FDPGSpec)
    fsft: FSFTSpec = Field(default_factory=FSFTSpec)
