"""python -m jobs.outputs.compare: the table's numbers are the metrics files' numbers; the page and plot load."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from jobs.outputs.compare import main, summarize
from tests.conftest import REPO
from tests.headless_browser import assert_non_trivial_png, loaded_images, screenshot
from tests.synthetic_runs import eval_row, read_rows, train_row, write_run

# dpo_run: configs/dpo.yaml, the job test_preference_jobs.py checks, run once per session.
pytest_plugins = ["tests.shared_runs"]


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The printed table, by run label (labels in these tests have no spaces)."""
    lines = stdout.strip().splitlines()
    assert lines[0].split() == ["run", "algorithm", "iters", "target", "final", "gain", "forget_kl", "rank>1",
                                "wall_s", "tokens"]
    return {line.split()[0]: line.split()[1:] for line in lines[1:] if not line.startswith("wrote ")}


def test_eval_rows_decide_the_target_and_the_forgetting(tmp_path):
    run = write_run(tmp_path / "evaluated", name="evaluated", iterations=6, eval_every=2)
    summary = summarize(run)
    # Eval rows after iterations 0, 2, 4 and 5.
    assert (summary.target_metric, summary.iterations) == ("eval_pass1", 6)
    assert summary.final == pytest.approx(eval_row(5)["eval_pass1"])
    assert summary.gain == pytest.approx(eval_row(5)["eval_pass1"] - eval_row(0)["eval_pass1"])
    assert summary.forget_kl == pytest.approx(eval_row(5)["forget_kl"])
    assert summary.forget_rank_gt1 == pytest.approx(eval_row(5)["forget_rank_gt1"])
    assert summary.wall_seconds is None  # these rows have no seconds_to_first_iteration: the start-up is unknown
    assert summary.tokens == sum(train_row(i)["generated_tokens"] + train_row(i)["train_tokens"] for i in range(6))


def test_without_eval_rows_the_training_reward_is_the_target(tmp_path):
    summary = summarize(write_run(tmp_path / "plain", iterations=4, eval_every=None))
    assert summary.target_metric == "reward_mean"
    assert summary.final == pytest.approx(train_row(3)["reward_mean"])
    assert summary.gain == pytest.approx(train_row(3)["reward_mean"] - train_row(0)["reward_mean"])
    assert summary.forget_kl is None and summary.forget_rank_gt1 is None


def test_the_printed_table_and_the_files(tmp_path, capsys):
    evaluated = write_run(tmp_path / "a", name="evaluated", iterations=6, eval_every=2)
    plain = write_run(tmp_path / "b", name="plain", algorithm="dpo", iterations=4, eval_every=None)
    # SFT on demonstrations: no reward and no eval, so no target; the rest is still compared.
    bare = write_run(tmp_path / "c", name="bare", algorithm="sft", iterations=2, eval_every=None,
                     drop=("reward_mean", "generated_tokens"))
    output = tmp_path / "out"
    assert main([str(evaluated), str(plain), str(bare), "--output", str(output)]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows["evaluated"] == ["idft", "6", "eval_pass1", "0.550", "+0.250", "0.0500", "0.100", "-", "1845"]
    assert rows["plain"] == ["dpo", "4", "reward_mean", "0.230", "+0.030", "-", "-", "-", "1218"]
    assert rows["bare"] == ["sft", "2", "-", "-", "-", "-", "-", "-", "402"]
    assert (output / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (output / "compare.html").read_text()
    assert re.findall(r"<td[^>]*>([^<]*)</td>", page)[:10] == ["evaluated", *rows["evaluated"]]
    assert re.findall(r'src="([^"]{0,22})', page) == ["data:image/png;base64,"]  # nothing outside the page


def test_runs_of_one_spec_are_told_apart_by_folder(tmp_path, capsys):
    first = write_run(tmp_path / "lr-1e-3", name="idft")
    second = write_run(tmp_path / "lr-1e-4", name="idft")
    assert main([str(first), str(second), "--output", str(tmp_path)]) == 0
    assert {"idft", "(lr-1e-3)", "(lr-1e-4)"} <= set(capsys.readouterr().out.split())


def test_a_directory_without_metrics_is_one_line_and_exit_2(tmp_path):
    run = write_run(tmp_path / "run")
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-m", "jobs.outputs.compare", str(run), str(empty), "--output", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"jobs.outputs.compare: {empty} has no metrics.jsonl; expected a run's output directory "
        f"(python -m jobs.run SPEC --output-dir DIR)"
    ]
    assert not (tmp_path / "compare.html").exists()


def test_the_comparison_page_loads_in_a_browser(tmp_path, capsys):
    runs = [write_run(tmp_path / name, name=name) for name in ("one", "two")]
    assert main([*map(str, runs), "--output", str(tmp_path / "out")]) == 0
    page = tmp_path / "out" / "compare.html"
    images = loaded_images(page, tmp_path)
    assert len(images) == 1 and images[0][0] and images[0][1] > 0 and images[0][2] > 0
    assert_non_trivial_png(screenshot(page, tmp_path, (1280, 900)), (1280, 900))


@pytest.mark.integration
def test_two_real_runs(onpolicy_run, dpo_run, tmp_path, capsys):
    onpolicy_dir, _ = onpolicy_run
    dpo_dir, _, _ = dpo_run
    assert main([str(onpolicy_dir), str(dpo_dir), "--output", str(tmp_path)]) == 0
    rows = table_rows(capsys.readouterr().out)
    for label, run_dir, algorithm in (("onpolicy_idft", onpolicy_dir, "idft"), ("dpo", dpo_dir, "dpo")):
        train = read_rows(run_dir, "train")
        expected = [
            algorithm, str(len(train)), "reward_mean",
            f"{train[-1]['reward_mean']:.3f}", f"{train[-1]['reward_mean'] - train[0]['reward_mean']:+.3f}", "-", "-",
            # Neither run evaluates: start-up plus every iteration.
            f"{train[0]['seconds_to_first_iteration'] + sum(r['iteration_seconds'] for r in train):.1f}",
            str(sum(r["generated_tokens"] + r["train_tokens"] for r in train)),
        ]
        assert rows[label] == expected
    assert rows["onpolicy_idft"][1] == "3" and rows["dpo"][1] == "8"
    assert (tmp_path / "compare.png").stat().st_size > 5000
