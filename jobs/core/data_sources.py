"""Rows from a data source: a file, a saved folder, a hub dataset, builtin:, reasoning-gym: or champ:,
each checked for what it must have; and reading a column of a row (a dotted path reaches into nested ones).

jobs/core/data.py turns the rows into prompts.
"""

from __future__ import annotations

import json
from typing import Iterable, Iterator
from pathlib import Path

from jobs.core import builtin
from jobs.core.errors import DataError
from jobs.core.word_problems import DEFAULT_COUNT as WORD_PROBLEMS_DEFAULT_COUNT, WORD_PROBLEMS, word_problem_rows
from jobs.core.spec import CHAMP_PREFIX, REASONING_GYM_PREFIX, DataSpec, is_builtin, is_reasoning_gym

REASONING_GYM_DEFAULT_SIZE = 1000


def jsonl_objects(lines: Iterable[str], where: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) of every non-blank line; a bad line is one DataError naming `where` and the line.

    datasets' own JSON error names neither the line nor the problem.
    """
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: line {line_number}: not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise DataError(f"{where}: line {line_number}: expected a JSON object, got {type(value).__name__}")
        yield line_number, value


def _count_jsonl_rows(path: Path) -> int:
    with path.open() as handle:
        return sum(1 for _ in jsonl_objects(handle, str(path)))


def no_rows_error(spec: DataSpec, what: str) -> DataError:
    return DataError(f"data.path {spec.path!r}: {what} has no rows; expected at least one row with a prompt")


def _json_file_is_empty(path: Path) -> bool:
    text = path.read_text()
    if not text.strip():
        return True
    try:
        return json.loads(text) == []
    except json.JSONDecodeError:
        return False  # JSON lines, or broken: datasets reads or names it


def _parquet_file_is_empty(path: Path) -> bool:
    import pyarrow.parquet

    try:
        return pyarrow.parquet.read_metadata(path).num_rows == 0
    except Exception:  # not a parquet file: datasets names the problem
        return False


def _saved_split_is_empty(folder: Path) -> bool:
    # datasets cannot load a saved dataset of zero rows (an IndexError inside
    # load_from_disk), so look at what save_to_disk wrote before loading.
    try:
        return json.loads((folder / "state.json").read_text()).get("_data_files") == []
    except (OSError, ValueError, AttributeError):
        return False


def is_generated(path: str) -> bool:
    """builtin:arithmetic, builtin:word-problems, reasoning-gym:<task>: another seed gives other problems."""
    return is_builtin(path) or is_reasoning_gym(path)


def source_rows(spec: DataSpec) -> list[dict]:
    """Every row of the source (a generated one: data.max_prompts problems, or its default count)."""
    if is_builtin(spec.path):
        return _builtin_rows(spec)
    if is_reasoning_gym(spec.path):
        return _reasoning_gym_rows(spec)
    if spec.path.startswith(CHAMP_PREFIX):
        return _champ_rows(spec)
    return _load_with_datasets(spec)


def _builtin_rows(spec: DataSpec) -> list[dict]:
    if spec.path == builtin.ARITHMETIC:
        return builtin.arithmetic_rows(seed=spec.seed)
    if spec.path == WORD_PROBLEMS:
        return word_problem_rows(count=spec.max_prompts or WORD_PROBLEMS_DEFAULT_COUNT, seed=spec.seed)
    raise DataError(f"data.path: unknown builtin {spec.path!r}; expected {builtin.ARITHMETIC!r} or {WORD_PROBLEMS!r}")


def _reasoning_gym_rows(spec: DataSpec) -> list[dict]:
    """Procedurally generated problems: question, answer, metadata (with the task's own solution)."""
    import reasoning_gym

    task = spec.path.removeprefix(REASONING_GYM_PREFIX)
    try:
        size = (spec._part or {}).get("generate") or spec.max_prompts or REASONING_GYM_DEFAULT_SIZE
        dataset = reasoning_gym.create_dataset(task, size=size, seed=spec.seed, **spec.task_options)
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


def present_columns(row: dict) -> list[str]:
    """The row's columns that hold a value: datasets gives a key some rows lack to every row, as None."""
    return sorted(key for key, value in row.items() if value is not None)


def response_text(row: dict, index: int, column: str) -> str:
    """A non-empty response string: plain text, or the last message of a {role, content} list."""
    value = column_value(row, column)
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        value = value[-1].get("content")
    if value is None:
        raise DataError(f"data row {index}: no column {column!r}; the row has columns {present_columns(row)}")
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
            # datasets reports an empty file as StopIteration or "corresponds to no data", if at all.
            if (
                (suffix == ".jsonl" and _count_jsonl_rows(path) == 0)
                or (suffix == ".json" and _json_file_is_empty(path))
                or (suffix == ".parquet" and _parquet_file_is_empty(path))
            ):
                raise no_rows_error(spec, "the file")
            builder = "parquet" if suffix == ".parquet" else "json"
            dataset = datasets.load_dataset(builder, data_files=str(path), split="train")
        elif path.is_dir():
            dataset = _load_saved_split(path, spec)
        else:
            # Anything else is a hub dataset name: the path users take on a
            # cluster with hub access.
            dataset = datasets.load_dataset(spec.path, split=spec.split)
    except DataError:
        raise
    except Exception as exc:  # datasets raises many unrelated types for unreadable input
        raise DataError(f"data.path {spec.path!r}: cannot be loaded ({type(exc).__name__}: {exc})") from None
    return [dict(row) for row in dataset]


def _load_saved_split(folder: Path, spec: DataSpec):
    """A datasets.save_to_disk folder: one Dataset, or the data.split of a DatasetDict."""
    import datasets

    splits_file = folder / "dataset_dict.json"
    if splits_file.is_file():
        # Only the wanted split is loaded: an empty sibling split would make load_from_disk fail.
        splits = json.loads(splits_file.read_text()).get("splits", [])
        if spec.split not in splits:
            raise DataError(f"data.split: {spec.split!r} is not in {spec.path!r}; it has {sorted(splits)}")
        folder = folder / spec.split
    if _saved_split_is_empty(folder):
        raise no_rows_error(spec, f"split {spec.split!r}" if splits_file.is_file() else "the saved dataset")
    return datasets.load_from_disk(str(folder))
