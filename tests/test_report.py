"""report.html: the plots a run has and no others, the latest rows, the spec escaped; it loads in a browser."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest

from jobs.outputs.report import write_report
from tests.headless_browser import assert_non_trivial_png, loaded_images, screenshot
from tests.synthetic_runs import SPEC_MARKUP, eval_row, train_row, write_run


def embedded_pngs(page: str) -> list[tuple[str, tuple[int, int]]]:
    """(alt text, pixel size) of every <img>, which must all be PNG data URIs."""
    from PIL import Image

    images = re.findall(r'<img alt="([^"]*)" src="([^"]*)"', page)
    assert len(images) == page.count("<img"), "an image that is not a data URI"
    found = []
    for alt, source in images:
        assert source.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as png:
            assert png.format == "PNG"
            found.append((alt, png.size))
    return found


def plot_titles(page: str) -> list[str]:
    return [alt for alt, _ in embedded_pngs(page)]


def table_after(page: str, heading: str) -> dict[str, str]:
    """The key/value cells of the table under the <h3> that starts with `heading`."""
    section = page.split(f"<h3>{heading}", 1)[1].split("</table>", 1)[0]
    return dict(re.findall(r"<tr><th>([^<]*)</th><td[^>]*>([^<]*)</td></tr>", section))


def test_a_run_with_eval_rows_gets_every_plot_and_both_tables(tmp_path):
    run = write_run(tmp_path / "run", iterations=6, eval_every=2)
    path = write_report(run)
    assert path == run.resolve() / "report.html"
    page = path.read_text()
    assert plot_titles(page) == [
        "Reward and accuracy", "Loss", "CLL (centered log-likelihood)", "Forgetting", "Throughput",
    ]
    last_train, last_eval = table_after(page, "Last training row"), table_after(page, "Last eval row")
    assert float(last_train["loss"]) == pytest.approx(train_row(5)["loss"], rel=1e-5)
    assert last_train["checkpoint"] == "/runs/x/checkpoints/iter-5"
    assert float(last_eval["eval_pass1"]) == pytest.approx(eval_row(5)["eval_pass1"], rel=1e-5)
    assert float(last_eval["forget_kl"]) == pytest.approx(eval_row(5)["forget_kl"], rel=1e-5)
    assert "kind" not in last_eval
    assert "6 training iteration(s) recorded of 6" in page and "4 eval row(s)" in page


def test_panels_are_as_wide_as_the_series_they_hold(tmp_path):
    sizes = dict(embedded_pngs(write_report(write_run(tmp_path / "run")).read_text()))
    # Four forgetting measures in four panels; one panel for the loss.
    assert sizes["Forgetting"][0] == pytest.approx(4 * sizes["Loss"][0], rel=0.02)
    assert sizes["Throughput"][0] == pytest.approx(2 * sizes["Loss"][0], rel=0.02)


def test_a_run_without_eval_rows_or_reward_shows_only_what_it_has(tmp_path):
    # An SFT run that evaluates nothing: no reward, no first-try accuracy, no eval rows.
    run = write_run(tmp_path / "sft", algorithm="sft", eval_every=None, drop=("reward_mean", "first_try_right"))
    page = write_report(run).read_text()
    assert plot_titles(page) == ["Loss", "CLL (centered log-likelihood)", "Throughput"]
    assert "<h3>Last eval row</h3><p>none yet</p>" in page


def test_the_spec_is_shown_escaped(tmp_path):
    page = write_report(write_run(tmp_path / "run")).read_text()
    assert SPEC_MARKUP not in page
    assert "&lt;script&gt;window.specMarkupRan = true&lt;/script&gt; &amp; &quot;quoted&quot;" in page
    assert "algorithm: idft" in page


def test_a_run_with_no_rows_yet_and_no_spec_still_gets_a_page(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    page = write_report(tmp_path).read_text()
    assert plot_titles(page) == []
    assert "spec.yaml not found" in page and "0 training iteration(s) recorded" in page


def test_a_line_caught_mid_write_waits_for_the_next_report(tmp_path):
    run = write_run(tmp_path / "run", iterations=3, eval_every=None)
    with (run / "metrics.jsonl").open("a") as metrics:
        metrics.write('{"iteration": 3, "loss": 0.')  # the driver's append, caught halfway
    page = write_report(run).read_text()
    assert "(iteration 2)" in page and "3 training iteration(s) recorded" in page


def test_rewriting_leaves_one_whole_file_and_no_temp_files(tmp_path):
    run = write_run(tmp_path / "run", iterations=2)
    write_report(run)
    write_run(run, iterations=4)
    page = write_report(run).read_text()
    assert page.rstrip().endswith("</html>") and "(iteration 3)" in page
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl", "report.html", "spec.yaml"]
    assert (run / "report.html").stat().st_mode & 0o044 == 0o044  # others can read it, as with every other output


def test_a_hundred_iterations_make_one_page_with_the_last_rows(tmp_path):
    """The driver rewrites the page during the run; how long that takes is bench/report_speed.py's."""
    run = write_run(tmp_path / "run", iterations=100, eval_every=10)
    text = write_report(run).read_text()
    assert "(iteration 99)" in text and text.rstrip().endswith("</html>")


def test_the_report_loads_in_a_browser(tmp_path):
    page = write_report(write_run(tmp_path / "run"))
    expected = [size for _, size in embedded_pngs(page.read_text())]
    assert [(w, h) for _, w, h in loaded_images(page, tmp_path)] == expected
    assert_non_trivial_png(screenshot(page, tmp_path), (1280, 2000))


@pytest.mark.integration
def test_a_real_runs_report(onpolicy_run, tmp_path):
    """The page the job itself wrote when it ended, not one rendered again here."""
    out_dir, _ = onpolicy_run
    page = out_dir / "report.html"
    text = page.read_text()
    # configs/onpolicy_idft.yaml trains on every sample: a reward, no hinting, no eval rows.
    assert plot_titles(text) == ["Reward and accuracy", "Loss", "CLL (centered log-likelihood)", "Throughput"]
    assert "name: onpolicy_idft" in text and "(iteration 2)" in text
    images = loaded_images(page, tmp_path)
    assert len(images) == 4 and all(complete and w > 0 and h > 0 for complete, w, h in images)
    assert_non_trivial_png(screenshot(page, tmp_path), (1280, 2000))


def test_python_m_jobs_report_names_a_directory_without_metrics(tmp_path, capsys):
    from jobs.outputs.report import main

    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"jobs.outputs.report: {tmp_path} has no metrics.jsonl; expected a run's output directory"
    )
    assert not Path(tmp_path / "report.html").exists()
