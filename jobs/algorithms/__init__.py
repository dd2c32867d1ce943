"""The algorithm registry: every `algorithm:` a spec may name, each one module of this package.

An algorithm is a plug-in of the one loop (jobs/onpolicy.py), never a loop of its own. Its module
defines `ALGORITHM`, an `Algorithm` (jobs/algorithms/base.py) that declares what it trains on, which
reference it needs, its spec checks, the stage that turns an iteration's samples into what the
learners train on, its loss call (the formula itself lives in losses/) and any state it checkpoints.
The spec, the loop and the learner look it up here and never test which algorithm is running.

Adding one: a module here, one line below, its loss in losses/, a config and a test.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.algorithms.base import Algorithm

# name -> what it does, in one line (the spec reference lists these). The modules are imported on
# first use: the spec schema needs only the names, and an algorithm module may use the spec.
REGISTERED: dict[str, str] = {
    "sft": "token-mean NLL on the samples (on-policy, or rollout.mode's kept or reference samples)",
    "idft": "SFT with each token weighted by sg(p^gamma), gamma from its CLL (train.idft)",
    "dft": "SFT with each token weighted by sg(p): IDFT's gamma fixed at 1",
    "dpo": "preference pairs ranked by reward, or a dataset's chosen/rejected (train.dpo.loss picks the variant)",
    "rpo": "DPO plus an SFT term on the chosen response (train.rpo)",
    "irft": "pairs of (demonstration, own generation), stage by stage, against the previous stage's policy",
    "fdpg": "policy gradient towards a target distribution (train.fdpg)",
    "fsft": "SFT on (demonstration, own generation) pairs with a pull towards the initial model (train.fsft)",
}


def algorithm_named(name: str) -> "Algorithm":
    return import_module(f"jobs.algorithms.{name}").ALGORITHM


def names_where(declares) -> list[str]:
    """The registered names whose Algorithm satisfies `declares`, in registry order (for messages)."""
    return [name for name in REGISTERED if declares(algorithm_named(name))]
