"""irft: the sigmoid DPO loss on (demonstration, own generation) pairs, against the policy that
generated them, i.e. the previous stage's (docs/algorithms.md section 6)."""

from __future__ import annotations

from jobs.algorithms.base import Algorithm, PairLogps, each_generation_beside_its_demonstration
from losses.dpo import dpo_loss


def check(spec) -> None:
    if spec.preference.source != "online":
        raise ValueError("algorithm irft regenerates its pairs every stage; preference.source must be 'online'")
    if spec.preference.reference != "sampler":
        raise ValueError("algorithm irft compares against the previous stage's policy; preference.reference must be 'sampler'")


def loss(spec, logps: PairLogps):
    dpo = spec.train.dpo
    return dpo_loss(
        logps.policy_chosen, logps.policy_rejected, logps.reference_chosen, logps.reference_rejected,
        beta=dpo.beta, label_smoothing=dpo.label_smoothing, robust=dpo.loss == "robust",
    )


ALGORITHM = Algorithm(
    name="irft", trains_on="pairs", loss=loss, check=check, default_reference="sampler",
    demonstrations=True, make_items=each_generation_beside_its_demonstration,
)
