"""The first hour of a new user (issue 26): what the CLI takes and prints, tested without starting a job.

--set with several assignments, the printed resume command, the compare table's wall time and its
plot panels, the end-of-run summary of a long run and its skipped evals, the unknown-field
suggestion, DeepSpeed's CPU notice and the name of the CLL share metric.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobs import run as run_module
from jobs.outputs.compare import compare_figure, main as compare_main, summarize
from jobs.core.errors import SpecError
from jobs.outputs.metrics_rows import RunMetrics
from jobs.outputs.progress import summary
from jobs.run import parse_args, resume_command, silence_deepspeed_cpu_notice
from jobs.core.spec import validate_spec
from tests.synthetic_runs import eval_row, train_row, write_run

# --set


def test_one_set_takes_several_assignments_and_may_repeat():
    args = parse_args(["configs/hinted_idft.yaml", "--set", "a=1", "b.c=2", "--set", "d=3", "--check"])
    assert (args.spec, args.overrides, args.check) == ("configs/hinted_idft.yaml", ["a=1", "b.c=2", "d=3"], True)
    assert parse_args(["s.yaml", "--set", "train.lr=1e-5"]).overrides == ["train.lr=1e-5"]


def test_a_spec_after_set_is_named_in_the_error(capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--set", "a=1", "configs/hinted_idft.yaml"])
    assert stopped.value.code == 2
    assert "give the spec first" in capsys.readouterr().err


def test_the_help_says_set_takes_several(capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--help"])
    assert stopped.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "one or more KEY=VALUE per --set" in help_text and "--set may repeat" in help_text


# The resume command


def resume_args() -> argparse.Namespace:
    return argparse.Namespace(spec="configs/my spec.yaml", overrides=["train.lr=1e-5", "name=it's"])


def test_resume_command_here_starts_with_this_interpreter(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.setattr(sys, "executable", "/opt/my env/bin/python3.11")
    command = resume_command(resume_args(), Path("/runs/a b"))
    assert shlex.split(command) == ["/opt/my env/bin/python3.11", "-m", "jobs.run", "configs/my spec.yaml",
                                    "--set", "train.lr=1e-5", "--set", "name=it's", "--resume", "/runs/a b"]


def test_resume_command_of_a_submitted_job_submits_it_again(monkeypatch):
    # What Ray's job supervisor sets for the entrypoint it starts (and RAY_JOB_ID it strips).
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {}, "metadata": {}}))
    monkeypatch.setattr(sys, "executable", "/opt/venv/bin/python")
    command = resume_command(resume_args(), Path("/runs/a b"))
    assert shlex.split(command) == ["ray", "job", "submit", "--working-dir", ".", "--", "python", "-m", "jobs.run",
                                    "configs/my spec.yaml", "--set", "train.lr=1e-5", "--set", "name=it's",
                                    "--resume", "/runs/a b"]


# jobs.outputs.compare: the wall time, and the plot's panels


def timed_run(run_dir: Path, name: str, startup: list[float], eval_every: int | None = 2) -> Path:
    """write_run's rows, each start of the run (a dict per start: first iteration -> start-up) timed."""
    write_run(run_dir, name=name, iterations=6, eval_every=eval_every)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    starts = dict(zip((0, 3), startup))
    for row in rows:
        if row.get("kind") != "eval" and row["iteration"] in starts:
            row["seconds_to_first_iteration"] = starts[row["iteration"]]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return run_dir


