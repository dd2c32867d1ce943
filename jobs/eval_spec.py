"""The `eval` section: what the eval actor measures, how often, and on which data.

ALGORITHMS.md section 7. Held-out problems show what training gained on the
target task; out-of-domain text, compared between the current policy and the
frozen base model, shows what it cost everywhere else (forgetting).
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from jobs.spec_base import Section


class EvalSpec(Section):
    every: int = Field(
        0, ge=0,
        description="Evaluate every N iterations (and always before the first and after the last); 0 turns the "
        "eval actor off.",
    )
    data_path: Optional[str] = Field(
        None,
        description="Held-out problems, in any form data.path takes. Default: data.path with data.seed + 1, i.e. "
        "fresh problems for generated sources (builtin:arithmetic, reasoning-gym:<task>); a file dataset needs "
        "its own held-out file here.",
    )
    problems: int = Field(32, ge=1, description="Held-out problems per evaluation (greedy pass@1, sampled pass@k).")
    k: int = Field(4, ge=1, description="Samples per problem for pass@k.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the pass@k samples.")
    verifier: Optional[str] = Field(
        None,
        description="The reward source (by name, from reward.sources) that decides whether an answer is right; "
        "default: rollout.hinted.verifier if it is configured, else the first reward source.",
    )
    pass_threshold: float = Field(1.0, description="An answer is right when its verifier reward is at least this.")
    ood_text: str = Field(
        "builtin:stdlib-docs",
        description="Out-of-domain text for the forgetting metrics: builtin:stdlib-docs (prose from Python's own "
        "standard-library docstrings), a .txt file (blank-line separated passages) or a .jsonl file with a text column.",
    )
    ood_passages: int = Field(32, ge=1)
    ood_max_tokens: int = Field(128, ge=8, description="Each passage is cut to this many tokens.")
    cpus: float = Field(0.25, ge=0, description="The eval actor's CPUs (it holds a vLLM engine and two HF models).")
    gpus: float = Field(0, ge=0)
    max_wait_seconds: float = Field(
        0, ge=0,
        description="The eval runs beside training on the weights of its iteration. When the next one is due and "
        "the last is still running, wait at most this long, then skip the new one (counted as eval_skipped). The last iteration's eval always waits.",
    )
