"""Inside a long phase the terminal is not silent: a line every heartbeat, saying the phase, how long it
has run and how long it took the iteration before; --quiet keeps the terminal free of progress lines."""

from __future__ import annotations

import io
import re
import time

import pytest

from jobs.outputs.progress import Progress
from tests.conftest import run_cli

LINE = re.compile(r"^\[hintflow +[\d.]+s\] iteration (\d) \((\d)/3\): still generating \((\d+)s(.*)\)$")


def heartbeats(text: str) -> list[re.Match]:
    return [m for m in map(LINE.match, text.splitlines()) if m]


def test_a_long_phase_gets_a_line_per_heartbeat_with_the_last_iterations_time():
    out = io.StringIO()
    progress = Progress(3, stream=out, heartbeat_s=0.2)
    progress.begin(0, "generating, then CLL-scoring under the same weights")
    time.sleep(0.9)
    progress.step("training on 16 samples")  # a phase that ends before its heartbeat gets none
    progress.end({"iteration_seconds": 1.0})
    progress.begin(1, "generating, then CLL-scoring under the same weights")
    time.sleep(0.5)
    progress.end({"iteration_seconds": 0.5})
    time.sleep(0.5)  # no phase runs: no line
    first = [m for m in heartbeats(out.getvalue()) if m.group(1) == "0"]
    second = [m for m in heartbeats(out.getvalue()) if m.group(1) == "1"]
    assert len(first) >= 2 and all(m.group(4) == "" for m in first)  # nothing to compare with yet
    assert second and all(m.group(4).startswith("; it took 1s last iteration") for m in second)
    assert "still training" not in out.getvalue()
    assert out.getvalue().splitlines()[-1].endswith("iteration 1 (2/3) done in 0.5s: ")  # and none after it


def test_quiet_prints_nothing_while_the_job_runs():
    out = io.StringIO()
    progress = Progress(3, stream=out, quiet=True, heartbeat_s=0.1)
    progress.begin(0, "generating")
    time.sleep(0.4)
    progress.note("writing checkpoint iter-0")
    progress.end({"iteration_seconds": 0.4})
    assert out.getvalue() == ""


@pytest.mark.integration
def test_quiet_job_prints_only_its_summary(tmp_path):
    result = run_cli("configs/onpolicy_idft.yaml", "--output-dir", str(tmp_path / "out"), "--set", "iterations=1",
                     "--quiet")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[hintflow" not in result.stdout and "finished 1 iteration(s)" in result.stdout
