"""Ctrl-C and SIGTERM: a resumable checkpoint, one line with the resume command, the documented exit code,
and no process of the job left behind. Real Ray, vLLM and DeepSpeed on CPU."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, read_jsonl
from tests.job_process import JobProcess

pytestmark = pytest.mark.integration

# One rollout worker and one learner rank start fastest; 32 prompts x 128 tokens keep an
# iteration's generation long enough to land a signal in it. A first signal lands in iteration 1, in
# the phase its test names; 3 iterations (4 where a resumed run is stopped again) leave a resume at
# least one to run.
STOP_ARGS = (
    "configs/onpolicy_idft.yaml", "--set", "iterations=3", "--set", "rollout.workers=1", "--set", "learner.ranks=1",
    "--set", "rollout.prompts_per_iteration=32", "--set", "rollout.max_new_tokens=128",
)
STOPPED = re.compile(r"^stopped by (SIG\w+) after iteration (\d+): checkpoint (\S+); resume with: (.+)$")


def stop_line(job: JobProcess) -> re.Match:
    lines = "".join(job.stderr).strip().splitlines()
    assert len(lines) == 1, job.output()[-4000:]
    match = STOPPED.match(lines[0])
    assert match, lines[0]
    return match


def stop_with(signum: int, job: JobProcess, whole_group: bool, line: str) -> re.Match:
    """Send `signum` once `line` appears; the job must stop at its next safe point, with its one line and code."""
    job.wait_for_line(line)
    if whole_group:
        job.signal_group(signum)  # a terminal's Ctrl-C reaches every process of the foreground group
    else:
        job.proc.send_signal(signum)  # `ray job stop` and `kill` signal the driver
    code = job.finish(timeout=300)
    assert code == 128 + signum, job.output()[-4000:]
    match = stop_line(job)
    assert match.group(1) == signal.Signals(signum).name
    assert not job.wait_until_no_process_left(timeout=60)
    return match


def test_ctrl_c_while_training_then_sigterm_during_the_resumed_runs_weight_sync(tmp_path):
    """Two stops, two resumable checkpoints, in one run of 4 iterations (one job fewer than a test each).

    Ctrl-C while training: it reaches the learners too (the terminal signals the whole group); the iteration
    still finishes whole, and the stop comes at the safe point after it. Then the printed command resumes the
    run, and SIGTERM (what `ray job stop` and `kill` send, to the driver alone) lands in the resumed run's
    weight sync: the push into the engines finishes, and the checkpoint holds those weights.
    """
    out = tmp_path / "run"
    match = stop_with(signal.SIGINT, JobProcess(*STOP_ARGS, "--set", "iterations=4", "--output-dir", str(out)),
                      whole_group=True, line="iteration 1 (2/4): training on")
    stopped_after, checkpoint = int(match.group(2)), match.group(3)
    assert stopped_after >= 1  # the signal came once iteration 1 was training
    assert Path(checkpoint, "model.safetensors").is_file()
    state = json.loads(Path(checkpoint, "training_state", "loop.json").read_text())
    assert state["next_iteration"] == stopped_after + 1
    assert [m["iteration"] for m in read_jsonl(out / "metrics.jsonl")] == list(range(stopped_after + 1))

    command = shlex.split(match.group(4))
    assert command[:3] == [sys.executable, "-m", "jobs.run"]  # the interpreter that ran the job, not a bare python
    assert stopped_after + 1 < 3, "the Ctrl-C came too late to leave the resumed run an iteration before its last"
    resumed = stop_with(signal.SIGTERM, JobProcess(*command[3:]), whole_group=False,
                        line=f"iteration {stopped_after + 1} ({stopped_after + 2}/4): syncing weights")
    again = int(resumed.group(2))
    assert again == stopped_after + 1  # the resumed run continued where the first stopped, and stopped again
    state = json.loads(Path(resumed.group(3), "training_state", "loop.json").read_text())
    assert state["next_iteration"] == again + 1 < 4  # a checkpoint mid-run: there is still an iteration to resume
    assert [m["iteration"] for m in read_jsonl(out / "metrics.jsonl")] == list(range(again + 1))


def test_a_second_ctrl_c_stops_at_once_without_corrupting_anything(tmp_path):
    out = tmp_path / "run"
    job = JobProcess(*STOP_ARGS, "--set", "checkpoint.every=1", "--output-dir", str(out))
    job.wait_for_line("iteration 1 (2/3): generating")
    job.signal_group(signal.SIGINT)
    job.wait_for_line("SIGINT: stopping at the next safe point")
    job.signal_group(signal.SIGINT)
    assert job.finish(timeout=300) == 130, job.output()[-4000:]
    lines = "".join(job.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stopped at once by SIGINT: "), job.output()[-4000:]
    assert not job.wait_until_no_process_left(timeout=60)
    # Iteration 0 finished (checkpoint.every=1) before the first Ctrl-C, and iteration 1 never did:
    # exactly that checkpoint, complete. Whatever was mid-write is a dot-folder.
    folders = sorted((out / "checkpoints").glob("iter-*"))
    assert [folder.name for folder in folders] == ["iter-0"], folders
    assert (folders[0] / "training_state" / "loop.json").is_file() and (folders[0] / "model.safetensors").is_file()