def test_compare_seconds_are_the_wall_time_not_the_iteration_sum(tmp_path, capsys):
    iterations = sum(train_row(i)["iteration_seconds"] for i in range(6))  # 4.5 s
    evaluated = timed_run(tmp_path / "a", "evaluated", [30.0])
    # Start-up + every iteration + the last eval (of the last iteration), which the run waits for.
    assert summarize(evaluated).wall_seconds == pytest.approx(30.0 + iterations + eval_row(5)["eval_seconds"])
    # A resumed run pays each start's start-up; without eval rows nothing is waited for at the end.
    resumed = timed_run(tmp_path / "b", "resumed", [30.0, 20.0], eval_every=None)
    assert summarize(resumed).wall_seconds == pytest.approx(50.0 + iterations)
    assert compare_main([str(evaluated), str(resumed), "--output", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert "wall_s" in header and "seconds" not in header
    wall = {line.split()[0]: line.split()[header.index("wall_s")] for line in lines[1:3]}
    assert wall == {"evaluated": f"{30.0 + iterations + 1.5:.1f}", "resumed": f"{50.0 + iterations:.1f}"}


def test_compare_plots_eval_accuracy_and_reward_on_their_own_panels(tmp_path):
    dirs = [write_run(tmp_path / "evaluated", name="evaluated"), write_run(tmp_path / "plain", name="plain",
                                                                           eval_every=None)]
    runs = [RunMetrics.read(d) for d in dirs]
    figure = compare_figure([summarize(d, r) for d, r in zip(dirs, runs)], runs)
    panels = {axes.get_title(): axes for axes in figure.axes}
    accuracy = next(axes for title, axes in panels.items() if "eval_pass1" in title)
    reward = next(axes for title, axes in panels.items() if "reward_mean" in title)
    assert accuracy is not reward
    # Accuracy: the eval rows' eval_pass1 of the one run that evaluates; no reward line there.
    (line,) = accuracy.get_lines()
    assert list(line.get_xdata()) == [0, 2, 4, 5]
    assert list(line.get_ydata()) == pytest.approx([eval_row(i)["eval_pass1"] for i in (0, 2, 4, 5)])
    # Reward: every run's training reward_mean.
    assert len(reward.get_lines()) == 2
    for line in reward.get_lines():
        expected = [train_row(i)["reward_mean"] for i in range(len(line.get_ydata()))]
        assert list(line.get_ydata()) == pytest.approx(expected)


# The end-of-run summary


def test_a_long_run_summary_shows_first_last_and_every_tenth_iteration():
    history = [{"iteration": i, "loss": 1.0, "iteration_seconds": 0.1} for i in range(300)]
    lines = summary("long", history, "/runs/long", 37.0).splitlines()
    shown = [int(line.split()[0]) for line in lines if line.strip() and line.split()[0].isdigit()]
    assert shown == [*range(0, 300, 10), 299]
    elided = [line for line in lines if "not shown" in line]
    assert len(elided) == 1 and "269 of 300" in elided[0] and "metrics.jsonl" in elided[0]
    assert "finished 300 iteration(s) in 37.0s" in lines[1]


def test_a_short_run_summary_shows_every_iteration():
    lines = summary("short", [{"iteration": i, "loss": 1.0} for i in range(20)], "/runs/short", 1.0).splitlines()
    shown = [line.split()[0] for line in lines if line.split() and line.split()[0].isdigit()]
    assert shown == [str(i) for i in range(20)]
    assert not any("not shown" in line for line in lines)


def test_the_summary_says_how_many_evals_were_skipped_and_why():
    history = [train_row(i) for i in range(6)]
    # eval.every 1: the baseline and the last ran; the four between came due while one was running.
    evals = [{**eval_row(-1), "eval_skipped": 0}, {**eval_row(0), "eval_skipped": 0},
             {**eval_row(5), "eval_skipped": 4}]
    text = summary("fast", history, "/runs/fast", 10.0, evals)
    (line,) = [line for line in text.splitlines() if "skipped" in line]
    assert "4 eval(s) skipped, 3 ran" in line and "eval.max_wait_seconds" in line and "still running" in line
    # Resumed at iteration 3: that start counts its skips from 0 again.
    history[3]["resumed_from"] = "/runs/fast/checkpoints/iter-2"
    evals = [{**eval_row(0), "eval_skipped": 0}, {**eval_row(2), "eval_skipped": 2},
             {**eval_row(5), "eval_skipped": 1}]
    assert "3 eval(s) skipped" in summary("fast", history, "/runs/fast", 10.0, evals)
    # Nothing skipped: no line.
    assert "skipped" not in summary("fast", history, "/runs/fast", 10.0, [{**eval_row(5), "eval_skipped": 0}])


# The unknown-field suggestion


def test_an_unknown_field_suggests_the_close_one():
    with pytest.raises(SpecError) as caught:
        validate_spec({"rollout": {"temprature": 0.5}})
    message = caught.value.one_line()
    assert "rollout.temprature: unknown field, did you mean `temperature`?" in message
    assert "\n" not in message
    with pytest.raises(SpecError) as caught:
        validate_spec({"rollout": {"zzzzzz": 1}})
    assert "did you mean" not in str(caught.value)


# DeepSpeed's CPU notice


def test_deepspeed_cpu_notice_does_not_reach_stdout(capsys):
    """The "DeepSpeed" logger as DeepSpeed makes it (utils/logging.py: a stdout handler, no propagation)."""
    silence_deepspeed_cpu_notice()
    deepspeed_logger = logging.getLogger("DeepSpeed")
    handler = logging.StreamHandler(stream=sys.stdout)
    deepspeed_logger.addHandler(handler)
    try:
        deepspeed_logger.warning("Setting accelerator to CPU. If you have GPU or other accelerator, we were "
                                 "unable to detect it.")
        deepspeed_logger.warning("some other DeepSpeed warning")
    finally:
        deepspeed_logger.removeHandler(handler)
    out = capsys.readouterr().out
    assert "Setting accelerator to CPU" not in out
    assert "some other DeepSpeed warning" in out


def test_run_main_silences_it_before_anything_else(monkeypatch):
    called = []
    monkeypatch.setattr(run_module, "silence_deepspeed_cpu_notice", lambda: called.append(True))
    monkeypatch.setattr(run_module, "load_spec", lambda *a: (_ for _ in ()).throw(SpecError("stop here")))
    assert run_module.main(["configs/hinted_idft.yaml", "--check"]) == 2
    assert called == [True]


# The CLL share metric's name


def test_the_cll_share_metric_says_above_minus_one():
    from jobs.onpolicy import cll_summary

    sample = SimpleNamespace(token_cll=[-0.5, -2.0], cll={"avg_cll": -1.25, "frac_gt_1": 0.5},
                             response_token_ids=[1, 2], finish_reason="stop")
    metrics = cll_summary([sample])
    assert metrics["cll_frac_above_minus1"] == 0.5
    assert "cll_frac_gt_1" not in metrics


@pytest.mark.integration  # imports the real DeepSpeed (seconds), twice; starts no job
def test_deepspeed_imported_by_the_driver_prints_no_cpu_notice():
    import subprocess

    from tests.conftest import REPO

    def stdout_of(prelude: str) -> str:
        script = f"{prelude}\nimport deepspeed\nprint('IMPORTED')\n"
        env = {key: value for key, value in os.environ.items() if key != "DS_ACCELERATOR"}
        env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU: the case in which DeepSpeed logs the notice
        result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    assert "Setting accelerator to CPU" in stdout_of("")  # what the driver printed before
    quiet = stdout_of("from jobs.run import silence_deepspeed_cpu_notice\nsilence_deepspeed_cpu_notice()")
    assert quiet.splitlines() == ["IMPORTED"]


def test_the_summary_names_samples_only_when_the_run_wrote_some(tmp_path):
    history = [{"iteration": 0, "loss": 1.0}]
    assert "samples/iter-N.jsonl" not in summary("offline", history, str(tmp_path), 1.0)  # offline pairs: none
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "iter-0.jsonl").write_text("{}\n")
    assert "samples/iter-N.jsonl" in summary("online", history, str(tmp_path), 1.0)
