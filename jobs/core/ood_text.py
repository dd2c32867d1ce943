"""Out-of-domain text for measuring forgetting (docs/algorithms.md section 10).

Forgetting is measured on general text from other domains than the training
data. Nothing is downloaded: the text ships with Python itself or is a user file.

- ``builtin:stdlib-docs`` (the default): English prose from the docstrings of a
  fixed, sorted list of pure-Python standard-library modules (each module's
  docstring, then its public classes and functions and their public methods, by
  name), split into paragraphs at blank lines; doctest paragraphs (``>>>``)
  dropped; consecutive paragraphs of one docstring joined into passages of about
  ``passage_chars`` characters, longer paragraphs cut at sentence or word
  boundaries; passages shorter than a quarter of that dropped, duplicates kept
  once. The text is identical for the same CPython version and build (docstrings
  rarely change between patch releases of one minor version, and can between
  minor versions), on any machine. Docstrings are the Python Software
  Foundation's, read from the running interpreter, not copied into this
  repository. Python started with -OO strips them: that is a DataError.
- a ``.txt`` file: passages separated by blank lines.
- a ``.jsonl`` file: one JSON object per line with a string ``"text"``.

``ood_passages`` draws ``count`` distinct passages with ``random.Random(seed)``:
the same list for the same source, count and seed.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import random
import re
import sys
from pathlib import Path

from jobs.core.data_sources import jsonl_objects
from jobs.core.errors import DataError

STDLIB_DOCS = "builtin:stdlib-docs"
DEFAULT_PASSAGE_CHARS = 1000

# Pure-Python modules whose public names do not depend on the platform or on
# optional C accelerators (no decimal/datetime: their C and Python versions have
# different docstrings; no os, socketserver, tempfile, uuid: platform-dependent
# definitions). Sorted; the order fixes the passage order.
STDLIB_MODULES = (
    "abc",
    "argparse",
    "ast",
    "bdb",
    "calendar",
    "cmd",
    "code",
    "codeop",
    "collections",
    "collections.abc",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "difflib",
    "dis",
    "email.headerregistry",
    "email.message",
    "email.policy",
    "email.utils",
    "enum",
    "filecmp",
    "fnmatch",
    "fractions",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "graphlib",
    "gzip",
    "heapq",
    "html",
    "html.parser",
    "http.client",
    "http.cookiejar",
    "http.cookies",
    "http.server",
    "inspect",
    "ipaddress",
    "json",
    "logging",
    "logging.config",
    "logging.handlers",
    "mailbox",
    "mimetypes",
    "netrc",
    "numbers",
    "optparse",
    "pathlib",
    "pickletools",
    "plistlib",
    "pprint",
    "pstats",
    "pyclbr",
    "pydoc",
    "queue",
    "quopri",
    "random",
    "reprlib",
    "runpy",
    "sched",
    "secrets",
    "shelve",
    "shlex",
    "smtplib",
    "statistics",
    "string",
    "tabnanny",
    "tarfile",
    "textwrap",
    "timeit",
    "tokenize",
    "trace",
    "traceback",
    "types",
    "unittest.case",
    "unittest.mock",
    "urllib.parse",
    "urllib.robotparser",
    "wave",
    "weakref",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "xmlrpc.client",
    "xmlrpc.server",
    "zipapp",
    "zipfile",
)

_BLANK_LINES = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def ood_passages(source: str, count: int, seed: int, *, passage_chars: int = DEFAULT_PASSAGE_CHARS) -> list[str]:
    """`count` distinct passages of out-of-domain text, in a seeded random order.

    Args:
        source: ``builtin:stdlib-docs``, or a path to a ``.txt`` (blank-line separated
            passages) or ``.jsonl`` (``"text"`` column) file.
        count: how many passages, at least 1.
        seed: the random draw; the same source, count and seed give the same list.
        passage_chars: target passage length of the builtin source (user files are
            taken as they are).

    Returns:
        `count` non-empty, stripped strings, no two drawn from the same passage.

    Raises:
        DataError: unknown builtin, missing or unreadable file, a file with no
            passages, a bad jsonl line, or fewer passages than `count`.
        ValueError: count < 1.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    passages = _load(source, passage_chars)
    if len(passages) < count:
        raise DataError(f"ood text {source!r}: has {len(passages)} passage(s), fewer than the {count} asked for")
    order = random.Random(seed).sample(range(len(passages)), count)
    return [passages[i] for i in order]


