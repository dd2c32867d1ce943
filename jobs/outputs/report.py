"""DIR/report.html: one self-contained page with a run's curves, latest metrics and spec.

    python -m jobs.outputs.report DIR      (the driver also rewrites it after every iteration)

The plots are PNGs embedded as data URIs, so the page can be mailed or copied on its own.
Each plot appears only when the run has one of its series (SFT has no reward, only eval rows
have forgetting). It is rewritten whole (temp file + rename): a browser reloading it while
the run goes never sees half a page.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jobs.core.atomic_files import write_atomically
from jobs.outputs.metrics_rows import EVAL, TRAIN, RunMetrics, is_number


@dataclass(frozen=True)
class Panel:
    """One axes: series that share a scale, each (row kind, metric key)."""

    title: str
    series: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Plot:
    title: str
    panels: tuple[Panel, ...]


PLOTS = (
    Plot("Reward and accuracy", (Panel("reward, fraction right", (
        (TRAIN, "reward_mean"), (TRAIN, "first_try_right"), (TRAIN, "reward_accuracy"),
        (EVAL, "eval_pass1"), (EVAL, "eval_pass_at_k"), (EVAL, "eval_transfer_pass1"),
    )),)),
    Plot("Loss", (Panel("loss", ((TRAIN, "loss"),)),)),
    Plot("CLL (centered log-likelihood)", (Panel("CLL", (
        (TRAIN, "cll_mean"), (TRAIN, "kept_cll_mean"), (TRAIN, "reference_cll_mean"), (EVAL, "eval_reference_cll"),
    )),)),
    # Different units: one panel each.
    Plot("Forgetting", tuple(Panel(key, ((EVAL, key),)) for key in (
        "forget_kl", "forget_rank_mean", "forget_rank_gt1", "forget_centroid_shift", "forget_ood_nll",
    ))),
    Plot("Throughput", (
        Panel("tokens/s", ((TRAIN, "gen_tokens_per_s"), (TRAIN, "train_tokens_per_s"))),
        Panel("seconds per iteration", ((TRAIN, "iteration_seconds"),)),
    )),
)

PANEL_INCHES = (4.4, 3.0)
DPI = 90


def series_label(metrics: RunMetrics, key: str) -> str:
    k = metrics.last(EVAL, "eval_k")
    return f"{key} (k={k:g})" if key == "eval_pass_at_k" and k is not None else key


def plot_png(metrics: RunMetrics, plot: Plot) -> bytes | None:
    """The plot as PNG bytes, with only the panels that have data; None when none has."""
    panels = [p for p in plot.panels if any(metrics.series(kind, key)[0] for kind, key in p.series)]
    if not panels:
        return None
    figure = Figure(figsize=(PANEL_INCHES[0] * len(panels), PANEL_INCHES[1]), dpi=DPI, layout="tight")
    FigureCanvasAgg(figure)
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for kind, key in panel.series:
            iterations, values = metrics.series(kind, key)
            if iterations:
                # Eval rows are sparser and measured apart from training: dashed, with larger markers.
                style = dict(linestyle="--", marker="o") if kind == EVAL else dict(linestyle="-", marker=".")
                axes.plot(iterations, values, label=series_label(metrics, key), **style)
        axes.set_title(panel.title, fontsize=10)
        axes.set_xlabel("iteration")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def formatted(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def metrics_table(title: str, row: dict | None) -> str:
    if row is None:
        return f"<div class=table><h3>{html.escape(title)}</h3><p>none yet</p></div>"
    cells = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td{' class=num' if is_number(value) else ''}>"
        f"{html.escape(formatted(value))}</td></tr>"
        for key, value in row.items() if key != "kind"
    )
    return f"<div class=table><h3>{html.escape(title)} (iteration {row.get('iteration')})</h3><table>{cells}</table></div>"


def spec_fields(spec_text: str) -> dict:
    try:
        fields = yaml.safe_load(spec_text)
    except yaml.YAMLError:
        return {}
    return fields if isinstance(fields, dict) else {}


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.plots { display: flex; flex-wrap: wrap; gap: 1em 2em; }
figure { margin: 0; }
figcaption { font-size: 1.2em; font-weight: 600; margin: 0.8em 0 0.3em; }
img { max-width: 100%; display: block; }
.tables { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { padding: 0.15em 0.6em; border-bottom: 1px solid #ddd; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 1em; font-size: 0.85em; overflow-x: auto; }
.note { color: #666; }
"""


def report_html(run_dir: Path, metrics: RunMetrics, spec_text: str | None) -> str:
    spec = spec_fields(spec_text or "")
    name = str(spec.get("name", run_dir.name))
    planned = spec.get("iterations")
    facts = [
        f"algorithm {spec.get('algorithm', '?')}",
        f"{len(metrics.train)} training iteration(s) recorded" + (f" of {planned}" if planned is not None else ""),
        f"{len(metrics.eval)} eval row(s)",
        f"updated {time.strftime('%Y-%m-%d %H:%M:%S')}",
    ]
    parts = [
        f"<!DOCTYPE html><html><head><meta charset=utf-8><title>{html.escape(name)}: hintflow report</title>"
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(name)}</h1>",
        f"<p>{html.escape(' · '.join(facts))}</p>",
        f"<p class=note>{html.escape(str(run_dir))}</p>",
    ]
    if (run_dir / "tensorboard").is_dir():
        parts.append(f"<p class=note>every metric: <code>tensorboard --logdir "
                     f"{html.escape(str(run_dir / 'tensorboard'))}</code></p>")
    parts.append("<div class=plots>")
    for plot in PLOTS:
        png = plot_png(metrics, plot)
        if png is not None:
            parts.append(f"<figure><figcaption>{html.escape(plot.title)}</figcaption>"
                         f"<img alt=\"{html.escape(plot.title)}\" src=\"{png_data_uri(png)}\"></figure>")
    parts.append("</div>")
    last_train = metrics.train[-1] if metrics.train else None
    last_eval = metrics.eval[-1] if metrics.eval else None
    parts.append("<h2>Latest metrics</h2><div class=tables>"
                 + metrics_table("Last training row", last_train) + metrics_table("Last eval row", last_eval) + "</div>")
    spec_block = html.escape(spec_text) if spec_text is not None else "spec.yaml not found"
    parts.append(f"<h2>Spec (resolved)</h2><pre>{spec_block}</pre></body></html>\n")
    return "\n".join(parts)


def write_report(run_dir: str | Path) -> Path:
    """Builds DIR/report.html from DIR/metrics.jsonl and DIR/spec.yaml; returns its path."""
    run_dir = Path(run_dir).resolve()
    metrics = RunMetrics.read(run_dir)
    spec_path = run_dir / "spec.yaml"
    spec_text = spec_path.read_text() if spec_path.is_file() else None
    path = run_dir / "report.html"
    write_atomically(path, report_html(run_dir, metrics, spec_text))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.outputs.report", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a run's output directory (it holds metrics.jsonl)")
    args = parser.parse_args(argv)
    if not (Path(args.run_dir) / "metrics.jsonl").is_file():
        print(f"jobs.outputs.report: {args.run_dir} has no metrics.jsonl; expected a run's output directory", file=sys.stderr)
        return 2
    print(write_report(args.run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
