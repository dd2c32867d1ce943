"""The reward part of the job spec: `reward.sources`, a list of tagged sources, each with a weight.

Kept apart from jobs/core/spec.py only for size; JobSpec holds a `RewardSpec`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, model_validator

from jobs.core.spec_base import Section


class RewardSource(Section):
    name: Optional[str] = Field(None, description="Key in Sample.rewards; defaults to the kind.")
    weight: float = Field(1.0, description="Weight of this source in the total reward.")

    @property
    def key(self) -> str:
        return self.name or self.kind


class MathAnswerReward(RewardSource):
    """1 if the response's final answer equals data.answer_column, else 0 (actors/rewards/math_verifier.py)."""

    kind: Literal["math_answer"]


class ReasoningGymReward(RewardSource):
    """The reasoning-gym task's own scorer; the data must come from reasoning-gym:<task>."""

    kind: Literal["reasoning_gym"]


class RewardModelReward(RewardSource):
    """A transformers sequence-classification model: the first logit is the reward."""

    kind: Literal["reward_model"]
    path: str = Field(..., min_length=1, description="Local HF folder or hub id.")
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(1024, gt=8, description="Tokens per scored conversation; longer ones are truncated.")


class FunctionReward(RewardSource):
    """Your own reward: `module:function`, called as function(prompt=..., response=..., row=...) -> float."""

    kind: Literal["function"]
    function: str = Field(..., description="module.path:function_name, importable by the driver and the reward actor")

    @model_validator(mode="after")
    def _module_colon_function(self) -> "FunctionReward":
        import re

        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", self.function):
            raise ValueError(f"function must look like 'package.module:function_name' (got {self.function!r})")
        return self


class LengthPenalty(RewardSource):
    """-(response tokens beyond free_tokens) / rollout.max_new_tokens: 0 for a short answer, -1 at the limit."""

    kind: Literal["length_penalty"]
    free_tokens: int = Field(0, ge=0)


class FormatReward(RewardSource):
    """1 if the response matches the regular expression, else 0."""

    kind: Literal["format"]
    pattern: str = Field(r"\\boxed\{.+\}|[Tt]he (final )?answer is", min_length=1)

    @model_validator(mode="after")
    def _compiles(self) -> "FormatReward":
        import re

        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"pattern {self.pattern!r} is not a valid regular expression ({exc})") from None
        return self


RewardSourceSpec = Annotated[
    Union[MathAnswerReward, ReasoningGymReward, RewardModelReward, FunctionReward, LengthPenalty, FormatReward],
    Field(discriminator="kind"),
]


class RewardSpec(Section):
    """The reward actor: one Ray actor holding every configured source."""

    sources: list[RewardSourceSpec] = Field(default_factory=list)
    cpus: float = Field(0.25, ge=0)
    gpus: float = Field(0, ge=0)

    @model_validator(mode="after")
    def _unique_names(self) -> "RewardSpec":
        keys = [s.key for s in self.sources]
        for key in keys:
            if keys.count(key) > 1 or key == "total":
                raise ValueError(f"two reward sources are named {key!r} (or one is named 'total'); give each a distinct name")
        return self


# Pydantic puts a discriminated union's tag into the error location
# (reward.sources[0].function.weight); users wrote no such key, so it is dropped.
REWARD_SOURCES_BY_KIND = {
    model.model_fields["kind"].annotation.__args__[0]: model
    for model in (MathAnswerReward, ReasoningGymReward, RewardModelReward, FunctionReward, LengthPenalty, FormatReward)
}
