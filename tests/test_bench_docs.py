"""docs/benchmarks.md's tables are what the committed results files give (`python -m bench --report`)."""

from __future__ import annotations

import json

import pytest

from bench import report_docs


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
    assert "| cll_overhead | 1.5 (best of repeats" in table and table.split("cll_overhead")[1].split("\n")[0].endswith("| **no** |")


def test_a_page_without_the_markers_is_refused():
    with pytest.raises(ValueError, match="no markers for the results table"):
        report_docs.rewrite("# Benchmarks\n", {"results": "| a |"})
