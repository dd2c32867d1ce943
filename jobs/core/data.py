"""Prompts: the rows of a data source (jobs/core/data_sources.py) checked, split into training and
held-out, rendered with the chat template and tokenized.

Prompts are tokenized once, in the driver, and travel as token ids: the rollout
engines, the CLL scorer and the learner then all see exactly the same tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
import random

from jobs.core.data_sources import (
    REASONING_GYM_DEFAULT_SIZE, is_generated, no_rows_error, present_columns, response_text, source_rows,
)
from jobs.core.errors import DataError
from jobs.core.records import Prompt
from jobs.core.spec import DataSpec, JobSpec, is_reasoning_gym


def heldout_indices(count: int, fraction: float) -> set[int]:
    """The row indices of a fixed dataset of `count` rows that the eval keeps back (eval.holdout_fraction).

    By problem id, which is the row's index in the source: the ceil(fraction x count) indices whose
    SHA-256 is smallest. The same file always splits the same way, whoever loads it.
    """
    keep_back = math.ceil(round(fraction * count, 9))
    order = sorted(range(count), key=lambda index: (hashlib.sha256(f"row {index}".encode()).digest(), index))
    return set(order[:keep_back])


def indexed_rows(spec: DataSpec) -> list[tuple[int, dict]]:
    """(index in the source, row) of every row this spec loads, the first data.max_prompts of them.

    A job with a held-out split (JobSpec._held_out_rows) loads part of its source: training the rows
    heldout_indices leaves, the eval (heldout_data_spec) the others. The held-out problems of a
    generated source are another seed's, less any whose prompt a training row has. The index stays the
    row's own, so a prompt, sample or error message always names the row it came from.
    """
    rows = source_rows(spec)
    part = spec._part or {}
    indexed = list(enumerate(rows))
    if part.get("fraction") is not None and rows:
        held_out = heldout_indices(len(rows), part["fraction"])
        if not 0 < len(held_out) < len(rows):
            raise DataError(
                f"data.path {spec.path!r}: {len(rows)} row(s) cannot be split by eval.holdout_fraction "
                f"{part['fraction']:g} ({len(held_out)} held out for the eval, {len(rows) - len(held_out)} left to "
                f"train on); add rows, change eval.holdout_fraction, or give the eval its own file (eval.data_path)"
            )
        wanted = part["part"] == "heldout"
        indexed = [(index, row) for index, row in indexed if (index in held_out) == wanted]
    if part.get("training") is not None:
        trained = {_prompt_key(row, spec) for row in load_rows(part["training"])}
        indexed = [(index, row) for index, row in indexed if _prompt_key(row, spec) not in trained]
        if not indexed:
            raise DataError(
                f"data.path {spec.path!r}: every held-out problem (data.seed + 1) is also a training prompt: the "
                f"task has too few distinct problems to hold some back; give the eval its own (eval.data_path)"
            )
    if spec.max_prompts is not None:
        indexed = indexed[: spec.max_prompts]
    if not indexed:
        raise no_rows_error(spec, f"split {spec.split!r}")
    return indexed


def load_rows(spec: DataSpec) -> list[dict]:
    """The rows of the configured split this spec loads (see indexed_rows), as plain dicts."""
    return [row for _, row in indexed_rows(spec)]


def _prompt_key(row: dict, spec: DataSpec) -> str:
    # Equal prompt columns render to equal prompt text under one spec (same system prompt and template).
    return json.dumps(row.get(spec.prompt_column), sort_keys=True, default=str)


def heldout_data_spec(spec: JobSpec) -> DataSpec:
    """Where the eval's held-out problems come from, disjoint from the training prompts.

    eval.data_path when it is set. Else a fixed dataset's eval.holdout_fraction (the rows training leaves
    out), or a generated source's data.seed + 1, less any problem whose prompt is a training prompt:
    builtin:word-problems never repeats a question across seeds (jobs/core/word_problems.py, seed classes),
    builtin:arithmetic and reasoning-gym can (most reasoning-gym tasks: data.seed + 1 is data.seed shifted
    by one problem, so the held-out problems are drawn from past the training ones).
    """
    data = spec.data
    if spec.eval.data_path:
        held_out = data.model_copy(update={"path": spec.eval.data_path, "max_prompts": spec.eval.problems})
        held_out._part = None
    elif is_generated(data.path):
        held_out = data.model_copy(update={"seed": data.seed + 1, "max_prompts": spec.eval.problems})
        held_out._part = {"part": "heldout", "training": data}
        if is_reasoning_gym(data.path):
            # Most reasoning-gym tasks draw problem i from Random(seed + i): seed + 1's problems are seed's
            # shifted by one. Generating as many more as training has leaves eval.problems after the drop.
            held_out._part["generate"] = (data.max_prompts or REASONING_GYM_DEFAULT_SIZE) + spec.eval.problems
    else:
        held_out = data.model_copy(update={"max_prompts": spec.eval.problems})
        held_out._part = {"part": "heldout", "fraction": spec.eval.holdout_fraction}
    return held_out


def heldout_prompts(spec: JobSpec, tokenizer) -> list[Prompt]:
    """The eval's held-out problems, tokenized as the training prompts are (the eval actor's input)."""
    problems, _ = load_prompts(heldout_data_spec(spec), tokenizer, spec.max_prompt_tokens)
    return problems[: spec.eval.problems]


def _messages(row: dict, index: int, spec: DataSpec) -> list[dict]:
    value = row.get(spec.prompt_column)
    if value is None:  # absent, or a key only other rows have, which datasets fills with None
        raise DataError(
            f"data row {index}: no column {spec.prompt_column!r} (data.prompt_column); "
            f"the row has columns {present_columns(row)}"
        )
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


def load_prompts(spec: DataSpec, tokenizer, max_prompt_tokens: int) -> tuple[list[Prompt], dict[str, int]]:
    """Every row as a tokenized prompt, over-long ones handled as data.overlong_prompts says.

    Returns the prompts (each keeping its original row index) and how many were
    dropped or truncated for length: {"prompts_dropped_too_long", "prompts_truncated"}.
    """
    prompts = []
    counts = {"prompts_dropped_too_long": 0, "prompts_truncated": 0}
    rows = indexed_rows(spec)
    for index, row in rows:
        text, token_ids, messages = render_prompt(row, index, spec, tokenizer)
        if len(token_ids) > max_prompt_tokens:
            if spec.overlong_prompts == "error":
                raise DataError(
                    f"data row {index}: the prompt is {len(token_ids)} tokens; at most {max_prompt_tokens} fit "
                    f"(model.max_model_len minus rollout.max_new_tokens); data.overlong_prompts is 'error' "
                    f"('drop' skips such rows, 'truncate' keeps their last tokens)"
                )
            if spec.overlong_prompts == "drop":
                counts["prompts_dropped_too_long"] += 1
                continue
            # The end of a prompt (the question, the generation prompt) matters
            # most: keep the last tokens, as vLLM's truncate_prompt_tokens does.
            # The ids are what every engine sees; the text is only their rendering.
            token_ids = token_ids[-max_prompt_tokens:]
            text = tokenizer.decode(token_ids, skip_special_tokens=False)
            counts["prompts_truncated"] += 1
        prompts.append(Prompt(index=index, text=text, token_ids=tuple(token_ids), row=row, messages=tuple(messages)))
    if not prompts:
        raise DataError(
            f"data.path {spec.path!r}: all {len(rows)} prompt(s) are longer than {max_prompt_tokens} tokens "
            f"(model.max_model_len minus rollout.max_new_tokens) and data.overlong_prompts is 'drop'; "
            f"raise model.max_model_len or set data.overlong_prompts to 'truncate'"
        )
    return prompts, counts


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

    def restore(self, state: dict) -> None:
        """Continue where `state()` was taken: the epoch's order is rebuilt from the seed, not stored."""
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._epoch_order()
