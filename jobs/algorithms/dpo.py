"""dpo and its variants (train.dpo.loss: sigmoid, robust, ipo, simpo; docs/algorithms.md section 4)
on pairs ranked by reward among a prompt's samples, or on a dataset's chosen/rejected."""

from __future__ import annotations

from jobs.algorithms.base import Algorithm, PairLogps, check_reward_pairs, reference_is_initial, reward_pairs
from losses.dpo import dpo_loss
from losses.ipo import ipo_loss
from losses.simpo import simpo_loss


def loss(spec, logps: PairLogps):
    dpo = spec.train.dpo
    if dpo.loss in ("sigmoid", "robust"):
        return dpo_loss(
            logps.policy_chosen, logps.policy_rejected, logps.reference_chosen, logps.reference_rejected,
            beta=dpo.beta, label_smoothing=dpo.label_smoothing, robust=dpo.loss == "robust",
        )
    if dpo.loss == "ipo":
        return ipo_loss(
            logps.policy_chosen, logps.policy_rejected, logps.reference_chosen, logps.reference_rejected,
            logps.chosen_tokens, logps.rejected_tokens, beta=dpo.beta,
        )
    return simpo_loss(
        logps.policy_chosen, logps.policy_rejected, logps.chosen_tokens, logps.rejected_tokens,
        beta=dpo.beta, gamma=dpo.simpo_gamma,
    )


ALGORITHM = Algorithm(
    name="dpo", trains_on="pairs", loss=loss, check=check_reward_pairs, make_items=reward_pairs,
    # SimPO needs no reference model.
    initial_reference=lambda spec: reference_is_initial(spec) and spec.train.dpo.loss != "simpo",
)
