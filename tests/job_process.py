"""A job run the way a terminal runs it, for tests that signal or kill it while it works.

The job gets its own session (as a shell job would), with SIGINT at its default: a
process that a non-interactive shell starts in the background inherits SIGINT as
ignored, which would make a Ctrl-C test pass or fail for the wrong reason. Every
process of the job, Ray's included, stays in that session, so the test can check
that none is left behind, and clean up after a kill -9.

`run_job` is the plain case: a job run to its end, for fixtures that several tests share.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import REPO, read_jsonl, run_cli


def run_job(tmp_path_factory, name: str, *args: str):
    """A job run to its end through the CLI, keeping every iteration's checkpoint: (output dir, metrics rows,
    the finished process). The preference tests replay stage s under the weights of stage s-1."""
    out = tmp_path_factory.mktemp(name)
    result = run_cli(*args, "--output-dir", str(out), "--set", "checkpoint.every=1", "--set", "checkpoint.keep_last=100")
    assert result.returncode == 0, f"job failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return out, read_jsonl(out / "metrics.jsonl"), result


def session_processes(session: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live process in a session."""
    result = subprocess.run(["ps", "-eo", "pid=,sid=,stat=,args="], capture_output=True, text=True)
    found = []
    for line in result.stdout.splitlines():
        pid, sid, stat, args = line.split(None, 3)
        if int(sid) == session and not stat.startswith("Z"):
            found.append((int(pid), args))
    return found


class JobProcess:
    def __init__(self, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.run", *args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})}, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _drain(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def wait_until(self, condition, what: str, timeout: float = 300, poll: float = 0.005) -> None:
        """Poll `condition()` until it holds; fail if the job exits first or time runs out."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"the job exited ({self.proc.returncode}) before {what}:\n{self.output()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s:\n{self.output()[-4000:]}")
            time.sleep(poll)

    def wait_for_line(self, text: str, timeout: float = 300) -> None:
        self.wait_until(lambda: any(text in line for line in list(self.stdout)), f"line containing {text!r}", timeout)

    def wait_for_path(self, path: Path, timeout: float = 300) -> None:
        self.wait_until(path.exists, str(path), timeout)

    def processes(self) -> list[tuple[int, str]]:
        return session_processes(self.proc.pid)

    def signal_group(self, signum: int) -> None:
        """What a terminal does on Ctrl-C: the signal goes to the job's whole foreground process group."""
        os.killpg(self.proc.pid, signum)

    def kill_everything(self) -> None:
        """kill -9 of the job and every process it started (Ray's too)."""
        for pid, _ in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=60)

    def finish(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def wait_until_no_process_left(self, timeout: float = 60) -> list[tuple[int, str]]:
        """What is still alive in the job's session after `timeout` seconds (empty when all is gone)."""
        deadline = time.monotonic() + timeout
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.5)
        return self.processes()

    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)
