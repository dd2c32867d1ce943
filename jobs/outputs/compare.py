"""Compare finished (or running) runs: `python -m jobs.outputs.compare DIR_A DIR_B ... [--output DIR]`.

Prints one line per run (what it reached, what it gained, what it forgot, what it cost) and
writes compare.png and a self-contained compare.html into --output (default: here).

- target: the held-out greedy pass@1 (`eval_pass1`) of the last eval row when the run has
  eval rows, else the training reward (`reward_mean`) of the last iteration
- gain: target minus the same metric's first value (the first eval row, or iteration 0)
- forget_kl, rank>1: `forget_kl` and `forget_rank_gt1` of the last eval row
- wall_s: the run's wall time as its rows tell it: start to first iteration (`seconds_to_first_iteration`,
  once per start of a resumed run) + every `iteration_seconds` + the last eval's `eval_seconds` when it
  evaluated the last iteration (the run waits for that one); the moments between iterations (writing rows,
  report.html) are in no row, so it is a little short of the clock; "-" for rows without
  seconds_to_first_iteration (runs older than that metric)
- tokens: generated plus trained tokens, summed
The plot: held-out accuracy (`eval_pass1`) and training reward (`reward_mean`) on their own panels,
forget_kl where measured, and wall_s.
"""

from __future__ import annotations

import argparse
import html
import io
import sys
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jobs.outputs.metrics_rows import EVAL, TRAIN, RunMetrics, is_number
from jobs.core.atomic_files import write_atomically
from jobs.outputs.report import STYLE, png_data_uri, spec_fields

# The held-out metric wins: the training reward is measured on the problems being trained on.
TARGETS = ((EVAL, "eval_pass1"), (TRAIN, "reward_mean"))


@dataclass
class RunSummary:
    run_dir: Path
    name: str
    algorithm: str
    iterations: int
    target_kind: str | None
    target_metric: str | None
    final: float | None
    gain: float | None
    forget_kl: float | None
    forget_rank_gt1: float | None
    wall_seconds: float | None
    tokens: int | None


def total_tokens(metrics: RunMetrics) -> int | None:
    totals = [metrics.total(TRAIN, key) for key in ("generated_tokens", "train_tokens")]
    present = [t for t in totals if t is not None]
    return int(sum(present)) if present else None


def wall_seconds(metrics: RunMetrics) -> float | None:
    """Start-up, iterations and the wait for the last eval, from the rows (the module docstring says what is missed)."""
    if not metrics.train or not is_number(metrics.train[0].get("seconds_to_first_iteration")):
        return None
    seconds = metrics.total(TRAIN, "seconds_to_first_iteration") + (metrics.total(TRAIN, "iteration_seconds") or 0.0)
    last_eval = metrics.eval[-1] if metrics.eval else {}
    if last_eval.get("iteration") == metrics.train[-1]["iteration"] and is_number(last_eval.get("eval_seconds")):
        seconds += last_eval["eval_seconds"]
    return seconds


def summarize(run_dir: str | Path, metrics: RunMetrics | None = None) -> RunSummary:
    run_dir = Path(run_dir)
    if metrics is None:
        metrics = RunMetrics.read(run_dir)
    spec_path = run_dir / "spec.yaml"
    spec = spec_fields(spec_path.read_text()) if spec_path.is_file() else {}
    kind, key = next(((k, m) for k, m in TARGETS if metrics.last(k, m) is not None), (None, None))
    final = metrics.last(kind, key) if key else None
    return RunSummary(
        run_dir=run_dir,
        name=str(spec.get("name", run_dir.name)),
        algorithm=str(spec.get("algorithm", "?")),
        iterations=len(metrics.train),
        target_kind=kind,
        target_metric=key,
        final=final,
        gain=final - metrics.first(kind, key) if key else None,
        forget_kl=metrics.last(EVAL, "forget_kl"),
        forget_rank_gt1=metrics.last(EVAL, "forget_rank_gt1"),
        wall_seconds=wall_seconds(metrics),
        tokens=total_tokens(metrics),
    )


def labels(summaries: list[RunSummary]) -> list[str]:
    """Spec names, with the folder added where two runs share one (the same config with other --set)."""
    names = [s.name for s in summaries]
    return [s.name if names.count(s.name) == 1 else f"{s.name} ({s.run_dir.name})" for s in summaries]


def cell(value, form: str) -> str:
    return "-" if value is None else form.format(value)


# (header, RunSummary attribute, format)
COLUMNS = (
    ("algorithm", "algorithm", "{}"),
    ("iters", "iterations", "{:d}"),
    ("target", "target_metric", "{}"),
    ("final", "final", "{:.3f}"),
    ("gain", "gain", "{:+.3f}"),
    ("forget_kl", "forget_kl", "{:.4f}"),
    ("rank>1", "forget_rank_gt1", "{:.3f}"),
    ("wall_s", "wall_seconds", "{:.1f}"),
    ("tokens", "tokens", "{:d}"),
)


