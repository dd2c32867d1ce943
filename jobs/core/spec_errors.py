"""Reading a spec file, and what is wrong with a spec as one line: an unreadable, empty or
non-YAML file, a broken `base:` chain, and pydantic's validation errors mapped back to the field
paths the user wrote.

Kept apart from jobs/core/spec.py, which holds the schema; the root model comes in as
an argument so this module never imports the schema it describes.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from jobs.core.errors import SpecError
from jobs.core.reward_spec import REWARD_SOURCES_BY_KIND

EXAMPLE_SPEC = "configs/hinted_idft.yaml"


def read_spec_mapping(path: Path) -> dict:
    """The spec file's top-level mapping, or a SpecError saying why there is none."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec file ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise SpecError(f"{path}: not valid YAML{where}: {problem}") from None
    if raw is None:
        # An empty file is far more often a wrong path or an unsaved editor
        # buffer than a request for the default job; `{}` still asks for that.
        raise SpecError(f"{path}: the spec file is empty; expected a mapping of fields, e.g. {EXAMPLE_SPEC}")
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of fields at the top level, got {type(raw).__name__}")
    return raw


def read_spec_file(path: Path, extending: tuple[Path, ...] = ()) -> dict:
    """The spec file's mapping laid over the spec its `base:` names (a path relative to this file).

    A variant then states only what it changes (`base: seed-sft-smollm2.yaml`, `train: {lr: 2.0e-6}`):
    sections merge key by key, any other value (a list included) replaces the base's.
    """
    raw = read_spec_mapping(path)
    if "base" not in raw:
        return raw
    base = raw.pop("base")
    if not isinstance(base, str) or not base.strip():
        raise SpecError(f"{path}: base must be the path of another spec file, relative to this one; got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in extending or base_path == path.resolve():
        raise SpecError(f"{path}: base {base!r} leads back to a spec that extends it; the chain must end")
    return merge_sections(read_spec_file(base_path, extending + (path.resolve(),)), raw)


def merge_sections(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_sections(merged[key], value)
        else:
            merged[key] = value
    return merged


def validation_error_line(exc: ValidationError, root: type[BaseModel]) -> str:
    """Every error pydantic found, each naming its field path as the user wrote it, joined on one line."""
    return "; ".join(_describe(error, root) for error in exc.errors())


def _is_union_tag(loc: tuple, position: int) -> bool:
    """Pydantic puts a reward source's `kind` right after its list index (reward.sources[0].function...)."""
    return position > 0 and isinstance(loc[position - 1], int) and loc[position] in REWARD_SOURCES_BY_KIND


def _user_location(loc: tuple) -> tuple:
    return tuple(item for position, item in enumerate(loc) if not _is_union_tag(loc, position))


def _format_location(loc: tuple) -> str:
    parts: list[str] = []
    for item in _user_location(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<top level>"


def _allowed_fields(loc: tuple, root: type[BaseModel]) -> list[str]:
    model: Any = root
    for position, item in enumerate(loc[:-1]):
        if isinstance(item, int):
            continue
        if _is_union_tag(loc, position):
            model = REWARD_SOURCES_BY_KIND[item]
            continue
        field = model.model_fields.get(item)
        annotation = field.annotation if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif field is not None and item == "sources":
            continue  # a list of reward sources: the tag that follows picks the model
        else:
            return []
    return list(model.model_fields)


def _describe(error: dict, root: type[BaseModel]) -> str:
    where = _format_location(error["loc"])
    if error["type"] == "extra_forbidden":
        allowed = _allowed_fields(error["loc"], root)
        close = difflib.get_close_matches(str(error["loc"][-1]), allowed, n=1)
        guess = f", did you mean `{close[0]}`?" if close else ""
        hint = f" (expected one of: {', '.join(allowed)})" if allowed else ""
        return f"{where}: unknown field{guess}{hint}"
    if error["type"] == "missing":
        if error["loc"] and isinstance(error["loc"][-1], int):
            return f"{_format_location(error['loc'][:-1])}: too few items (item [{error['loc'][-1]}] is missing)"
        return f"{where}: required field is missing"
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return message  # a check across fields names its fields itself
    if error["loc"] and "input" in error and not isinstance(error["input"], dict):
        return f"{where}: {message} (got {error['input']!r})"
    return f"{where}: {message}"
