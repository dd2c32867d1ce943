"""The spec reference: every field of the job spec with its type, default and description.

Built from the pydantic schema itself (JobSpec in jobs/core/spec.py and the sections it holds), so it
says what the code accepts. docs/spec.md is this module's output, and a test fails when
the two differ; after a schema change, regenerate it:

    .venv/bin/python -m jobs.spec_reference --write     rewrite docs/spec.md
    .venv/bin/python -m jobs.spec_reference --check     exit 1 when docs/spec.md is stale
    .venv/bin/python -m jobs.spec_reference             print the Markdown

`hintflow spec [FIELD]` (jobs/cli.py) prints the same reference, or one field or section of it.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from jobs.core.spec import JobSpec

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "spec.md"
REGENERATE = "python -m jobs.spec_reference --write"
ITEM = "[]"  # a list's items in a path: reward.sources[].weight
REQUIRED = "required"  # the default of a field without one


@dataclass(frozen=True)
class Entry:
    """One settable field: `rollout.temperature`, its type, its default (YAML) and what it does."""

    path: str
    type: str
    default: str
    description: str


@dataclass(frozen=True)
class Group:
    """The fields of one section (path "" is the top level of the spec), in schema order."""

    path: str
    about: str  # the section's docstring, then its field's description
    type: str  # of the section's own field ("section", "section | null", "list of ...")
    default: str
    entries: tuple[Entry, ...]


# Reading the schema


def _unwrap(annotation):
    """Annotated[X, ...] -> X."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _union_args(annotation) -> tuple | None:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return None


def _is_section(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _section_of(annotation) -> tuple[type[BaseModel] | None, bool]:
    """The section class a field holds, and whether it may be null (Optional[Section])."""
    annotation = _unwrap(annotation)
    if _is_section(annotation):
        return annotation, False
    args = _union_args(annotation)
    if args and type(None) in args:
        rest = [_unwrap(a) for a in args if a is not type(None)]
        if len(rest) == 1 and _is_section(rest[0]):
            return rest[0], True
    return None, False


def _list_items(annotation) -> list[type[BaseModel]]:
    """The item models of list[Model] or list[Annotated[Union[Model, ...], discriminator]]; [] otherwise."""
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) is not list:
        return []
    (item,) = typing.get_args(annotation) or (typing.Any,)
    item = _unwrap(item)
    models = [_unwrap(a) for a in (_union_args(item) or (item,))]
    return models if models and all(_is_section(m) for m in models) else []


def type_text(annotation) -> str:
    """A field's type as a spec author writes it: Literal choices, `| null` for Optional."""
    annotation = _unwrap(annotation)
    if annotation is type(None):
        return "null"
    if annotation is typing.Any:
        return "any"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(yaml_text(a) for a in args)
    if _union_args(annotation):
        parts = [type_text(a) for a in args if a is not type(None)]
        return " | ".join(parts + (["null"] if type(None) in args else []))
    if origin is list:
        return f"list of {type_text(args[0])}" if args else "list"
    if origin is tuple:
        return "[" + ", ".join(type_text(a) for a in args) + "]"
    if annotation is dict or origin is dict:
        return "mapping"
    if _is_section(annotation):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: FieldInfo) -> str:
    """Constraints from Field(ge=..., gt=..., le=..., lt=..., min_length=..., pattern=...)."""
    low = high = None
    notes = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            low = f">= {item.ge}"
        elif isinstance(item, annotated_types.Gt):
            low = f"> {item.gt}"
        elif isinstance(item, annotated_types.Le):
            high = f"<= {item.le}"
        elif isinstance(item, annotated_types.Lt):
            high = f"< {item.lt}"
        elif isinstance(item, annotated_types.MinLen):
            notes.append("non-empty" if item.min_length == 1 else f"at least {item.min_length} long")
        elif getattr(item, "pattern", None):
            notes.append(f"matching {item.pattern}")
    parts = [" and ".join(b for b in (low, high) if b)] if low or high else []
    return ", ".join(parts + notes)


def field_type(field: FieldInfo) -> str:
    bounds = _bounds(field)
    return type_text(field.annotation) + (f", {bounds}" if bounds else "")


def _plain(value):
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def yaml_text(value) -> str:
    """A value as it would be written in a spec file (YAML flow style, one line)."""
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=float("inf"), allow_unicode=True)
    return text.removesuffix("\n...\n").strip()


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return yaml_text(field.default_factory())
    if field.default is PydanticUndefined:
        return REQUIRED
    return yaml_text(field.default)


def _doc(model: type[BaseModel]) -> str:
    """The model's own docstring (not one inherited from Section or BaseModel)."""
    doc = model.__dict__.get("__doc__")
    return " ".join(doc.split()) if doc else ""


