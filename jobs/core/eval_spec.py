"""The `eval` section: what the eval actor measures, how often, and on which data.

docs/algorithms.md section 10. Held-out problems show what training gained on the
target task; out-of-domain text, compared between the current policy and the
frozen base model, shows what it cost everywhere else (forgetting).
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from jobs.core.spec_base import Section


class TransferSpec(Section):
    """A second task that is never trained on: does what training taught carry over?"""

    path: str = Field(description="Its problems, in any form data.path takes (e.g. reasoning-gym:chain_sum).")
    task_options: dict = Field(default_factory=dict, description="reasoning-gym task settings, as data.task_options.")
    prompt_column: str = Field("question", min_length=1)
    answer_column: str = Field("answer", min_length=1, description="Gold answers, judged by the eval verifier.")
    problems: int = Field(200, ge=1, description="Problems per evaluation (greedy pass@1).")


class EvalSpec(Section):
    every: int = Field(
        0, ge=0,
        description="Evaluate every N iterations (and always before the first and after the last); 0 turns the "
        "eval actor off.",
    )
    data_path: Optional[str] = Field(
        None,
        description="Held-out problems, in any form data.path takes. Default: for generated sources "
        "(builtin:arithmetic, builtin:word-problems, reasoning-gym:<task>) fresh problems from data.seed + 1, less "
        "any whose prompt a training row has; for a fixed dataset (file, folder, hub, champ:v0) the "
        "eval.holdout_fraction of its rows that training never sees.",
    )
    holdout_fraction: float = Field(
        0.1, gt=0, lt=1,
        description="With eval.every > 0, no eval.data_path and a fixed dataset: the share of its rows kept back "
        "for the eval and left out of training. Which rows: the ceil(fraction x rows) row indices whose SHA-256 "
        "hash is smallest, so the same file always splits the same way. A split that leaves no row on either "
        "side is refused.",
    )
    at_start: bool = Field(
        True, description="Also evaluate the weights the run starts from (iteration -1): the baseline of every gain. "
        "false when that baseline is measured once elsewhere (bench/seed_study.py: the base model's run).",
    )
    problems: int = Field(32, ge=1, description="Held-out problems per evaluation (greedy pass@1, sampled pass@k).")
    k: int = Field(4, ge=0, description="Samples per problem for pass@k; 0: greedy pass@1 only.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the pass@k samples.")
    verifier: Optional[str] = Field(
        None,
        description="The reward source (by name, from reward.sources) that decides whether an answer is right; "
        "default: rollout.hinted.verifier if it is configured, else the first reward source.",
    )
    pass_threshold: float = Field(1.0, description="An answer is right when its verifier reward is at least this.")
    transfer: Optional[TransferSpec] = Field(
        None, description="A task never trained on, scored greedily with the same verifier (generated sources: "
        "data.seed + 1, like the held-out problems).",
    )
    ood_text: str = Field(
        "builtin:stdlib-docs",
        description="Out-of-domain text for the forgetting metrics: builtin:stdlib-docs (prose from Python's own "
        "standard-library docstrings), a .txt file (blank-line separated passages) or a .jsonl file with a text column.",
    )
    ood_passages: int = Field(32, ge=1)
    ood_max_tokens: int = Field(128, ge=8, description="Each passage is cut to this many tokens.")
    cpus: float = Field(0.25, ge=0, description="The eval actor's CPUs (it holds a vLLM engine and two HF models).")
    gpus: float = Field(0, ge=0)
    threads: Optional[int] = Field(
        None, ge=1, description="CPU threads of the eval actor's engine and models; null: its CPU share, at least 1. "
        "More than its share pays when the evaluations run after training rather than beside it.",
    )
    max_wait_seconds: float = Field(
        0, ge=0,
        description="The eval runs beside training on the weights of its iteration. When the next one is due and "
        "the last is still running, wait at most this long, then skip the new one (counted as eval_skipped). The last iteration's eval always waits.",
    )
