"""What an algorithm declares to the one loop, and the checks several algorithms share.

Shapes: a sample loss gets the [B, T] TokenStats of a micro-batch of samples; a pair loss gets
[B] summed log-probs of the chosen and rejected responses (PairLogps). Both return the loss and a
dict of metrics (0-dim tensors are averaged into the iteration's metrics; [B] tensors such as
`per_pair_loss` are per-pair records).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional

import torch

from jobs.algorithms.pairs import dataset_pairs, demonstration_pairs, online_pairs
from jobs.core.records import Pair, Prompt, Sample

if TYPE_CHECKING:
    from jobs.core.spec import JobSpec


@dataclass
class PairLogps:
    """[B] summed response log-probs of a micro-batch of pairs (reference: None when none is needed)."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    reference_chosen: Optional[torch.Tensor]
    reference_rejected: Optional[torch.Tensor]
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor


@dataclass
class IterationData:
    """What an iteration has when its training items are made (the stage between rewards and training)."""

    batch: list[Prompt]
    samples: list[Sample]  # after rewards and the answer-first stage
    demonstrations: list[Sample]  # the prompts' dataset answers, CLL-scored (algorithms with demonstrations)
    tokenizer: Any
    iteration: int


def train_on_the_samples(spec: "JobSpec", data: IterationData) -> tuple[list, dict]:
    return data.samples, {}


def no_checks(spec: "JobSpec") -> None:
    pass


def never(spec: "JobSpec") -> bool:
    return False


@dataclass(frozen=True)
class Algorithm:
    name: str
    trains_on: Literal["samples", "pairs"]
    # samples: (spec, stats, samples, progress, token_weights) -> (loss, metrics); progress is the
    # fraction of training done, token_weights the truncated-IS weights ([B, T]) or None.
    # pairs: (spec, PairLogps) -> (loss, metrics).
    loss: Callable[..., tuple[torch.Tensor, dict]]
    # Cross-field rules of the spec; raises ValueError with one line naming the fields. May fill
    # defaults that depend on other sections (f-DPG's constraint).
    check: Callable[["JobSpec"], None] = no_checks
    # Log-probs of the frozen initial model, filled by the learners before training (pairs: both responses).
    initial_reference: Callable[["JobSpec"], bool] = never
    default_reference: Literal["initial", "sampler"] = "initial"  # preference.reference when unset
    # A per-token loss on samples: rollout.mode's kept samples and truncated IS weights apply to it.
    token_loss: bool = False
    # The prompts' demonstrations are CLL-scored beside the policy's samples (IRFT, f-SFT).
    demonstrations: bool = False
    # The stage that makes what the learners train on from the iteration's data: (spec, IterationData)
    # -> (samples or pairs, metrics).
    make_items: Callable[["JobSpec", IterationData], tuple[list, dict]] = train_on_the_samples
    # A stage with running state, after the reference log-probs: (spec, checkpointed state or None)
    # -> an object with score(items) -> metrics and state() -> dict (saved in every checkpoint).
    stateful_stage: Optional[Callable[["JobSpec", Optional[dict]], Any]] = None


# --------------------------------------------------------------------------- shared pieces


def reference_is_initial(spec: "JobSpec") -> bool:
    return spec.preference.reference == "initial"


def check_reward_pairs(spec: "JobSpec") -> None:
    """Pairs ranked by reward among a prompt's own samples, or a dataset's chosen/rejected (dpo, rpo)."""
    preference = spec.preference
    if preference.source == "online":
        if spec.rollout.samples_per_prompt < 2:
            raise ValueError(
                f"online {spec.algorithm} pairs samples of the same prompt; rollout.samples_per_prompt must be "
                f"at least 2 (got {spec.rollout.samples_per_prompt})"
            )
        if not spec.reward.sources:
            raise ValueError(f"online {spec.algorithm} ranks samples by reward; reward.sources is empty")
    elif preference.reference == "sampler":
        raise ValueError("preference.source 'dataset' has no sampler policy; preference.reference must be 'initial'")


def check_samples_drawn_from_the_policy(spec: "JobSpec") -> None:
    # fdpg weighs each sample by pi(x) / q(x) with q the policy; fsft averages its penalty over the policy.
    if spec.rollout.temperature != 1.0 or spec.rollout.top_p != 1.0:
        raise ValueError(
            f"algorithm {spec.algorithm} estimates an expectation under the policy from its samples: "
            f"rollout.temperature and rollout.top_p must be 1 (got {spec.rollout.temperature} and {spec.rollout.top_p})"
        )


def reward_pairs(spec: "JobSpec", data: IterationData) -> tuple[list[Pair], dict]:
    if spec.preference.source == "online":
        return online_pairs(data.samples, spec.preference)
    return dataset_pairs(data.batch, spec.data, data.tokenizer, data.iteration)


def each_generation_beside_its_demonstration(spec: "JobSpec", data: IterationData) -> tuple[list[Pair], dict]:
    return demonstration_pairs(data.demonstrations, data.samples)