def _join(*texts: str) -> str:
    return " ".join(t.strip() for t in texts if t and t.strip())


def _item_entries(prefix: str, models: list[type[BaseModel]]) -> list[Entry]:
    """The fields of a list's items, e.g. reward sources: a union of models tagged by `kind`."""
    tag = "kind" if len(models) > 1 and all("kind" in m.model_fields for m in models) else None
    entries = []
    if tag:
        kinds = {typing.get_args(m.model_fields[tag].annotation)[0]: m for m in models}
        about = " ".join(f"{kind}: {_doc(m) or m.__name__}" for kind, m in kinds.items())
        entries.append(Entry(f"{prefix}.{tag}", " | ".join(yaml_text(k) for k in kinds), REQUIRED,
                             _join("Which kind of item this is; each kind takes the fields listed for it.", about)))
    names = list(dict.fromkeys(name for m in models for name in m.model_fields if name != tag))
    for name in names:
        having = [m for m in models if name in m.model_fields]
        shapes = {(field_type(m.model_fields[name]), default_text(m.model_fields[name]),
                   m.model_fields[name].description or "") for m in having}
        variants = [having] if len(shapes) == 1 else [[m] for m in having]
        for group in variants:
            field = group[0].model_fields[name]
            kinds = [yaml_text(typing.get_args(m.model_fields[tag].annotation)[0]) if tag else m.__name__
                     for m in group]
            only = f"(kind {', '.join(kinds)})" if tag and len(group) < len(models) else ""
            path = f"{prefix}.{name}" if len(variants) == 1 else f"{prefix.removesuffix(ITEM)}[{kinds[0]}].{name}"
            entries.append(Entry(path, field_type(field), default_text(field), _join(only, field.description or "")))
    return entries


def groups(model: type[BaseModel] = JobSpec) -> list[Group]:
    """Every section of the spec, depth first in schema order, the top level first."""
    found: list[Group] = []

    def walk(section: type[BaseModel], path: str, about: str, kind: str, default: str) -> None:
        own, nested = [], []
        for name, field in section.model_fields.items():
            dotted = f"{path}.{name}" if path else name
            child, nullable = _section_of(field.annotation)
            items = _list_items(field.annotation)
            if child is not None:
                nested.append((child, dotted, _join(_doc(child), field.description or ""),
                               "section | null" if nullable else "section", default_text(field) if nullable else ""))
            elif items:
                nested.append((items, dotted, field.description or "", "list of items (fields below)",
                               default_text(field)))
            else:
                own.append(Entry(dotted, field_type(field), default_text(field), field.description or ""))
        found.append(Group(path, about, kind, default, tuple(own)))
        for child, dotted, child_about, child_kind, child_default in nested:
            if isinstance(child, list):
                about_items = _join(child_about, f"Each item is a mapping: one of {len(child)} kinds, chosen by its "
                                    "kind field; the fields below marked (kind ...) belong to that kind only."
                                    if len(child) > 1 else "")
                found.append(Group(dotted, about_items, child_kind, child_default,
                                   tuple(_item_entries(dotted + ITEM, child))))
            else:
                walk(child, dotted, child_about, child_kind, child_default)

    walk(model, "", _doc(model) or "Settings at the top of the spec file.", "", "")
    return found


def reference_paths(found: list[Group] | None = None) -> list[str]:
    """Every path the reference describes: sections and fields."""
    found = groups() if found is None else found
    return [p for g in found for p in ([g.path] if g.path else []) + [e.path for e in g.entries]]


# Rendering


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*")
            .replace("`", "\\`"))


def _code(text: str) -> str:
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def markdown(found: list[Group] | None = None) -> str:
    found = groups() if found is None else found
    lines = [
        "# Spec reference",
        "",
        "Every field of the job spec (the YAML files in `configs/`, `--set a.b=value`), with its type, default "
        "and description. Generated from the pydantic schema in `jobs/core/spec.py` and the sections it holds; do not "
        f"edit by hand, regenerate with `.venv/bin/{REGENERATE}` (tests/test_cli_command.py fails when this file "
        "is stale). In a terminal: `hintflow spec FIELD`, e.g. `hintflow spec rollout.temperature` or "
        "`hintflow spec eval`.",
        "",
        "Defaults are written as in a spec file (YAML); a few are resolved when the spec is loaded, as their "
        "descriptions say (null often means \"chosen for you\"). `[]` in a path stands for each item of a list.",
        "",
        "Sections: " + ", ".join(f"[{g.path or 'top level'}](#{_anchor(g.path)})" for g in found) + ".",
    ]
    for group in found:
        depth = "##" if group.path.count(".") == 0 else "###"
        lines += ["", f"{depth} {group.path or 'Top level'}", ""]
        facts = [f"type: {_md(group.type)}"] if group.type not in ("", "section") else []
        if group.default:
            facts.append(f"default: {_code(group.default)}")
        if group.about or facts:
            lines += [_join(_md(group.about), "(" + "; ".join(facts) + ")" if facts else ""), ""]
        if not group.entries:
            lines.append("No fields of its own; see its subsections.")
            continue
        lines += ["| field | type | default | description |", "|---|---|---|---|"]
        lines += [f"| `{e.path}` | {_md(e.type)} | {_default_md(e.default)} | {_md(e.description)} |"
                  for e in group.entries]
    return "\n".join(lines) + "\n"


