"""A learner rank killed mid-iteration: one line naming the rank and the last good checkpoint, and a resume
that works; or, with faults.job_restarts, the job restarting itself from that checkpoint.

Both happen to one run (the `failed_then_restarted` fixture), because starting a job costs most of
a minute on 2 cores: the job fails in one line, the command that line prints resumes it with
faults.job_restarts=1 added (a resume may change faults.*), and a learner killed in the resumed
job makes it restart itself and finish.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys

import pytest

from tests.conftest import read_jsonl
from tests.job_process import JobProcess

pytestmark = pytest.mark.integration

# Several epochs over 64 samples keep the learners inside `train` for seconds (about 0.35 s an epoch
# on 2 idle cores), long enough to be caught there: the poll below finds the process within a few
# tens of milliseconds of the call starting. Every iteration of the run pays for these epochs, so
# no more than that.
FAILURE_ARGS = (
    "configs/onpolicy_idft.yaml", "--set", "checkpoint.every=1", "--set", "rollout.workers=1",
    "--set", "rollout.prompts_per_iteration=32", "--set", "train.epochs_per_iteration=6",
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


@pytest.fixture(scope="module")
def failed_then_restarted(tmp_path_factory):
    """What each of the two jobs did: the one that fails in one line, and its resume that restarts itself."""
    out = tmp_path_factory.mktemp("learner-failure") / "run"
    seen: dict = {"out": out}
    job = JobProcess(*FAILURE_ARGS, "--output-dir", str(out))
    try:
        kill_a_learner_in_training(job)
        seen["failed_code"] = job.finish(timeout=300)
    except BaseException:
        job.kill_everything()
        raise
    seen["failed_output"] = job.output()[-4000:]
    seen["failed_lines"] = "".join(job.stderr).strip().splitlines()
    seen["left_behind"] = job.wait_until_no_process_left(timeout=60)
    match = FAILED.match(seen["failed_lines"][0]) if len(seen["failed_lines"]) == 1 else None
    if match is None:
        return seen  # no resume command to run: the first test says what the job printed instead

    command = shlex.split(match.group(3))
    seen["command"] = command
    resumed = JobProcess(*command[3:], "--set", "faults.job_restarts=1")
    try:
        kill_a_learner_in_training(resumed)
        seen["resumed_code"] = resumed.finish(timeout=600)
    except BaseException:
        resumed.kill_everything()
        raise
    seen["resumed_stdout"] = "".join(resumed.stdout)
    seen["resumed_output"] = resumed.output()[-4000:]
    return seen


def test_a_dead_learner_fails_the_job_in_one_line_and_the_named_checkpoint_resumes(failed_then_restarted):
    seen = failed_then_restarted
    out = seen["out"]
    assert seen["failed_code"] == 1, seen["failed_output"]
    lines = seen["failed_lines"]
    assert len(lines) == 1, seen["failed_output"]
    match = FAILED.match(lines[0])
    assert match, lines[0]
    assert match.group(2) == str(out / "checkpoints" / "iter-0")
    assert not seen["left_behind"]

    assert seen["command"][:3] == [sys.executable, "-m", "jobs.run"]
    assert seen["resumed_code"] == 0, seen["resumed_output"]
    assert f"resuming at iteration 1 from {out / 'checkpoints' / 'iter-0'}" in seen["resumed_stdout"]
    assert [m["iteration"] for m in read_jsonl(out / "metrics.jsonl")] == [0, 1, 2]
    # The printed command as it was, plus the one setting added here.
    assert read_jsonl(out / "resumes.jsonl")[-1]["spec_changes"] == {"faults.job_restarts": [0, 1]}


def test_with_job_restarts_the_job_restarts_itself_from_the_last_checkpoint(failed_then_restarted):
    seen = failed_then_restarted
    out = seen["out"]
    assert "resumed_code" in seen, f"the first job printed no resume command:\n{seen['failed_output']}"
    assert seen["resumed_code"] == 0, seen["resumed_output"]
    stdout = seen["resumed_stdout"]
    assert f"restarting from {out / 'checkpoints' / 'iter-0'} (restart 1 of faults.job_restarts=1)" in stdout
    assert "finished 3 iteration(s)" in stdout
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [0, 1, 2]
    assert metrics[1]["resumed_from"] == str(out / "checkpoints" / "iter-0")
