"""bench/gpu_check.sh, the GPU session's one script, on its CPU path: --dry-run prints every step,
checks each job's spec with its overrides (`--check`: no Ray, no GPU) and writes gpu-check.json in the
schema a GPU session's run will have."""

from __future__ import annotations

import json
import subprocess

from bench.gpu_check import SCHEMA, check_schema
from tests.conftest import REPO


def dry_run(model, out) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "bench" / "gpu_check.sh"), str(model), "--dry-run", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def test_the_dry_run_checks_every_step_and_writes_the_schema(tiny_model, tmp_path):
    result = dry_run(tiny_model, tmp_path / "check")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].endswith(f"results in {tmp_path / 'check'}")
    found = json.loads((tmp_path / "check" / "gpu-check.json").read_text())
    assert found["dry_run"] is True and found["model"] == str(tiny_model)
    names = [step["name"] for step in found["steps"]]
    assert names == ["weight_sync_tests", "gpu1x_object_store", "gpu1x_broadcast", "head_dtype_gap", "hinted_decoding"]
    for step in found["steps"]:
        assert set(SCHEMA) <= set(step) and step["status"] == "dry-run"
        check_schema(step)
        assert f"[gpu-check] {step['name']} (limit" in result.stdout  # what it would run, printed


def test_a_step_whose_spec_does_not_check_fails_the_dry_run(tiny_model, tmp_path, monkeypatch, capsys):
    import bench.gpu_check as gpu_check

    planned = gpu_check.steps

    def with_a_bad_override(model, out):
        found = planned(model, out)
        found[1]["command"] = [*found[1]["command"], "rollout.temperature=-1"]
        return found

    monkeypatch.setattr(gpu_check, "steps", with_a_bad_override)
    assert gpu_check.main([str(tiny_model), "--dry-run", "--out", str(tmp_path / "check")]) == 1
    assert "gpu1x_object_store: its spec does not check: spec error: rollout.temperature" in capsys.readouterr().out
    statuses = [step["status"] for step in json.loads((tmp_path / "check" / "gpu-check.json").read_text())["steps"]]
    assert statuses == ["dry-run", "failed", "dry-run", "dry-run", "dry-run"]


def test_no_model_folder_is_one_line(tmp_path):
    result = dry_run(tmp_path / "no-model", tmp_path / "check")
    assert result.returncode == 2
    assert result.stderr.strip() == f"bench/gpu_check.sh: {tmp_path / 'no-model'}: no HF model folder there (config.json missing)"
