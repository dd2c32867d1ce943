"""Inside a long phase the terminal is not silent: a line every heartbeat, saying the phase, how long it
has run, what the actors have finished of it (samples or pairs, tokens per second, time left, from the
job's progress board) or else how long it took the iteration before; --quiet keeps the terminal free
of progress lines."""

from __future__ import annotations

import io
import re
import time

import pytest

from actors.progress_board import EngineBar, PhaseCounter, ProgressBoard, engine_bar
from jobs.outputs.progress import Progress
from tests.conftest import run_cli
from tests.reward_functions import SLEEPY_SECONDS

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


def test_the_board_sums_the_calls_of_the_phase_it_was_opened_for():
    board = ProgressBoard()
    board.report("rollout", "queued-ahead", 3, 10, 300)  # a generation queued before the phase began
    board.open("rollout")
    assert board.read("rollout") is None  # nothing of this phase counted yet
    board.report("rollout", "worker-0", 4, 8, 40)
    board.report("rollout", "worker-1", 2, 8, 30)
    board.report("rollout", "queued-ahead", 5, 10, 500)
    board.report("learner", "rank-0", 1, 4, 99)
    assert board.read("rollout") == {"done": 6, "total": 16, "tokens": 70}
    board.report("rollout", "worker-0", 8, 8, 80)  # the same call's next count replaces its last
    assert board.read("rollout") == {"done": 10, "total": 16, "tokens": 110}
    board.open("rollout")  # the next phase: the finished calls are gone, the unfinished one stays out
    assert board.read("rollout") is None and board.read("learner") is None


def test_the_engine_bar_counts_what_vllms_offline_loop_tells_a_tqdm_bar():
    # The calls vllm.entrypoints.common.offline._run_engine makes on the bar `use_tqdm` builds, in its order.
    counter = PhaseCounter("rollout", 6)  # no board outside a job: it only counts
    assert counter.board is None
    prompts = ["a", "b", "c"]
    assert engine_bar(counter)(prompts, desc="Rendering prompts") is prompts  # its prompt loop passes through
    bar = engine_bar(counter)(total=3, desc="Processed prompts", dynamic_ncols=True, postfix="est. speed ...")
    finished_tokens = 0
    for n, tokens in [(2, 37), (2, 51), (2, 12)]:  # three requests of n=2 samples finish, one by one
        time.sleep(0.01)
        finished_tokens += tokens
        elapsed = bar.format_dict["elapsed"]
        bar.postfix = f"est. speed input: {100 / elapsed:.2f} toks/s, output: {finished_tokens / elapsed:.2f} toks/s"
        bar.update(n)
        assert (counter.done, counter.tokens) == (bar.n, finished_tokens)
    bar.refresh()
    bar.close()
    assert isinstance(bar, EngineBar) and counter.done == 6


def sleepy_job(tmp_path, *flags: str):
    """One iteration whose reward phase takes 16 x SLEEPY_SECONDS, with a heartbeat every second."""
    return run_cli("configs/onpolicy_idft.yaml", "--output-dir", str(tmp_path / "out"), "--set", "iterations=1",
                   "--set", "reward.sources=[{kind: function, function: 'tests.reward_functions:sleepy_digit_share'}]",
                   *flags, env={"HINTFLOW_HEARTBEAT_S": "1"})


REWARD_LINE = re.compile(r"iteration 0 \(1/1\): still scoring 16 samples for reward \((\d+)s; (\d+)/16 samples, "
                         r"(\d+) tok/s(, ~(\d+)s left)?\)$")


@pytest.mark.integration
def test_a_slow_reward_phase_shows_the_samples_the_reward_actor_has_scored(tmp_path):
    result = sleepy_job(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [m for m in map(REWARD_LINE.search, result.stdout.splitlines()) if m]
    assert 16 * SLEEPY_SECONDS >= 2 and len(lines) >= 2, result.stdout[-3000:]
    done = [int(m.group(2)) for m in lines]
    assert done == sorted(done) and any(0 < d < 16 for d in done), done  # counted while it ran
    # Once part is scored, the rate and the time left come from the count.
    counted = [m for m in lines if int(m.group(2)) > 0]
    assert counted and all(int(m.group(3)) > 0 and m.group(4) for m in counted if int(m.group(2)) < 16)


@pytest.mark.integration
def test_quiet_job_prints_only_its_summary(tmp_path):
    result = sleepy_job(tmp_path, "--quiet")  # phases long enough for heartbeats, which --quiet keeps off
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[hintflow" not in result.stdout and "finished 1 iteration(s)" in result.stdout
