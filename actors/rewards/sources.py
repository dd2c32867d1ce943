"""Reward sources: each turns a batch of scoring requests into one number per request.

The reward actor (actors/reward_actor.py) holds one of these per entry of
`reward.sources` and adds their weighted values into `Sample.rewards["total"]`.
`check_reward_sources` runs in the driver before any actor starts, so a reward
model that does not load, a function that does not import or a row without its
gold answer fails in seconds with one line.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from actors.rewards.math_verifier import extract_final_answer, math_answer_score
from jobs.core.data_sources import column_value
from jobs.core.records import Prompt
from jobs.core.errors import DataError, ModelError, RewardError, SpecError
from jobs.core.reward_spec import (
    FormatReward,
    FunctionReward,
    LengthPenalty,
    MathAnswerReward,
    ReasoningGymReward,
    RewardModelReward,
)
from jobs.core.spec import JobSpec, is_reasoning_gym


@dataclass
class ScoringRequest:
    """What a reward source sees of one sample: lighter than a Sample (no per-token lists)."""

    label: str  # names the sample in error messages: "iteration 0, data row 5, sample 1"
    prompt: str  # after the policy's chat template
    messages: list[dict]  # before it: a reward model applies its own template
    response: str
    response_tokens: int
    row: dict  # the dataset row: gold answers, metadata


class MathAnswerSource:
    def __init__(self, spec: MathAnswerReward, job: JobSpec):
        self.answer_column = job.data.answer_column

    def score(self, requests: list[ScoringRequest]) -> list[float]:
        return [math_answer_score(r.response, str(column_value(r.row, self.answer_column))) for r in requests]


class ReasoningGymSource:
    def __init__(self, spec: ReasoningGymReward, job: JobSpec):
        self._scorers: dict[str, Callable] = {}

    def _scorer(self, task: str) -> Callable:
        if task not in self._scorers:
            import reasoning_gym

            self._scorers[task] = reasoning_gym.get_score_answer_fn(task)
        return self._scorers[task]

    def score(self, requests: list[ScoringRequest]) -> list[float]:
        from reasoning_gym.utils import extract_answer

        values = []
        for r in requests:
            # reasoning-gym's prompts ask for <answer> tags; ours ask for "The answer is" or \boxed{}.
            answer = extract_answer(r.response) or extract_final_answer(r.response)
            values.append(float(self._scorer(r.row["metadata"]["source_dataset"])(answer, r.row)))
        return values


class RewardModelSource:
    """Batched scoring with a sequence-classification model; the first logit is the reward."""

    def __init__(self, spec: RewardModelReward, job: JobSpec, path: str, device: str):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.spec = spec
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).to(device).eval()
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        # The classification head reads the last non-padding token; it has to know which id pads.
        self.model.config.pad_token_id = pad_id
        self.pad_id = pad_id

    def conversation_ids(self, request: ScoringRequest) -> list[int]:
        """The conversation as this reward model was trained to read it: its own chat template when it has one."""
        if getattr(self.tokenizer, "chat_template", None):
            messages = list(request.messages) + [{"role": "assistant", "content": request.response}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False)
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
        else:
            ids = self.tokenizer(request.prompt + request.response).input_ids
        return ids[: self.spec.max_length]

    @torch.no_grad()
    def score(self, requests: list[ScoringRequest]) -> list[float]:
        encoded = [self.conversation_ids(r) for r in requests]
        values = [0.0] * len(requests)
        # Length-sorted batches waste less compute on padding.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), self.spec.batch_size):
            rows = order[start : start + self.spec.batch_size]
            length = max(len(encoded[i]) for i in rows)
            input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
            for line, i in enumerate(rows):
                input_ids[line, : len(encoded[i])] = torch.tensor(encoded[i])
                attention_mask[line, : len(encoded[i])] = 1
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device)).logits
            for line, i in enumerate(rows):
                values[i] = float(logits[line, 0])
        return values


class FunctionSource:
    def __init__(self, spec: FunctionReward, job: JobSpec):
        self.spec = spec
        self.function = import_reward_function(spec.function)

    def score(self, requests: list[ScoringRequest]) -> list[float]:
        values = []
        for r in requests:
            try:
                value = self.function(prompt=r.prompt, response=r.response, row=r.row)
                values.append(float(value))
            except Exception as exc:
                raise RewardError(
                    f"reward function {self.spec.function} failed on {r.label} "
                    f"(response {r.response[:60]!r}): {type(exc).__name__}: {exc}"
                ) from None
        return values


class LengthPenaltySource:
    def __init__(self, spec: LengthPenalty, job: JobSpec):
        self.free_tokens = spec.free_tokens
        self.scale = job.rollout.max_new_tokens

    def score(self, requests: list[ScoringRequest]) -> list[float]:
        return [-max(0, r.response_tokens - self.free_tokens) / self.scale for r in requests]


class FormatSource:
    def __init__(self, spec: FormatReward, job: JobSpec):
        self.pattern = re.compile(spec.pattern)

    def score(self, requests: list[ScoringRequest]) -> list[float]:
        return [1.0 if self.pattern.search(r.response) else 0.0 for r in requests]


SOURCES = {
    "math_answer": MathAnswerSource,
    "reasoning_gym": ReasoningGymSource,
    "function": FunctionSource,
    "length_penalty": LengthPenaltySource,
    "format": FormatSource,
}


def make_source(spec, job: JobSpec, model_paths: dict[str, str], device: str):
    if spec.kind == "reward_model":
        return RewardModelSource(spec, job, model_paths[spec.key], device)
    return SOURCES[spec.kind](spec, job)


def combine(per_source: dict[str, list[float]], weights: dict[str, float], labels: list[str]) -> list[dict[str, float]]:
    """One dict per request: each source's value and the weighted "total"; a non-finite value names its sample."""
    rewards = []
    for i, label in enumerate(labels):
        entry = {}
        for key, values in per_source.items():
            if not math.isfinite(values[i]):
                raise RewardError(f"reward source {key!r} gave {values[i]} for {label}; rewards must be finite numbers")
            entry[key] = values[i]
        entry["total"] = sum(weights[key] * entry[key] for key in per_source)
        rewards.append(entry)
    return rewards


