"""A run's metrics.jsonl as rows, read back for the report, the comparison and TensorBoard.

One JSON object per line. Training rows hold "iteration" and that iteration's metrics and no
"kind"; eval rows say `"kind": "eval"` and hold "iteration" with the eval_* and forget_*
metrics. Which keys a row has depends on the algorithm (SFT has no reward, DPO has pairs), so
every reader here asks for a key and takes None when a run has none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TRAIN, EVAL = "train", "eval"


def row_kind(row: dict) -> str:
    return row.get("kind", TRAIN)


def is_number(value) -> bool:
    # JSON true/false load as bool, a subclass of int: a flag is not a metric to plot or sum.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def numeric_scalars(row: dict) -> dict[str, float]:
    """The row's metrics that are numbers; the iteration is the step, not a metric."""
    return {key: float(value) for key, value in row.items() if key != "iteration" and is_number(value)}


def parse_rows(text: str) -> list[dict]:
    lines = text.split("\n")
    # The run appends and flushes whole lines; a reader that catches it mid-write sees the
    # last line without its newline, and leaves it for the next read.
    complete = lines[:-1] if not text.endswith("\n") else lines
    return [json.loads(line) for line in complete if line.strip()]


@dataclass
class RunMetrics:
    train: list[dict]
    eval: list[dict]

    @classmethod
    def read(cls, run_dir: str | Path) -> "RunMetrics":
        """Raises FileNotFoundError for a directory without metrics.jsonl."""
        rows = parse_rows((Path(run_dir) / "metrics.jsonl").read_text())
        return cls(train=[r for r in rows if row_kind(r) == TRAIN], eval=[r for r in rows if row_kind(r) == EVAL])

    def rows(self, kind: str) -> list[dict]:
        return self.eval if kind == EVAL else self.train

    def series(self, kind: str, key: str) -> tuple[list[int], list[float]]:
        """(iterations, values) of the rows of that kind that hold a number under `key`."""
        points = [(row["iteration"], float(row[key])) for row in self.rows(kind) if is_number(row.get(key))]
        return [i for i, _ in points], [v for _, v in points]

    def first(self, kind: str, key: str) -> float | None:
        values = self.series(kind, key)[1]
        return values[0] if values else None

    def last(self, kind: str, key: str) -> float | None:
        values = self.series(kind, key)[1]
        return values[-1] if values else None

    def total(self, kind: str, key: str) -> float | None:
        values = self.series(kind, key)[1]
        return sum(values) if values else None
