"""Counts from inside a phase, for the driver's heartbeat lines (jobs/outputs/progress.py).

Actors never print progress: Ray would interleave their lines with the driver's and tag each with a
process id. Instead each role pushes what its current call has finished (samples or pairs, and
tokens) to one small named actor of the job, at most once a second, and the driver's heartbeat
reads the sums for the role it is waiting on. The board is named per job (a driver's actors share
its namespace), so a worker that was replaced finds it again by name. Where no board runs (a bench
script, a worker built outside a job) the counters count nothing and cost nothing.
"""

from __future__ import annotations

import re
import time
import uuid

import ray

BOARD_NAME = "hintflow-progress"
PUSH_EVERY_S = 1.0


class ProgressBoard:
    """The Ray actor: one row per call of a role's member (a rollout worker's generate, a learner rank's train)."""

    def __init__(self):
        self._calls: dict[str, dict] = {}
        self._opened: dict[str, float] = {}  # role -> when the driver began waiting on it (this actor's clock)

    def open(self, role: str) -> None:
        """The driver waits on `role` from now: only calls first heard of from now on count."""
        self._opened[role] = time.monotonic()
        # A call still running was started for another phase (generation queued ahead): keep its first-seen
        # time so it stays out of this phase's sums; finished ones are of no more use.
        self._calls = {key: row for key, row in self._calls.items()
                       if row["role"] != role or row["done"] < row["total"]}

    def report(self, role: str, call: str, done: int, total: int, tokens: int) -> None:
        row = self._calls.setdefault(call, {"role": role, "since": time.monotonic()})
        row.update(done=done, total=total, tokens=tokens)

    def read(self, role: str) -> dict | None:
        """{done, total, tokens} summed over the role's calls of the open phase; None when none reported."""
        opened = self._opened.get(role)
        rows = [row for row in self._calls.values()
                if row["role"] == role and opened is not None and row["since"] >= opened]
        if not rows:
            return None
        return {key: sum(row[key] for row in rows) for key in ("done", "total", "tokens")}


def start_progress_board():
    """The job's board (num_cpus=0: it holds a few dicts). A second start in the same driver (a restarted
    job) gets the same actor back."""
    return ray.remote(ProgressBoard).options(name=BOARD_NAME, get_if_exists=True, num_cpus=0).remote()


_board = None
_looked_up = False


def job_board():
    """The board of the job this process serves, looked up once; None outside a job."""
    global _board, _looked_up
    if not _looked_up:
        _looked_up = True
        try:
            _board = ray.get_actor(BOARD_NAME) if ray.is_initialized() else None
        except ValueError:  # no such actor: this worker runs outside a job
            _board = None
    return _board


class PhaseCounter:
    """What one call of an actor has finished, pushed to the board now and then (never blocking the call)."""

    def __init__(self, role: str, total: int):
        self.board = job_board()
        self.role, self.total = role, total
        self.call = uuid.uuid4().hex
        self.done = self.tokens = 0
        self._pushed = 0.0
        self._push(force=True)

    def add(self, done: int = 0, tokens: int = 0) -> None:
        self.done += done
        self.tokens += tokens
        self._push()

    def set(self, done: int, tokens: int) -> None:
        self.done, self.tokens = done, tokens
        self._push()

    def finish(self) -> None:
        self._push(force=True)

    def _push(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.board is None or (not force and now - self._pushed < PUSH_EVERY_S):
            return
        self._pushed = now
        self.board.report.remote(self.role, self.call, self.done, self.total, self.tokens)


# vLLM's LLM.generate takes `use_tqdm` as a factory of tqdm bars. It tells the bar each finished request,
# and the output tokens of all finished requests only inside the bar's postfix, as a rate over the
# bar's own `elapsed`; the count is read back from that text (no tokens when a version writes it otherwise).
OUTPUT_RATE = re.compile(r"output: ([0-9.]+) toks/s")


class EngineBar:
    """The part of a tqdm bar that vLLM's offline loop uses, counting into a PhaseCounter instead of drawing."""

    def __init__(self, counter: PhaseCounter):
        self.counter = counter
        self.n = 0
        self.postfix = ""
        self._started = time.perf_counter()
        self._elapsed = 0.0

    @property
    def format_dict(self) -> dict:
        self._elapsed = max(time.perf_counter() - self._started, 1e-9)
        return {"elapsed": self._elapsed}

    def update(self, n: int = 1) -> None:
        self.n += n
        rate = OUTPUT_RATE.search(str(self.postfix or ""))
        self.counter.set(self.n, round(float(rate.group(1)) * self._elapsed) if rate else self.counter.tokens)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        self.counter.finish()


def engine_bar(counter: PhaseCounter):
    """`use_tqdm=` for LLM.generate: finished requests and their tokens go to `counter`. vLLM also hands
    the factory an iterable to wrap (its prompt rendering); that passes through uncounted."""
    def make(iterable=None, **kwargs):
        return iterable if iterable is not None else EngineBar(counter)

    return make
