"""What the terminal shows while a job runs, and the summary at the end."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from pathlib import Path

from jobs.core.checkpoints import MERGED, is_adapter_checkpoint

# A phase running longer than this gets a line every this many seconds (the tests shorten it).
HEARTBEAT_S = float(os.environ.get("HINTFLOW_HEARTBEAT_S", "10"))

# (metric, header, format): the columns of the summary and the progress line, shown when a run has them.
COLUMNS = [
    ("loss", "loss", "{:.4f}"),
    ("cll_mean", "cll_mean", "{:+.4f}"),
    ("reward_mean", "reward", "{:.3f}"),
    ("first_try_right", "right 1st", "{:.2f}"),
    ("rescued_by_hints", "rescued", "{:.2f}"),
    ("kept_samples", "kept", "{:d}"),
    ("kept_cll_mean", "kept cll", "{:+.3f}"),
    ("reference_cll_mean", "ref cll", "{:+.3f}"),
    ("pairs", "pairs", "{:d}"),
    ("reward_accuracy", "pair acc", "{:.2f}"),
    ("fdpg_constraint_rate", "meets b(x)", "{:.2f}"),
    ("fdpg_divergence", "D_f(pi||p)", "{:.3f}"),
    ("fdpg_kl_to_initial", "KL(pi||a)", "{:.3f}"),
    ("gen_tokens_per_s", "gen tok/s", "{:.0f}"),
    ("train_tokens_per_s", "train tok/s", "{:.0f}"),
    ("sync_seconds", "sync s", "{:.2f}"),
]


def formatted(metrics: dict, key: str, form: str) -> str:
    value = metrics.get(key)
    return "-" if value is None else form.format(value)


class Progress:
    """The job's lines on the terminal, and a heartbeat inside long phases.

    When a phase of an iteration (generating, scoring, training, syncing) runs past `heartbeat_s`,
    a line every `heartbeat_s` says which phase and how long it has run. For a phase that waits on
    a role that counts its work (`counts`: "rollout", "reward", "learner"), the line adds what that
    role's actors have finished out of the total, tokens per second and the time left at that rate,
    read from the job's progress board (actors/progress_board.py, given by `watch`). Otherwise, or
    before anything is counted, it says how long the same phase took the iteration before.
    `quiet` keeps only what the job prints at its end (the summary) and its errors.
    """

    def __init__(self, iterations: int, stream=sys.stdout, quiet: bool = False, heartbeat_s: float = HEARTBEAT_S):
        self.iterations = iterations
        self.stream = stream
        self.quiet = quiet
        self.heartbeat_s = heartbeat_s
        self.started = time.perf_counter()
        self.board = None
        self._lock = threading.Lock()
        self._phase: tuple[str, float] | None = None  # (phase, its start) while one runs
        self._counts: tuple[str, str] | None = None  # (role, unit) the running phase waits on
        self._last_line = 0.0
        self._took: dict[str, float] = {}  # phase (digits dropped) -> seconds it took last time
        self._watcher: threading.Thread | None = None

    def _print(self, text: str) -> None:
        if self.quiet:
            return
        with self._lock:
            print(text, file=self.stream, flush=True)
            self._last_line = time.perf_counter()

    def note(self, text: str) -> None:
        self._print(f"[hintflow {time.perf_counter() - self.started:6.1f}s] {text}")

    def watch(self, board) -> None:
        """Read the actors' counts from this progress board (a Ray actor handle) in heartbeat lines."""
        self.board = board

    def begin(self, iteration: int, phase: str, counts: str | None = None, unit: str = "samples") -> None:
        self.iteration = iteration
        self.step(phase, counts, unit)

    def step(self, phase: str, counts: str | None = None, unit: str = "samples") -> None:
        """`counts`: the role whose actors count this phase's work (in `unit`s), if any."""
        self._enter(phase)
        self._counts = None
        if counts and self.board is not None and not self.quiet:
            import ray

            try:  # waited for: a count the role sends for this phase must not reach the board before it
                ray.get(self.board.open.remote(counts), timeout=10)
                self._counts = (counts, unit)
            except Exception:  # a board that does not answer costs the counts, never the job
                self.board = None
        self.note(f"{self._where()}: {phase}")

    def _where(self) -> str:
        # 0-based like metrics.jsonl and checkpoints/iter-N; the count says how far along the run is.
        return f"iteration {self.iteration} ({self.iteration + 1}/{self.iterations})"

    def end(self, metrics: dict) -> None:
        self._enter(None)
        shown = "  ".join(
            f"{header} {formatted(metrics, key, form)}" for key, header, form in COLUMNS if key in metrics
        )
        self.note(f"{self._where()} done in {metrics['iteration_seconds']:.1f}s: {shown}")

    # ---------------------------------------------------------------- the heartbeat

    @staticmethod
    def _kind(phase: str) -> str:
        return re.sub(r"\d+", "N", phase)

    def _enter(self, phase: str | None) -> None:
        now = time.perf_counter()
        with self._lock:
            if self._phase:
                self._took[self._kind(self._phase[0])] = now - self._phase[1]
            self._phase = (phase, now) if phase else None
        if phase and not self.quiet and self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="hintflow-heartbeat", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.heartbeat_s / 4))
            with self._lock:
                running, last = self._phase, self._last_line
            now = time.perf_counter()
            if running is None or now - running[1] < self.heartbeat_s or now - last < self.heartbeat_s:
                continue
            phase, since = running
            counted = self._counted(now - since)
            before = self._took.get(self._kind(phase))
            estimate = "" if before is None else (
                f"; it took {before:.0f}s last iteration" + (f", ~{before - (now - since):.0f}s left"
                                                             if before > now - since and "left" not in counted else ""))
            self.note(f"{self._where()}: still {phase.split(',')[0]} ({now - since:.0f}s{counted}{estimate})")

    def _counted(self, elapsed: float) -> str:
        """"; 40/64 samples, 812 tok/s, ~15s left" from the board, or "" when nothing is counted yet."""
        counts, board = self._counts, self.board
        if counts is None or board is None:
            return ""
        import ray

        try:
            got = ray.get(board.read.remote(counts[0]), timeout=2)
        except Exception:
            return ""
        if not got or not got["total"]:
            return ""
        done, total = got["done"], got["total"]
        text = f"; {done}/{total} {counts[1]}, {got['tokens'] / max(elapsed, 1e-9):.0f} tok/s"
        if 0 < done < total:
            text += f", ~{elapsed * (total - done) / done:.0f}s left"
        return text


