"""Ctrl-C, SIGTERM and `ray job stop`: finish at the next safe point, with a checkpoint to resume from.

The first signal only raises a flag, which the loop reads between stages, so
no Ray call is cut in half. A second one raises KeyboardInterrupt at once:
nothing half-written can be mistaken for a checkpoint (jobs/core/checkpoints.py
commits by rename), so stopping hard is still safe, it just saves nothing new.

Exit codes: 130 after SIGINT, 143 after SIGTERM (128 + the signal number, as
shells report a job killed by that signal), whether the stop was graceful or
immediate; the last line on stderr says which checkpoint holds the run.
"""

from __future__ import annotations

import signal
import sys


class StopRequests:
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, stream=sys.stdout):
        self.stream = stream
        self.signal: int | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else ""

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signal) if self.signal else 1

    def install(self) -> None:
        """Take over SIGINT and SIGTERM. Call it again after ray.init: Ray's driver puts its own SIGTERM
        handler in place there (it dumps a native stack and exits)."""
        for signum in self.SIGNALS:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        print(
            f"[hintflow] {signal.Signals(signum).name}: stopping at the next safe point with a checkpoint "
            f"(send it again to stop at once, without a new checkpoint)",
            file=self.stream, flush=True,
        )
