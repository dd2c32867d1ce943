"""docs/benchmarks.md's tables are what the committed results files give (`python -m bench --report`), and the
per-repeat arithmetic behind every figure (bench/results.py)."""

from __future__ import annotations

import json

import pytest

from bench import report_docs
from bench.results import figure, markdown, paired, repeat_rates, repeat_seconds, spread


def test_the_committed_tables_are_the_committed_results():
    page = report_docs.DOCS.read_text()
    assert report_docs.rewrite(page, report_docs.tables()) == page, \
        "docs/benchmarks.md's tables differ from bench/results*.json: run .venv/bin/python -m bench --report"


def test_a_changed_result_changes_its_table_and_a_missed_target_says_so(monkeypatch, tmp_path):
    results = json.loads(report_docs.SMOLLM2_RESULTS.read_text())
    results["cll_overhead"]["raw"]["smollm2"]["standalone_ratio"] = 1.5  # past its <= 1.15
    changed = tmp_path / "results-smollm2.json"
    changed.write_text(json.dumps(results))
    monkeypatch.setattr(report_docs, "SMOLLM2_RESULTS", changed)
    table = report_docs.tables()["smollm2"]
    assert "| cll_overhead | **1.5** (single reading) | - | **no** |" in table


def test_a_page_without_the_markers_is_refused():
    with pytest.raises(ValueError, match="no markers for the results table"):
        report_docs.rewrite("# Benchmarks\n", {"results": "| a |"})


def test_spread_is_the_median_range_and_count_of_the_measured_repeats():
    numbers = spread([1.2, None, 0.9, 1.0])
    assert numbers == {"median": 1.0, "min": 0.9, "max": 1.2, "n": 3, "repeats": [1.2, 0.9, 1.0]}
    assert spread([0.1, 0.2])["median"] == 0.15  # an even count: the mean of the middle two
    assert spread([None]) == {"median": None, "min": None, "max": None, "n": 0, "repeats": []}


def test_a_figure_is_the_median_of_its_repeats_and_met_is_judged_on_it():
    result = figure([0.8, 0.97, 0.95], ">= 0.90", {"a": 1})
    assert (result["ratio"], result["median"], result["min"], result["max"], result["n"]) == (0.95, 0.95, 0.8, 0.97, 3)
    assert result["met"] is True and result["repeats"] == [0.8, 0.97, 0.95] and result["notes"] == []
    assert figure([0.8, 0.85, 0.95], ">= 0.90", {})["met"] is False  # the best repeat meets it, the median does not
    few = figure([1.2, 1.1], "<= 1.15", {}, notes=["kept"])
    assert few["notes"][0] == "kept" and "n = 2" in few["notes"][1]


def test_pairs_run_k_th_over_k_th_as_far_as_the_shorter_side():
    assert paired([10.0, 20.0, 30.0, 40.0], [5.0, 10.0, 0.0]) == [2.0, 2.0, None]
    assert spread(paired([10.0, 20.0, 30.0, 40.0], [5.0, 10.0, 0.0]))["n"] == 2


def test_a_baseline_repeat_is_every_timed_iteration_of_that_repeat():
    per_iteration = {"1": {"tokens": 100, "seconds": [1.0, 2.0, 1.0]}, "2": {"tokens": 300, "seconds": [1.0, 2.0, 3.0]},
                     "3": {"tokens": 50, "seconds": []}}
    assert repeat_seconds(per_iteration, "seconds") == [2.0, 4.0, 4.0]
    assert repeat_rates(per_iteration, "seconds") == [200.0, 100.0, 100.0]


def test_the_table_shows_median_range_n_and_a_miss():
    results = {"missed": figure([1.1, 1.3, 1.2], "<= 1.15", {}, headline="h"),
               "met": figure([0.95, 0.85, 0.99], ">= 0.90", {}, headline="h"),
               "old": {"ratio": 0.989, "target": ">= 0.90", "met": True, "headline": "h"}}
    rows = markdown(results).splitlines()
    assert rows[2].startswith("| missed | **1.2** [1.1–1.3] | 3 | **no** (2 of 3 repeats miss) |")
    assert rows[3].startswith("| met | 0.95 [0.85–0.99] | 3 | yes (1 of 3 repeats miss) |")
    assert rows[4].startswith("| old | 0.989 (single reading) | - | yes |")
