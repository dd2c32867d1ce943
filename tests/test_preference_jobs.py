"""Preference learning end to end on real Ray, vLLM (CPU) and DeepSpeed: online DPO, RPO, IRFT, offline DPO.

Each job runs once per module (the shipped configs on the builtin tiny model) and is shared by
the tests below. "Learning, not just running": each test checks that a number moved the way
the algorithm promises, not only that the job exited 0.
"""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from tests.conftest import REPO, assert_rose_beyond_noise, independent_token_stats, printed_json, read_jsonl
from tests.job_process import run_job

pytestmark = pytest.mark.integration
# dpo_run, the online DPO job, is shared with test_compare.py: it runs once per session.
pytest_plugins = ["tests.shared_runs"]

PAIR_KEYS = {
    "prompt_token_ids", "chosen_token_ids", "rejected_token_ids", "chosen_reward", "rejected_reward",
    "reference_logp_chosen", "reference_logp_rejected", "policy_logp_chosen", "policy_logp_rejected", "loss",
}
PREFERENCE_METRICS = {"pairs", "pairs_dropped", "reward_accuracy", "reward_margin", "kl_to_reference", "loss"}
# Summed over up to 25 response tokens in fp32 against a float64 reference: ~1e-5 per token at most.
SUMMED_LOGP_TOLERANCE = 5e-4


@pytest.fixture(scope="module")
def rpo_run(tmp_path_factory):
    return run_job(tmp_path_factory, "rpo", "configs/rpo.yaml")


@pytest.fixture(scope="module")
def irft_run(tmp_path_factory):
    return run_job(tmp_path_factory, "irft", "configs/irft.yaml")


def load_model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def summed_logp(model, prompt_ids, response_ids) -> float:
    return sum(logp for logp, _ in independent_token_stats(model, prompt_ids, response_ids))


def assert_reference_logps_match(pairs: list[dict], model) -> float:
    worst = 0.0
    for pair in pairs:
        for side in ("chosen", "rejected"):
            expected = summed_logp(model, pair["prompt_token_ids"], pair[f"{side}_token_ids"])
            worst = max(worst, abs(pair[f"reference_logp_{side}"] - expected))
    assert worst < SUMMED_LOGP_TOLERANCE
    return worst


def mean(values):
    return sum(values) / len(values)


# --------------------------------------------------------------------------- online DPO


def sample_rewards(out, iterations) -> list[float]:
    return [s["rewards"]["total"] for i in iterations for s in read_jsonl(out / "samples" / f"iter-{i}.jsonl")]


def test_online_dpo_raises_mean_reward(dpo_run):
    # DPO on best-vs-worst pairs climbs the digit-share reward: the last three iterations' samples
    # against the first two's, beyond the spread of those samples' own rewards.
    out, metrics, _ = dpo_run
    assert_rose_beyond_noise(sample_rewards(out, range(2)),
                             sample_rewards(out, range(len(metrics) - 3, len(metrics))), "online DPO reward")


def test_online_dpo_records_pairs_and_metrics(dpo_run):
    out, metrics, result = dpo_run
    for m in metrics:
        assert PREFERENCE_METRICS <= m.keys()
        assert {"reward_mean", "reward_math_answer_mean", "reward_function_mean", "pairs_dropped_tie"} <= m.keys()
        assert m["pairs"] + m["pairs_dropped"] == 16  # one candidate pair per prompt
    for iteration in (0, len(metrics) - 1):
        pairs = read_jsonl(out / "pairs" / f"iter-{iteration}.jsonl")
        assert len(pairs) == metrics[iteration]["pairs"]
        for pair in pairs:
            assert PAIR_KEYS <= pair.keys()
            assert pair["chosen_reward"] > pair["rejected_reward"]
            if pair["loss"] is not None:  # a pair left over from an even split is recorded untrained
                assert math.isfinite(pair["loss"]) and math.isfinite(pair["policy_logp_chosen"])
        samples = read_jsonl(out / "samples" / f"iter-{iteration}.jsonl")
        for s in samples:
            assert s["rewards"]["total"] == pytest.approx(s["rewards"]["math_answer"] + s["rewards"]["function"])
    header = [line for line in result.stdout.splitlines() if line.strip().startswith("iter ")]
    assert header and "reward" in header[0] and "pair acc" in header[0]  # the summary shows rewards and pairs


@pytest.mark.parametrize("iteration", ["first", "last"])
def test_initial_reference_logps_equal_teacher_forcing_under_the_starting_weights(dpo_run, iteration):
    """`reference: initial` is the frozen starting model at every iteration, not the moving policy."""
    out, metrics, _ = dpo_run
    index = 0 if iteration == "first" else len(metrics) - 1
    model = load_model(out / "builtin" / "tiny-llama")
    assert_reference_logps_match(read_jsonl(out / "pairs" / f"iter-{index}.jsonl"), model)


# --------------------------------------------------------------------------- RPO


