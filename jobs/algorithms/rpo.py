"""rpo: the sigmoid DPO loss plus an SFT term on the chosen response (losses/rpo.py,
docs/algorithms.md section 5), on the same pairs as dpo."""

from __future__ import annotations

from jobs.algorithms.base import Algorithm, PairLogps, check_reward_pairs, reference_is_initial, reward_pairs
from losses.rpo import rpo_loss


def check(spec) -> None:
    check_reward_pairs(spec)
    if spec.train.dpo.loss != "sigmoid":
        raise ValueError("algorithm rpo adds its SFT term to the sigmoid DPO loss; train.dpo.loss must be 'sigmoid'")


def loss(spec, logps: PairLogps):
    return rpo_loss(
        logps.policy_chosen, logps.policy_rejected, logps.reference_chosen, logps.reference_rejected,
        logps.chosen_tokens, beta=spec.train.dpo.beta, eta=spec.train.rpo.eta, form=spec.train.rpo.form,
    )


ALGORITHM = Algorithm(
    name="rpo", trains_on="pairs", loss=loss, check=check, make_items=reward_pairs,
    initial_reference=reference_is_initial,
)