def import_reward_function(target: str) -> Callable:
    module_name, _, function_name = target.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except Exception as exc:  # ImportError, AttributeError, or anything the module raises on import
        raise SpecError(f"reward function {target!r} cannot be imported ({type(exc).__name__}: {exc})") from None
    if not callable(function):
        raise SpecError(f"reward function {target!r} is not callable")
    return function


def check_reward_sources(job: JobSpec, prompts: list[Prompt], resolve_model: Callable[[str, str], str]) -> dict[str, str]:
    """Fail before any actor starts; return the local folder of every reward model, by source key."""
    model_paths = {}
    for position, spec in enumerate(job.reward.sources):
        where = f"reward.sources[{position}]"
        if spec.kind == "reward_model":
            model_paths[spec.key] = resolve_model(spec.path, f"{where}.path")
            check_sequence_classifier(model_paths[spec.key], f"{where}.path")
        elif spec.kind == "function":
            import_reward_function(spec.function)
        elif spec.kind == "reasoning_gym" and not is_reasoning_gym(job.data.path):
            raise SpecError(f"{where}: the reasoning_gym reward needs data.path 'reasoning-gym:<task>' (got {job.data.path!r})")
        elif spec.kind == "math_answer" and job.uses_rollout:
            # Offline pairs (preference.source dataset) are never scored: their rows need no gold answer.
            for prompt in prompts:
                if column_value(prompt.row, job.data.answer_column) in (None, ""):
                    raise DataError(
                        f"data row {prompt.index}: no gold answer in column {job.data.answer_column!r} "
                        f"(data.answer_column, read by the math_answer reward); the row has columns {sorted(prompt.row)}"
                    )
    return model_paths


def check_sequence_classifier(path: str, field: str) -> None:
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path)
        AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ModelError(f"{field}: cannot load a reward model from {path!r} ({type(exc).__name__}: {exc})") from None
    architectures = config.architectures or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ModelError(
            f"{field}: {path!r} is a {architectures[0]}, not a sequence-classification reward model "
            f"(expected an *ForSequenceClassification architecture)"
        )
    if not any(Path(path).glob("*.safetensors")) and not any(Path(path).glob("*.bin")):
        raise ModelError(f"{field}: {path!r} has no weight files (*.safetensors or *.bin)")
