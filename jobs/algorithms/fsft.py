"""fsft: SFT on the demonstrations with an f-divergence pull towards the initial model, estimated on
the policy's own generations of the same prompts (losses/fsft.py, docs/algorithms.md section 8)."""

from __future__ import annotations

from jobs.algorithms.base import (
    Algorithm, PairLogps, check_samples_drawn_from_the_policy, each_generation_beside_its_demonstration,
    reference_is_initial,
)
from losses.fsft import fsft_loss


def check(spec) -> None:
    if spec.preference.source != "online":
        raise ValueError("algorithm fsft needs the policy's own samples beside the demonstrations; "
                         "preference.source must be 'online'")
    if spec.preference.reference != "initial":
        raise ValueError("algorithm fsft pulls towards the initial model; preference.reference must be 'initial'")
    check_samples_drawn_from_the_policy(spec)


def loss(spec, logps: PairLogps):
    # "chosen" is the demonstration, "rejected" the policy's own generation.
    return fsft_loss(
        logps.policy_chosen, logps.policy_rejected, logps.reference_rejected, logps.chosen_tokens,
        logps.rejected_tokens, divergence=spec.train.fsft.divergence, beta=spec.train.fsft.beta,
    )


ALGORITHM = Algorithm(
    name="fsft", trains_on="pairs", loss=loss, check=check, initial_reference=reference_is_initial,
    demonstrations=True, make_items=each_generation_beside_its_demonstration,
)
