"""The records every part shares: a prompt, a generated (or written) sample, a preference pair.

They travel driver -> actors -> driver and into the run's samples/ and pairs/ files.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prompt:
    index: int  # row number in the dataset, for tracing a sample back to its source
    text: str  # after the chat template; a truncated prompt's kept tokens, decoded
    token_ids: tuple[int, ...]  # what the engines see: the source of truth when text was truncated
    row: dict  # the original row (answers, metadata) for verifiers and reward functions
    messages: tuple[dict, ...] = ()  # before the chat template, never truncated: a reward model applies its own

    @property
    def question(self) -> str:
        """The question as the user asked it: the last user message of the plain prompt."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")


@dataclass
class Sample:
    """One generated response. Travels rollout -> driver -> learner and into samples/iter-N.jsonl."""

    iteration: int
    prompt_index: int
    prompt: str
    prompt_token_ids: list[int]
    response: str
    response_token_ids: list[int]
    finish_reason: str
    source: str = "on_policy"  # "hinted"/"rewrite" (Hinted Decoding); "demonstration"/"reference": the dataset's own
    engine_logprobs: list[float] = field(default_factory=list)  # vLLM's log p of each sampled token
    token_cll: list[float] = field(default_factory=list)  # phi_t per response token (docs/algorithms.md section 1)
    cll: dict[str, float] = field(default_factory=dict)  # avg_cll, frac_gt_1, frac_gt_3, frac_gt_5
    # Summed log p of the response under the weights that scored its CLL: the
    # sampler's, so it is the reference log-prob when preference.reference is "sampler".
    sequence_logp: float | None = None
    rewards: dict[str, float] = field(default_factory=dict)  # one entry per reward source, plus "total"
    reference_solution: str | None = None  # answer-first pipeline: the solution the hint stream saw
    dropped: str | None = None  # answer-first pipeline: why the sample is not trained on (None: kept)
    # Updates the weights that generated it are behind the iteration that trains on it (rollout.max_policy_lag).
    policy_lag: int = 0
    # f-DPG (jobs/algorithms/fdpg_target.py): log a(x) under the initial model, log p(x) of the normalised
    # target, and the baseline its pseudo-reward is centred on.
    reference_logp: float | None = None
    target_logp: float | None = None
    pseudo_reward_baseline: float | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.response_token_ids)


@dataclass
class Pair:
    """A preference pair: two responses to one prompt. Travels driver -> learner and into pairs/iter-N.jsonl."""

    iteration: int
    prompt_index: int
    prompt: str
    prompt_token_ids: list[int]
    chosen: str
    chosen_token_ids: list[int]
    rejected: str
    rejected_token_ids: list[int]
    chosen_source: str = "on_policy"
    rejected_source: str = "on_policy"
    chosen_reward: float | None = None
    rejected_reward: float | None = None
    # Summed over response tokens, computed once per pair before training.
    reference_logp_chosen: float | None = None
    reference_logp_rejected: float | None = None
    # Filled by the learner when it first trains on the pair (before that pair's own update).
    policy_logp_chosen: float | None = None
    policy_logp_rejected: float | None = None
    loss: float | None = None

    @property
    def num_tokens(self) -> int:
        return 2 * len(self.prompt_token_ids) + len(self.chosen_token_ids) + len(self.rejected_token_ids)
