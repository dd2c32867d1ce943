"""f-DPG learns on the tiny model (configs/fdpg.yaml, real Ray, vLLM and DeepSpeed): the share of
samples meeting the constraint climbs towards 1 while the KL to the initial model stays bounded.
A pseudo-reward of the wrong sign pushes the constraint rate down instead, so this fails then."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import yaml

from tests.conftest import assert_rose_beyond_noise, read_jsonl, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fdpg_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fdpg")
    result = run_cli("configs/fdpg.yaml", "--output-dir", str(out))
    assert result.returncode == 0, f"job failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return out, [m for m in read_jsonl(out / "metrics.jsonl") if m.get("kind") != "eval"]


def test_the_constraint_rate_climbs_while_the_kl_to_the_initial_model_stays_bounded(fdpg_run):
    out, metrics = fdpg_run
    rates = [m["fdpg_constraint_rate"] for m in metrics]
    assert len(rates) == 12
    early = sum(rates[:2]) / 2
    # Each sample meets the constraint or not: the last six iterations' samples against the first two's,
    # beyond the binomial spread of those same samples. With the pseudo-reward's sign flipped the same
    # run drives the rate down instead.
    spec = yaml.safe_load((out / "spec.yaml").read_text())["train"]["fdpg"]

    def met(iterations) -> list[float]:
        return [float(s["rewards"][spec["constraint"]] >= spec["threshold"])
                for i in iterations for s in read_jsonl(out / "samples" / f"iter-{i}.jsonl")]

    assert_rose_beyond_noise(met(range(2)), met(range(6, 12)), "f-DPG constraint rate")
    # KL(p‖a) = −log Z: the target itself sits about −log(early rate) nats from the initial model, so the
    # policy should too; collapsing onto a few digit strings would take it far beyond.
    bound = 4 * -math.log(early)
    assert all(-1e-3 < m["fdpg_kl_to_initial"] < bound for m in metrics), ([m["fdpg_kl_to_initial"] for m in metrics], bound)


def test_the_target_and_its_estimates_are_consistent(fdpg_run):
    out, metrics = fdpg_run
    for m in metrics:
        assert math.isfinite(m["fdpg_log_z"]) and m["fdpg_log_z"] <= 1e-9  # Z = E_q[a·b/q] <= 1 up to sampling
        assert m["fdpg_divergence"] >= 0  # f >= 0 for JS, so each term f(t)/t of the estimate is too
        assert m["fdpg_pseudo_reward_std"] >= 0
    # the baseline is the moving mean of earlier pseudo-rewards; the first batch is its own
    assert metrics[0]["fdpg_baseline"] == pytest.approx(metrics[0]["fdpg_pseudo_reward_mean"])
    assert metrics[1]["fdpg_baseline"] == pytest.approx(metrics[0]["fdpg_pseudo_reward_mean"])
    samples = read_jsonl(out / "samples" / "iter-0.jsonl")
    rate = sum(s["rewards"]["digits"] >= 0.35 for s in samples) / len(samples)
    assert metrics[0]["fdpg_constraint_rate"] == pytest.approx(rate)
    # log Z and the baseline are state of the run: the checkpoint carries them for a resume
    state = json.loads((out / "checkpoints" / "iter-11" / "training_state" / "loop.json").read_text())["fdpg"]
    assert state["log_z"]["count"] == 12 * 64 and len(state["baseline"]["values"]) == 256


def test_a_resume_continues_the_running_log_z_and_baseline_exactly(fdpg_run, tmp_path):
    """f-DPG has running state (log Z, the pseudo-reward baseline) in its checkpoint's loop state. Resumed
    from checkpoints/iter-9 (the default checkpoint.every=10) of a copy of the run, iterations 10 and 11
    come out as in the uninterrupted run: the same tokens, the same losses, the same log Z."""
    out, metrics = fdpg_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    state = json.loads((copy / "checkpoints" / "iter-9" / "training_state" / "loop.json").read_text())
    assert state["next_iteration"] == 10 and set(state["fdpg"]) == {"log_z", "baseline"}
    result = run_cli("configs/fdpg.yaml", "--resume", str(copy / "checkpoints" / "iter-9"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resumed = {m["iteration"]: m for m in read_jsonl(copy / "metrics.jsonl") if m.get("kind") != "eval"}
    assert sorted(resumed) == list(range(12))
    for iteration in (10, 11):
        ours = read_jsonl(copy / "samples" / f"iter-{iteration}.jsonl")
        theirs = read_jsonl(out / "samples" / f"iter-{iteration}.jsonl")
        assert [s["response_token_ids"] for s in ours] == [s["response_token_ids"] for s in theirs], iteration
        for key in ("loss", "fdpg_log_z", "fdpg_baseline", "fdpg_constraint_rate"):
            assert resumed[iteration][key] == metrics[iteration][key], (iteration, key)
