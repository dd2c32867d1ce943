"""Prompts: load a dataset, check every row, render the chat template, tokenize.

Prompts are tokenized once, in the driver, and travel as token ids: the rollout
engines, the CLL scorer and the learner then all see exactly the same tokens.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from jobs import builtin
from jobs.errors import DataError
from jobs.spec import CHAMP_PREFIX, REASONING_GYM_PREFIX, DataSpec, is_builtin, is_reasoning_gym

REASONING_GYM_DEFAULT_SIZE = 1000


@dataclass(frozen=True)
class Prompt:
    index: int  # row number in the dataset, for tracing a sample back to its source
    text: str  # after the chat template
    token_ids: tuple[int, ...]
    row: dict  # the original row (answers, metadata) for verifiers and reward functions
    messages: tuple[dict, ...] = ()  # before the chat template: a reward model applies its own


def _check_jsonl(path: Path) -> None:
    # datasets' own JSON error names neither the line nor the problem.
    with path.open() as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {line_number}: not valid JSON ({exc.msg})") from None
            if not isinstance(value, dict):
                raise DataError(f"{path}: line {line_number}: expected a JSON object, got {type(value).__name__}")


def load_rows(spec: DataSpec) -> list[dict]:
    """All rows of the configured split, as plain dicts."""
    if is_builtin(spec.path):
        if spec.path != builtin.ARITHMETIC:
            raise DataError(f"data.path: unknown builtin {spec.path!r}; expected {builtin.ARITHMETIC!r}")
        rows = builtin.arithmetic_rows()
    elif is_reasoning_gym(spec.path):
        rows = _reasoning_gym_rows(spec)
    elif spec.path.startswith(CHAMP_PREFIX):
        rows = _champ_rows(spec)
    else:
        rows = _load_with_datasets(spec)
    if spec.max_prompts is not None:
        rows = rows[: spec.max_prompts]
    if not rows:
        raise DataError(f"data.path {spec.path!r}: split {spec.split!r} has no rows")
    return rows


def _reasoning_gym_rows(spec: DataSpec) -> list[dict]:
    """Procedurally generated problems: question, answer, metadata (with the task's own solution)."""
    import reasoning_gym

    task = spec.path.removeprefix(REASONING_GYM_PREFIX)
    try:
        dataset = reasoning_gym.create_dataset(task, size=spec.max_prompts or REASONING_GYM_DEFAULT_SIZE, seed=spec.seed)
    except Exception as exc:  # an unknown task name is a ValueError; bad task options vary
        raise DataError(f"data.path {spec.path!r}: reasoning-gym cannot create it ({type(exc).__name__}: {exc})") from None
    return [dict(entry) for entry in dataset]


def _champ_rows(spec: DataSpec) -> list[dict]:
    """champ-dataset (270 competition problems): question, answer, step-by-step solution, hints."""
    import champ_dataset

    version = spec.path.removeprefix(CHAMP_PREFIX) or "v0"
    try:
        dataset = champ_dataset.load(version)
    except Exception as exc:
        raise DataError(f"data.path {spec.path!r}: champ-dataset cannot load {version!r} ({type(exc).__name__}: {exc})") from None
    return [
        {
            "identifier": problem.identifier,
            "category": problem.category,
            "question": problem.text,
            "answer": problem.answer,
            "solution": "\n".join(step.text for step in problem.solution.steps),
            "hints": [dataset.hints[h].text for h in problem.ch_list if h in dataset.hints],
        }
        for problem in dataset.problems.values()
    ]


def column_value(row: dict, column: str):
    """row[column], where a dotted column reaches into nested dicts (metadata.answer_cot); None if absent."""
    value = row
    for key in column.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def response_text(row: dict, index: int, column: str) -> str:
    """A non-empty response string: plain text, or the last message of a {role, content} list."""
    value = column_value(row, column)
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        value = value[-1].get("content")
    if value is None:
        raise DataError(f"data row {index}: no column {column!r}; the row has columns {sorted(row)}")
    if not isinstance(value, str):
        raise DataError(f"data row {index}: column {column!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"data row {index}: column {column!r} is empty")
    return value


def _load_with_datasets(spec: DataSpec) -> list[dict]:
    import datasets

    datasets.disable_progress_bars()
    path = Path(spec.path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json", ".parquet"):
            if not path.is_file():
                raise DataError(f"data.path: file {spec.path!r} does not exist")
            if suffix == ".jsonl":
                _check_jsonl(path)
            builder = "parquet" if suffix == ".parquet" else "json"
            dataset = datasets.load_dataset(builder, data_files=str(path), split="train")
        elif path.is_dir():
            dataset = datasets.load_from_disk(str(path))
            if isinstance(dataset, datasets.DatasetDict):
                if spec.split not in dataset:
                    raise DataError(
                        f"data.split: {spec.split!r} is not in {spec.path!r}; it has {sorted(dataset.keys())}"
                    )
                dataset = dataset[spec.split]
        else:
            # Anything else is a hub dataset name: the path users take on a
            # cluster with hub access.
            dataset = datasets.load_dataset(spec.path, split=spec.split)
    except DataError:
        raise
    except Exception as exc:  # datasets raises many unrelated types for unreadable input
        raise DataError(f"data.path {spec.path!r}: cannot be loaded ({type(exc).__name__}: {exc})") from None
    return [dict(row) for row in dataset]


def _messages(row: dict, index: int, spec: DataSpec) -> list[dict]:
    if spec.prompt_column not in row:
        raise DataError(
            f"data row {index}: no column {spec.prompt_column!r} (data.prompt_column); "
            f"the row has columns {sorted(row)}"
        )
    value = row[spec.prompt_column]
    if value is None:  # datasets fills a key that some rows lack with None
        raise DataError(f"data row {index}: column {spec.prompt_column!r} is missing or null")
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"data row {index}: column {spec.prompt_column!r} is empty")
        messages = [{"role": "user", "content": value}]
    elif isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        messages = [{"role": m["role"], "content": m["content"]} for m in value]
    else:
        raise DataError(
            f"data row {index}: column {spec.prompt_column!r} must be a non-empty string or a list of "
            f"{{role, content}} messages, got {type(value).__name__}"
        )
    if spec.system_prompt:
        messages = [{"role": "system", "content": spec.system_prompt}] + messages
    return messages


def render_prompt(row: dict, index: int, spec: DataSpec, tokenizer) -> tuple[str, list[int], list[dict]]:
    messages = _messages(row, index, spec)
    text, token_ids = render_messages(messages, spec, tokenizer, f"data row {index}")
    return text, token_ids, messages


def render_messages(messages: list[dict], spec: DataSpec, tokenizer, where: str) -> tuple[str, list[int]]:
    """Messages -> prompt text and token ids, with the chat template data.chat_template selects."""
    if spec.chat_template == "none":
        text = "\n\n".join(m["content"] for m in messages)
        return text, tokenizer(text).input_ids
    template = None if spec.chat_template == "model" else spec.chat_template
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise DataError(
            "data.chat_template is 'model' but the model's tokenizer has no chat template; "
            "set data.chat_template to 'none' (raw prompt text) or to a Jinja template"
        )
    try:
        text = tokenizer.apply_chat_template(
            messages, chat_template=template, add_generation_prompt=True, tokenize=False
        )
    except Exception as exc:  # a user-supplied Jinja template can fail in many ways
        raise DataError(f"{where}: the chat template failed ({type(exc).__name__}: {exc})") from None
    # The template already wrote any special tokens it wants.
    return text, tokenizer(text, add_special_tokens=False).input_ids


def load_prompts(spec: DataSpec, tokenizer, max_prompt_tokens: int) -> list[Prompt]:
    prompts = []
    for index, row in enumerate(load_rows(spec)):
        text, token_ids, messages = render_prompt(row, index, spec, tokenizer)
        if len(token_ids) > max_prompt_tokens:
            raise DataError(
                f"data row {index}: the prompt is {len(token_ids)} tokens; at most {max_prompt_tokens} fit "
                f"(model.max_model_len minus rollout.max_new_tokens)"
            )
        prompts.append(Prompt(index=index, text=text, token_ids=tuple(token_ids), row=row, messages=tuple(messages)))
    return prompts


def response_token_ids(text: str, tokenizer) -> list[int]:
    """A written response as the model would have generated it: its tokens, then end-of-sequence."""
    return tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


def check_columns(prompts: list[Prompt], columns: list[str], tokenizer, max_tokens: int) -> None:
    """Every row has a non-empty response in each column, and prompt + response fits model.max_model_len."""
    for prompt in prompts:
        for column in columns:
            tokens = response_token_ids(response_text(prompt.row, prompt.index, column), tokenizer)
            if len(prompt.token_ids) + len(tokens) > max_tokens:
                raise DataError(
                    f"data row {prompt.index}: prompt + {column!r} is {len(prompt.token_ids) + len(tokens)} tokens; "
                    f"at most {max_tokens} fit (model.max_model_len)"
                )


class PromptStream:
    """Endless batches of prompts: one shuffled pass per epoch, then reshuffle."""

    def __init__(self, prompts: list[Prompt], shuffle: bool, seed: int):
        self.prompts = prompts
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._epoch_order()

    def _epoch_order(self) -> list[int]:
        order = list(range(len(self.prompts)))
        if self.shuffle:
            random.Random(self.seed * 7919 + self.epoch).shuffle(order)
        return order

    def next_batch(self, size: int) -> list[Prompt]:
        batch = []
        while len(batch) < size:
            if self.position == len(self._order):
                self.epoch += 1
                self.position = 0
                self._order = self._epoch_order()
            batch.append(self.prompts[self._order[self.position]])
            self.position += 1
        return batch

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}