def _load(source: str, passage_chars: int) -> list[str]:
    if source.startswith("builtin:"):
        if source != STDLIB_DOCS:
            raise DataError(f"ood text: unknown builtin {source!r}; expected {STDLIB_DOCS!r} or a .txt/.jsonl path")
        return list(stdlib_doc_passages(passage_chars))
    path = Path(source)
    if not path.exists():
        raise DataError(f"ood text: file {source!r} does not exist")
    if not path.is_file():
        raise DataError(f"ood text: {source!r} is not a file; expected a .txt or .jsonl file")
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise DataError(f"ood text {source!r}: expected a .txt (blank-line separated) or .jsonl file, got {suffix!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"ood text {source!r}: cannot be read ({type(exc).__name__}: {exc})") from None
    passages = _txt_passages(text) if suffix == ".txt" else _jsonl_passages(text, source)
    if not passages:
        raise DataError(f"ood text {source!r}: has no passages; expected non-empty text")
    return passages


def _txt_passages(text: str) -> list[str]:
    return [p.strip() for p in _BLANK_LINES.split(text.replace("\r\n", "\n")) if p.strip()]


def _jsonl_passages(text: str, source: str) -> list[str]:
    passages = []
    for line_number, row in jsonl_objects(text.splitlines(), f"ood text {source!r}"):
        value = row.get("text")
        if not isinstance(value, str):
            what = "no column 'text'" if value is None else f"column 'text' is {type(value).__name__}, not a string"
            raise DataError(f"ood text {source!r}: line {line_number}: {what}")
        if value.strip():
            passages.append(value.strip())
    return passages


# --------------------------------------------------------------------------- builtin:stdlib-docs


@functools.lru_cache(maxsize=4)
def stdlib_doc_passages(passage_chars: int = DEFAULT_PASSAGE_CHARS) -> tuple[str, ...]:
    """Every passage of ``builtin:stdlib-docs``, in their fixed order (see the module docstring)."""
    if passage_chars < 100:
        raise ValueError(f"passage_chars must be at least 100, got {passage_chars}")
    if sys.flags.optimize >= 2:
        raise DataError(
            f"ood text {STDLIB_DOCS!r}: Python runs with -OO (or PYTHONOPTIMIZE=2), which strips docstrings; "
            "run without it or give a .txt/.jsonl file"
        )
    passages: list[str] = []
    seen: set[str] = set()
    for document in _stdlib_documents():
        for passage in _passages(document, passage_chars):
            if len(passage) >= passage_chars // 4 and passage not in seen:
                seen.add(passage)
                passages.append(passage)
    if not passages:
        raise DataError(f"ood text {STDLIB_DOCS!r}: found no docstrings in this Python")
    return tuple(passages)


def _stdlib_documents():
    for name in STDLIB_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a stripped-down Python; the text changes, and says so in the docs
            continue
        yield module.__doc__
        for member_name, member in sorted(vars(module).items()):
            if member_name.startswith("_") or getattr(member, "__module__", None) != name:
                continue
            if not (inspect.isclass(member) or inspect.isroutine(member)):
                continue
            yield member.__doc__
            if inspect.isclass(member):
                for method_name, method in sorted(vars(member).items()):
                    if not method_name.startswith("_") and inspect.isroutine(method):
                        yield method.__doc__


def _passages(doc, passage_chars: int) -> list[str]:
    if not isinstance(doc, str) or not doc.strip():
        return []
    paragraphs = []
    for paragraph in _BLANK_LINES.split(inspect.cleandoc(doc)):
        paragraph = paragraph.strip("\n").rstrip()
        if paragraph.strip() and ">>>" not in paragraph:
            paragraphs.extend(_split_long(paragraph, passage_chars))
    passages, current = [], ""
    for paragraph in paragraphs:
        if current and len(current) + 2 + len(paragraph) > passage_chars:
            passages.append(current)
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        passages.append(current)
    return [p.strip() for p in passages]


def _split_long(paragraph: str, passage_chars: int) -> list[str]:
    """Cut a paragraph longer than passage_chars at sentence ends, else at spaces."""
    if len(paragraph) <= passage_chars:
        return [paragraph]
    pieces, current = [], ""
    for sentence in _SENTENCE_END.split(paragraph):
        words = [sentence] if len(sentence) <= passage_chars else sentence.split(" ")
        for word in words:
            joiner = " " if current else ""
            if current and len(current) + len(joiner) + len(word) > passage_chars:
                pieces.append(current)
                current, joiner = "", ""
            current = f"{current}{joiner}{word}"
    if current:
        pieces.append(current)
    return pieces