def test_online_rpo_raises_mean_reward(rpo_run):
    out, metrics, _ = rpo_run
    assert_rose_beyond_noise(sample_rewards(out, range(2)),
                             sample_rewards(out, range(len(metrics) - 3, len(metrics))), "online RPO reward")
    assert all(m["sft_loss"] is not None for m in metrics)  # the SFT regulariser is in the objective


# --------------------------------------------------------------------------- IRFT


def test_irft_pulls_the_policy_towards_the_demonstrations(irft_run):
    _, metrics, _ = irft_run
    # Scored at the start of each stage with that stage's weights: the demonstrations become likelier.
    # A climb at every one of the stages: a run that did not move them would order them so about once
    # in len(metrics)! runs.
    demo_logp = [m["demonstration_logp_mean"] for m in metrics]
    assert len(demo_logp) >= 4 and all(b > a for a, b in zip(demo_logp, demo_logp[1:])), demo_logp
    # Within each stage the demonstrations' implicit reward beats the model's own answers.
    assert all(m["reward_margin"] > 0 for m in metrics), [m["reward_margin"] for m in metrics]


@pytest.mark.parametrize("stage", [0, 2])
def test_irft_reference_is_the_previous_stage_policy(irft_run, stage):
    """Stage s's pairs are scored under the weights after stage s-1 (the builtin model for s=0).

    This is also how the test knows each stage regenerated with the latest weights: the
    rollout worker's scorer holds exactly the synced weights it generates with (the engine and
    scorer log-probs of every sample agree, `engine_scorer_logprob_max_diff`).
    """
    out, metrics, _ = irft_run
    weights = out / "builtin" / "tiny-llama" if stage == 0 else out / "checkpoints" / f"iter-{stage - 1}"
    pairs = read_jsonl(out / "pairs" / f"iter-{stage}.jsonl")
    assert {p["chosen_source"] for p in pairs} == {"demonstration"}
    assert_reference_logps_match(pairs, load_model(weights))
    assert metrics[stage]["engine_scorer_logprob_max_diff"] < 1e-4
    if stage > 0:  # and not the initial weights: the test can tell the two apart
        initial = load_model(out / "builtin" / "tiny-llama")
        assert abs(pairs[0]["reference_logp_chosen"] - summed_logp(
            initial, pairs[0]["prompt_token_ids"], pairs[0]["chosen_token_ids"])) > 1e-2


# --------------------------------------------------------------------------- offline DPO


@pytest.fixture(scope="module")
def offline_pairs_file(tmp_path_factory):
    rows = [
        {"prompt": f"What is {a} + {a + 3}?", "chosen": f"The answer is {2 * a + 3}.", "rejected": f"{a} {a} so {a}"}
        for a in range(15)
    ]
    rows.append({"prompt": "What is 1 + 1?", "chosen": "The answer is 2.", "rejected": "The answer is 2."})
    data = tmp_path_factory.mktemp("offline-data") / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def policy_margin(out, iteration) -> float:
    pairs = [p for p in read_jsonl(out / "pairs" / f"iter-{iteration}.jsonl") if p["loss"] is not None]
    return mean([p["policy_logp_chosen"] - p["policy_logp_rejected"] for p in pairs])


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory, offline_pairs_file):
    data = offline_pairs_file
    return run_job(
        tmp_path_factory, "offline", "configs/dpo.yaml", "--set", "preference.source=dataset",
        "--set", f"data.path={data}", "--set", "data.shuffle=false", "--set", "reward.sources=[]",
        "--set", "iterations=4", "--set", "train.dpo.loss=ipo", "--set", "train.lr=1e-3",
    )


def test_offline_dpo_needs_no_rollout_and_learns_the_preference(offline_run):
    out, metrics, result = offline_run
    assert "rollout worker" not in result.stdout and not any(out.glob("samples/*.jsonl"))
    assert all("sync_seconds" not in m for m in metrics)
    # 16 rows per iteration (configs/dpo.yaml), in order: the identical pair is met in each of the
    # 4 iterations and never trained on.
    assert [m["pairs_dropped_identical"] for m in metrics] == [1, 1, 1, 1]
    assert [m["pairs"] for m in metrics] == [15, 15, 15, 15]

    assert policy_margin(out, 3) > policy_margin(out, 0) + 1.0
    assert metrics[-1]["reward_accuracy"] > 0.9


def test_offline_reference_logps_are_the_initial_model(offline_run):
    out, _, _ = offline_run
    assert_reference_logps_match(read_jsonl(out / "pairs" / "iter-3.jsonl"), load_model(out / "builtin" / "tiny-llama"))


VARIANTS = {"simpo": ("simpo", 0.0), "robust": ("robust", 0.1), "cdpo": ("sigmoid", 0.1)}


