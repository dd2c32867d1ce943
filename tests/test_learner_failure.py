"""A learner rank killed mid-iteration: one line naming the rank and the last good checkpoint, and a resume
that works; or, with faults.job_restarts, the job restarting itself from that checkpoint."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, read_jsonl
from tests.job_process import JobProcess

pytestmark = pytest.mark.integration

# Many epochs over 64 samples keep the learners inside `train` long enough to be caught there.
FAILURE_ARGS = (
    "configs/onpolicy_idft.yaml", "--set", "checkpoint.every=1", "--set", "rollout.workers=1",
    "--set", "rollout.prompts_per_iteration=32", "--set", "train.epochs_per_iteration=30",
)
FAILED = re.compile(
    r"^learner failure: learner rank (\d) died while training in iteration 1 \(.*\); "
    r"last good checkpoint: (\S+); resume with: (.+)$"
)


def kill_a_learner_in_training(job: JobProcess) -> int:
    job.wait_for_line("iteration 1 (2/3): training on")
    training: list[int] = []

    def a_learner_is_training() -> bool:
        # Ray titles a worker process with the method it is running.
        training.extend(pid for pid, args in job.processes() if args.startswith("ray::Learner.train"))
        return bool(training)

    job.wait_until(a_learner_is_training, "a learner process inside train", timeout=60, poll=0.02)
    os.kill(training[0], signal.SIGKILL)
    return training[0]


def test_a_dead_learner_fails_the_job_in_one_line_and_the_named_checkpoint_resumes(tmp_path):
    out = tmp_path / "run"
    job = JobProcess(*FAILURE_ARGS, "--output-dir", str(out))
    kill_a_learner_in_training(job)
    assert job.finish(timeout=300) == 1, job.output()[-4000:]
    lines = "".join(job.stderr).strip().splitlines()
    assert len(lines) == 1, job.output()[-4000:]
    match = FAILED.match(lines[0])
    assert match, lines[0]
    assert match.group(2) == str(out / "checkpoints" / "iter-0")
    assert not job.wait_until_no_process_left(timeout=60)

    command = shlex.split(match.group(3))
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resuming at iteration 1 from {out / 'checkpoints' / 'iter-0'}" in resumed.stdout
    assert [m["iteration"] for m in read_jsonl(out / "metrics.jsonl")] == [0, 1, 2]


def test_with_job_restarts_the_job_restarts_itself_from_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    job = JobProcess(*FAILURE_ARGS, "--set", "faults.job_restarts=1", "--output-dir", str(out))
    kill_a_learner_in_training(job)
    assert job.finish(timeout=600) == 0, job.output()[-4000:]
    stdout = "".join(job.stdout)
    assert f"restarting from {out / 'checkpoints' / 'iter-0'} (restart 1 of faults.job_restarts=1)" in stdout
    assert "finished 3 iteration(s)" in stdout
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [0, 1, 2]
    assert metrics[1]["resumed_from"] == str(out / "checkpoints" / "iter-0")