def _default_md(default: str) -> str:
    return default if default == REQUIRED else _code(default)


def _anchor(path: str) -> str:
    """GitHub's heading anchor: lower case, punctuation but - and _ dropped, spaces to -."""
    title = (path or "Top level").lower()
    return "".join(c for c in title if c.isalnum() or c in "-_ ").replace(" ", "-")


def _entry_text(entry: Entry, width: int) -> list[str]:
    default = entry.default if entry.default == REQUIRED else f"default {entry.default}"
    head = f"{entry.path}: {entry.type} ({default})"
    body = textwrap.wrap(entry.description, width=width - 4, break_on_hyphens=False, break_long_words=False) if entry.description else []
    return [head] + ["    " + line for line in body]


def _group_text(group: Group, width: int) -> list[str]:
    title = group.path or "top level"
    facts = ", ".join(([group.type] if group.type not in ("", "section") else [])
                      + ([f"default {group.default}"] if group.default else []))
    lines = [f"[{title}]" + (f" {facts}" if facts else "")]
    lines += ["    " + line for line in textwrap.wrap(group.about, width=width - 4, break_on_hyphens=False, break_long_words=False)]
    for entry in group.entries:
        lines += [""] + _entry_text(entry, width)
    return lines


def text(found: list[Group] | None = None, width: int = 100) -> str:
    """The whole reference as plain text (what `hintflow spec` prints)."""
    found = groups() if found is None else found
    blocks = ["\n".join(_group_text(g, width)) for g in found]
    return "\n\n".join(blocks) + "\n"


def _key(path: str) -> str:
    """A path as the user may type it: reward.sources.weight for reward.sources[].weight."""
    key = path.strip().replace(ITEM, "")
    while "[" in key:  # reward.sources[reward_model].path
        start, end = key.index("["), key.index("]", key.index("["))
        key = key[:start] + key[end + 1:]
    return key.lower()


def lookup(path: str, width: int = 100) -> str | None:
    """One field's entry, or a section with every field under it; None when no such path exists."""
    found = groups()
    key = _key(path)
    lines: list[str] = []
    for group in found:
        if group.path and (_key(group.path) == key or _key(group.path).startswith(key + ".")):
            lines += ([""] if lines else []) + _group_text(group, width)
    if not lines:
        for entry in (e for g in found for e in g.entries):
            if _key(entry.path) == key:
                lines += ([""] if lines else []) + _entry_text(entry, width)
    return "\n".join(lines) + "\n" if lines else None


def suggestion(path: str) -> str:
    """`did you mean ...?` for a path the reference lacks: by the whole path, else by its last name."""
    paths = reference_paths()
    key = _key(path)
    by_path: dict[str, list[str]] = {_key(p): [p] for p in paths}
    by_name: dict[str, list[str]] = {}
    for p in paths:
        by_name.setdefault(_key(p).rsplit(".", 1)[-1], []).append(p)
    # A dotted path is compared with whole paths first; a bare name (temprature) with the fields' last names.
    tries = [(key, by_path), (key.rsplit(".", 1)[-1], by_name)]
    for word, table in tries if "." in key else tries[::-1]:
        close = difflib.get_close_matches(word, list(table), n=1, cutoff=0.6)
        if close:
            return f"did you mean {' or '.join(table[close[0]])}?"
    return "hintflow spec lists every field"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.spec_reference", description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help=f"(re)write {DOC_PATH.name} in docs/")
    action.add_argument("--check", action="store_true", help=f"exit 1 when docs/{DOC_PATH.name} is stale")
    args = parser.parse_args(argv)
    current = markdown()
    if args.write:
        DOC_PATH.write_text(current)
        print(f"wrote {DOC_PATH} ({len(reference_paths())} fields and sections)")
    elif args.check:
        if not DOC_PATH.is_file() or DOC_PATH.read_text() != current:
            print(f"{DOC_PATH} is stale; regenerate it: {REGENERATE}", file=sys.stderr)
            return 1
        print(f"{DOC_PATH} is current")
    else:
        sys.stdout.write(current)
    return 0


if __name__ == "__main__":
    sys.exit(main())