def eval_change(evals: list[dict]) -> str:
    """First and last eval side by side: what training gained, and what it cost elsewhere."""
    first, last = evals[0], evals[-1]
    shown = [("eval_pass1", "pass@1", "{:.2f}"), ("eval_pass_at_k", f"pass@{last.get('eval_k', 'k')}", "{:.2f}"),
             ("eval_transfer_pass1", "transfer pass@1", "{:.2f}"),
             ("eval_reference_cll", "ref cll", "{:+.3f}"), ("forget_kl", "forget kl", "{:.4f}"),
             ("forget_ood_nll", "ood nll", "{:.4f}"),
             ("forget_rank_gt1", "rank>1", "{:.3f}")]
    return "   ".join(f"{header} {form.format(first[key])} -> {form.format(last[key])}"
                       for key, header, form in shown if key in first and key in last)


def skipped_evals(history: list[dict], evals: list[dict]) -> int:
    """Evals skipped over the whole run. Each eval row counts the skips of its start of the run so far
    (`eval_skipped`); a resumed or restarted start (its first row has `resumed_from`) counts from 0 again."""
    starts = sorted(m["iteration"] for m in history if "resumed_from" in m)
    most: dict[int, int] = {}
    for row in evals:
        start = sum(1 for first in starts if row["iteration"] >= first)
        most[start] = max(most.get(start, 0), row.get("eval_skipped") or 0)
    return sum(most.values())


# A run longer than this shows its first and last iteration and every SUMMARY_EVERY-th; metrics.jsonl has all.
SUMMARY_ROWS = 20
SUMMARY_EVERY = 10


def summary_rows(history: list[dict]) -> list[dict]:
    if len(history) <= SUMMARY_ROWS:
        return list(history)
    last = len(history) - 1
    return [m for i, m in enumerate(history) if i in (0, last) or m["iteration"] % SUMMARY_EVERY == 0]


def summary(name: str, history: list[dict], output_dir: str, seconds: float, evals: list[dict] = ()) -> str:
    columns = [(key, header, form) for key, header, form in COLUMNS if any(key in m for m in history)]
    widths = [max(8, len(header)) for _, header, _ in columns]
    lines = [
        "",
        f"hintflow job '{name}' finished {len(history)} iteration(s) in {seconds:.1f}s",
        f"  {'iter':>4}  " + "  ".join(f"{header:>{w}}" for (_, header, _), w in zip(columns, widths)),
    ]
    shown = summary_rows(history)
    for m in shown:
        cells = [f"{formatted(m, key, form):>{w}}" for (key, _, form), w in zip(columns, widths)]
        lines.append(f"  {m['iteration']:>4}  " + "  ".join(cells))
    if len(shown) < len(history):
        lines.append(f"  ({len(history) - len(shown)} of {len(history)} iterations not shown: this is the first, "
                     f"the last and every {SUMMARY_EVERY}th; metrics.jsonl has them all)")
    checkpoint = next((m["checkpoint"] for m in reversed(history) if "checkpoint" in m), None)
    # Offline pairs generate nothing: name samples/ only when the run wrote some.
    wrote_samples = any(Path(output_dir, "samples").glob("iter-*.jsonl"))
    files = "metrics.jsonl" + ("   samples  samples/iter-N.jsonl" if wrote_samples else "") + "   spec  spec.yaml"
    if any("pairs" in m for m in history):
        files += "   pairs  pairs/iter-N.jsonl"
    if evals:
        lines.append(f"  eval        iteration {evals[0]['iteration']} -> {evals[-1]['iteration']}:   {eval_change(evals)}")
        skipped = skipped_evals(history, evals)
        if skipped:
            lines.append(f"  eval        {skipped} eval(s) skipped, {len(evals)} ran: each came due while the one "
                         f"before was still running, and the loop waits for that only up to eval.max_wait_seconds "
                         f"(the last iteration's eval always runs); raise eval.max_wait_seconds or eval.every to run "
                         f"them")
    lines += [f"  outputs     {output_dir}", f"  metrics     {files}",
              f"  report      report.html   tensorboard --logdir {output_dir}/tensorboard"]
    if checkpoint:
        if is_adapter_checkpoint(checkpoint):
            merged = Path(checkpoint) / MERGED
            also = f"; {merged} is the merged model vLLM loads" if merged.is_dir() else ""
            lines.append(f"  checkpoint  {checkpoint}  (LoRA adapter: peft and transformers load it on the base{also})")
        else:
            lines.append(f"  checkpoint  {checkpoint}  (HF format: transformers and vLLM load it)")
    return "\n".join(lines)