TEXT_COLUMNS = ("run", "algorithm", "target")


def table_cells(summaries: list[RunSummary]) -> tuple[list[str], list[list[str]]]:
    headers = ["run"] + [header for header, _, _ in COLUMNS]
    rows = [
        [label] + [cell(getattr(s, attribute), form) for _, attribute, form in COLUMNS]
        for label, s in zip(labels(summaries), summaries)
    ]
    return headers, rows


def format_table(summaries: list[RunSummary]) -> str:
    headers, rows = table_cells(summaries)
    widths = [max(len(line[i]) for line in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        # Words read left to right; numbers line up on the right.
        return "  ".join(c.ljust(w) if h in TEXT_COLUMNS else c.rjust(w) for c, w, h in zip(cells, widths, headers))

    return "\n".join([line(headers), *(line(row) for row in rows)])


# (row kind, metric, panel title): a panel for each that some run has, one line per run.
PANELS = (
    (EVAL, "eval_pass1", "eval accuracy (eval_pass1, held-out)"),
    (TRAIN, "reward_mean", "training reward (reward_mean)"),
    (EVAL, "forget_kl", "forget_kl"),
)


def compare_figure(summaries: list[RunSummary], runs: list[RunMetrics]) -> Figure:
    """Held-out accuracy, training reward and (where measured) forgetting against iteration; cost in wall seconds."""
    names = labels(summaries)
    shown = [(kind, key, title) for kind, key, title in PANELS if any(run.series(kind, key)[0] for run in runs)]
    panels = len(shown) + 1
    figure = Figure(figsize=(4.6 * panels, 3.4), dpi=90, layout="tight")
    FigureCanvasAgg(figure)
    for position, (kind, key, title) in enumerate(shown, start=1):
        axes = figure.add_subplot(1, panels, position)
        for name, run in zip(names, runs):
            iterations, values = run.series(kind, key)
            if iterations:
                axes.plot(iterations, values, marker="o", label=name)
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("iteration")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    cost = figure.add_subplot(1, panels, panels)
    cost.bar(range(len(names)), [s.wall_seconds or 0.0 for s in summaries])
    cost.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    cost.set_title("cost: wall seconds (wall_s)", fontsize=10)
    return figure


def compare_png(summaries: list[RunSummary], runs: list[RunMetrics]) -> bytes:
    buffer = io.BytesIO()
    compare_figure(summaries, runs).savefig(buffer, format="png")
    return buffer.getvalue()


def compare_html(summaries: list[RunSummary], png: bytes) -> str:
    headers, rows = table_cells(summaries)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    numeric = [h not in TEXT_COLUMNS for h in headers]
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if n else ''}>{html.escape(c)}</td>" for c, n in zip(row, numeric)) + "</tr>"
        for row in rows
    )
    links = "".join(
        f"<li>{html.escape(label)}: <code>{html.escape(str(s.run_dir.resolve()))}</code>"
        + (f" (<a href=\"{(s.run_dir / 'report.html').resolve().as_uri()}\">report</a>)"
           if (s.run_dir / "report.html").is_file() else "")
        + "</li>"
        for label, s in zip(labels(summaries), summaries)
    )
    legend = html.escape(__doc__.split("\n\n")[-1].strip())  # the docstring's last paragraph: what each column means
    return (
        f"<!DOCTYPE html><html><head><meta charset=utf-8><title>hintflow runs compared</title>"
        f"<style>{STYLE}</style></head><body><h1>hintflow runs compared</h1>"
        f"<table><tr>{head}</tr>{body}</table><pre class=note>{legend}</pre>"
        f"<img alt=\"runs compared\" src=\"{png_data_uri(png)}\"><h2>Runs</h2><ul>{links}</ul></body></html>\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.outputs.compare", description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="DIR", help="run output directories (each holds metrics.jsonl)")
    parser.add_argument("--output", default=".", help="where compare.png and compare.html go (default: here)")
    args = parser.parse_args(argv)
    run_dirs = [Path(d) for d in args.run_dirs]
    for run_dir in run_dirs:
        if not (run_dir / "metrics.jsonl").is_file():
            print(f"jobs.outputs.compare: {run_dir} has no metrics.jsonl; expected a run's output directory "
                  f"(python -m jobs.run SPEC --output-dir DIR)", file=sys.stderr)
            return 2
    runs = [RunMetrics.read(d) for d in run_dirs]
    summaries = [summarize(d, run) for d, run in zip(run_dirs, runs)]
    print(format_table(summaries))
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    png = compare_png(summaries, runs)
    (output / "compare.png").write_bytes(png)
    write_atomically(output / "compare.html", compare_html(summaries, png))
    print(f"wrote {output / 'compare.png'} and {output / 'compare.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