@pytest.fixture(scope="module")
def variant_passes(tiny_model):
    """Each DPO variant on the job's own Learner (DeepSpeed, no Ray; tests/learner_pairs_run.py): the loop around
    the loss is the same for every variant, and the DPO jobs above run it."""
    return printed_json([sys.executable, str(REPO / "tests" / "learner_pairs_run.py"), str(tiny_model),
                         *(f"{loss}:{eps}" for loss, eps in VARIANTS.values())], "RESULTS=")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_dpo_variant_loss_is_its_formula_pair_by_pair(variant_passes, variant):
    loss, label_smoothing = VARIANTS[variant]
    got = variant_passes[f"{loss}:{label_smoothing}"]
    first, second = got["passes"]

    def margin(records) -> float:
        return mean([r["policy_logp_chosen"] - r["policy_logp_rejected"] for r in records])

    assert all(math.isfinite(r["loss"]) for r in first + second)
    assert margin(second) > margin(first)  # the pass trained towards the chosen responses
    if loss == "simpo":  # reference-free: no frozen model is loaded
        assert all(ref == [None, None] for ref in got["reference"])
    else:
        assert all(None not in ref for ref in got["reference"])
    # Each pair's loss, as the learner computed it, against the variant's own formula (written here
    # apart from losses/): ignoring label_smoothing, or the wrong variant, changes every pair's loss.
    beta, eps, simpo_gamma = 0.5, label_smoothing, 0.5  # as tests/learner_pairs_run.py sets them; gamma: the default

    def minus_log_sigmoid(z: float) -> float:
        return math.log1p(math.exp(-z)) if z >= 0 else -z + math.log1p(math.exp(z))

    for i, pair in enumerate(first):
        if loss == "simpo":
            z = (beta * pair["policy_logp_chosen"] / got["chosen_tokens"][i]
                 - beta * pair["policy_logp_rejected"] / got["rejected_tokens"][i] - simpo_gamma)
        else:
            (ref_chosen, ref_rejected) = got["reference"][i]
            z = beta * ((pair["policy_logp_chosen"] - ref_chosen) - (pair["policy_logp_rejected"] - ref_rejected))
        clean, flipped = minus_log_sigmoid(z), minus_log_sigmoid(-z)
        expected = {"simpo": clean, "sigmoid": (1 - eps) * clean + eps * flipped,
                    "robust": ((1 - eps) * clean - eps * flipped) / (1 - 2 * eps)}[loss]
        assert pair["loss"] == pytest.approx(expected, rel=1e-4, abs=1e-6), (loss, pair)


@pytest.fixture(scope="module")
def fsft_run(tmp_path_factory):
    return run_job(tmp_path_factory, "fsft", "configs/fsft.yaml")


def test_fsft_pairs_each_demonstration_with_an_own_sample_scored_by_the_initial_model(fsft_run):
    out, _, _ = fsft_run
    pairs = read_jsonl(out / "pairs" / "iter-2.jsonl")
    assert pairs and all(p["chosen_source"] == "demonstration" and p["rejected_source"] == "on_policy" for p in pairs)
    assert all(p["chosen"].startswith("The answer is") for p in pairs)
    assert_reference_logps_match(pairs, load_model(out / "builtin" / "tiny-llama"))


def test_fsft_trains_each_pair_on_its_demonstration_nll_plus_the_pearson_penalty(fsft_run):
    """Each pair's recorded loss, recomputed from its own log-probs: the demonstration is "chosen",
    the own sample "rejected", and the penalty is (1/beta) g(beta log(pi/pi_ref)) with g(t) = t^2/4."""
    out, metrics, _ = fsft_run
    beta = 0.1
    for pair in read_jsonl(out / "pairs" / "iter-3.jsonl"):
        t = beta * (pair["policy_logp_rejected"] - pair["reference_logp_rejected"])
        expected = (-pair["policy_logp_chosen"] / len(pair["chosen_token_ids"])
                    + t * t / 4 / beta / len(pair["rejected_token_ids"]))
        assert pair["loss"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    # It is SFT: the demonstrations' per-token NLL, pair by pair, falls from the first iteration to the
    # last by more than its own spread across the pairs.
    def demonstration_nll(iteration) -> list[float]:
        return [-p["policy_logp_chosen"] / len(p["chosen_token_ids"])
                for p in read_jsonl(out / "pairs" / f"iter-{iteration}.jsonl") if p["loss"] is not None]

    last = len(metrics) - 1
    assert_rose_beyond_noise([-v for v in demonstration_nll(0)], [-v for v in demonstration_nll(last)],
                             "minus the demonstrations' NLL")
    for m in metrics:
        assert m["loss"] == pytest.approx(m["nll"] + m["fsft_penalty"], rel=1e-4)
    # The own samples drift from the initial model as SFT moves it, and the penalty grows with them.
    def own_log_ratio(iteration) -> list[float]:
        return [p["policy_logp_rejected"] - p["reference_logp_rejected"]
                for p in read_jsonl(out / "pairs" / f"iter-{iteration}.jsonl") if p["loss"] is not None]

    assert_rose_beyond_noise(own_log_ratio(0), own_log_ratio(last), "own samples' log pi/pi_ref")
    assert metrics[-1]["fsft_penalty"] > metrics[0]["fsft_penalty"] > 0
