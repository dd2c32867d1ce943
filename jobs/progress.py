"""What the terminal shows while a job runs, and the summary at the end."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, iterations: int, stream=sys.stdout):
        self.iterations = iterations
        self.stream = stream
        self.started = time.perf_counter()

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        self._print(f"[hintflow {time.perf_counter() - self.started:6.1f}s] {text}")

    def begin(self, iteration: int, phase: str) -> None:
        self.iteration = iteration
        self.step(phase)

    def step(self, phase: str) -> None:
        self.note(f"iteration {self.iteration + 1}/{self.iterations}: {phase}")

    def end(self, metrics: dict) -> None:
        self.note(
            f"iteration {self.iteration + 1}/{self.iterations} done in {metrics['iteration_seconds']:.1f}s: "
            f"loss {metrics['loss']:.4f}  cll {metrics['cll_mean']:+.4f}  "
            f"gen {metrics['gen_tokens_per_s']:.0f} tok/s  train {metrics['train_tokens_per_s']:.0f} tok/s  "
            f"sync {metrics['sync_seconds']:.2f}s"
        )


def summary(name: str, history: list[dict], output_dir: str, seconds: float) -> str:
    lines = [
        "",
        f"hintflow job '{name}' finished {len(history)} iteration(s) in {seconds:.1f}s",
        f"  {'iter':>4}  {'loss':>9}  {'cll_mean':>9}  {'gen tok/s':>9}  {'train tok/s':>11}  {'sync s':>7}",
    ]
    for m in history:
        lines.append(
            f"  {m['iteration']:>4}  {m['loss']:>9.4f}  {m['cll_mean']:>+9.4f}  {m['gen_tokens_per_s']:>9.0f}  "
            f"{m['train_tokens_per_s']:>11.0f}  {m['sync_seconds']:>7.2f}"
        )
    checkpoint = next((m["checkpoint"] for m in reversed(history) if "checkpoint" in m), None)
    lines += [
        f"  outputs     {output_dir}",
        "  metrics     metrics.jsonl   samples  samples/iter-N.jsonl   spec  spec.yaml",
    ]
    if checkpoint:
        lines.append(f"  checkpoint  {checkpoint}  (HF format: transformers and vLLM load it)")
    return "\n".join(lines)
