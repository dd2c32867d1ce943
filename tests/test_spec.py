"""The job spec: defaults, overrides, and one clear line for every malformed spec."""

from __future__ import annotations

import pytest
import yaml

from jobs.core.errors import SpecError
from jobs.core.spec import JobSpec, apply_override, load_spec, validate_spec
from tests.conftest import REPO, assert_one_line, run_cli

# (spec text, words the single error line must contain)
MALFORMED = {
    "unknown top-level key": ("iteratoins: 3\n", ["iteratoins", "unknown field", "iterations"]),
    "unknown nested key": ("train:\n  lrr: 0.1\n", ["train.lrr", "unknown field", "lr"]),
    "wrong type": ("rollout:\n  workers: two\n", ["rollout.workers", "integer", "'two'"]),
    "out of range": ("rollout:\n  temperature: -1\n", ["rollout.temperature", "greater than or equal to 0"]),
    "bad choice": ("algorithm: ppo\n", ["algorithm", "'fdpg' or 'fsft'", "'ppo'"]),
    "zero stage 4": ("learner:\n  zero_stage: 4\n", ["learner.zero_stage", "0, 1, 2 or 3"]),
    "offload on zero 0": (
        "learner:\n  zero_stage: 0\n  offload: optimizer\n",
        ["learner.offload 'optimizer' needs learner.zero_stage 1, 2 or 3 (got 0)"],
    ),
    "parameter offload below zero 3": (
        "learner:\n  offload: optimizer_and_params\n",
        ["learner.offload 'optimizer_and_params' needs learner.zero_stage 3 (got 2)"],
    ),
    "lora rank 0": ("model:\n  lora: {r: 0}\n", ["model.lora.r", "greater than or equal to 1"]),
    "section is not a mapping": ("train: fast\n", ["train", "valid dictionary"]),
    "gamma range": ("train:\n  idft:\n    gamma_min: 3\n", ["train.idft", "gamma_min (3.0) must not exceed gamma_max"]),
    "batches do not tile samples": (
        "rollout:\n  prompts_per_iteration: 3\n",
        ["prompts_per_iteration", "micro_batch_size", "multiple"],
    ),
    "no room for the prompt": (
        "model:\n  max_model_len: 64\nrollout:\n  max_new_tokens: 64\n",
        ["rollout.max_new_tokens (64) must be smaller than model.max_model_len (64)"],
    ),
    "not yaml": ("train: [1, 2\n", ["not valid YAML", "line"]),
    "top level is a list": ("- 1\n- 2\n", ["expected a mapping", "list"]),
    "bad betas": ("train:\n  betas: [0.9]\n", ["train.betas", "too few items"]),
    "online dpo without rewards": ("algorithm: dpo\n", ["online dpo ranks samples by reward", "reward.sources is empty"]),
    "dpo with one sample per prompt": (
        "algorithm: dpo\nreward:\n  sources: [{kind: format}]\nrollout:\n  samples_per_prompt: 1\n",
        ["rollout.samples_per_prompt must be at least 2"],
    ),
    "unknown reward kind": ("reward:\n  sources: [{kind: vibes}]\n", ["reward.sources[0]", "'vibes'", "'math_answer'"]),
    "typo in a reward source": (
        "reward:\n  sources: [{kind: math_answer, wieght: 2}]\n",
        ["reward.sources[0].wieght", "unknown field", "weight"],
    ),
    "bad reward function": (
        "reward:\n  sources: [{kind: function, function: score}]\n",
        ["reward.sources[0]", "package.module:function_name", "'score'"],
    ),
    "irft against the initial model": (
        "algorithm: irft\npreference:\n  reference: initial\n", ["irft", "preference.reference must be 'sampler'"],
    ),
    "fsft against the sampler": (
        "algorithm: fsft\npreference:\n  reference: sampler\n", ["fsft", "preference.reference must be 'initial'"],
    ),
    "fsft sampling off the policy": (
        "algorithm: fsft\nrollout:\n  temperature: 0.7\n",
        ["algorithm fsft", "rollout.temperature and rollout.top_p must be 1", "0.7"],
    ),
    "broadcast with asynchronous generation": (
        "sync:\n  method: broadcast\nrollout:\n  max_policy_lag: 1\n",
        ["sync.method broadcast", "rollout.max_policy_lag > 0", "object_store"],
    ),
    "truncated IS on pairs": (
        "algorithm: dpo\nreward:\n  sources: [{kind: math_answer}]\ntrain:\n  truncated_is_cap: 2\n",
        ["train.truncated_is_cap", "sft and idft", "dpo"],
    ),
    "fsft divergence": ("algorithm: fsft\ntrain:\n  fsft:\n    divergence: kl\n", ["train.fsft.divergence", "'hellinger'", "'kl'"]),
    "offline with a sampler reference": (
        "algorithm: dpo\npreference:\n  source: dataset\n  reference: sampler\n",
        ["preference.reference must be 'initial'"],
    ),
    "label smoothing too large": ("train:\n  dpo:\n    label_smoothing: 0.5\n", ["train.dpo.label_smoothing", "less than 0.5"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_spec_fails_with_one_line_naming_the_field(tmp_path, case):
    text, expected_words = MALFORMED[case]
    spec_path = tmp_path / "bad.yaml"
    spec_path.write_text(text)
    result = run_cli(str(spec_path), "--output-dir", str(tmp_path / "out"), timeout=120)
    assert result.returncode == 2
    assert_one_line(result, "spec error: ", *expected_words)
    assert not (tmp_path / "out").exists()  # nothing is started or written for a bad spec


def test_bad_override_fails_with_one_line(tmp_path):
    result = run_cli("configs/onpolicy_idft.yaml", "--set", "rollout.workers", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "spec error: --set 'rollout.workers': expected KEY.PATH=VALUE, e.g. --set train.lr=1e-5"
    )


def test_missing_spec_file(tmp_path):
    result = run_cli(str(tmp_path / "nope.yaml"), timeout=120)
    assert result.returncode == 2
    assert_one_line(result, "spec error:", "nope.yaml: cannot read the spec file")


def test_every_shipped_config_is_valid():
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_spec(path)


def test_defaults_fill_in_and_round_trip():
    spec = validate_spec({"train": {"lr": "1e-4"}})  # YAML reads 1e-4 (no dot) as a string
    assert spec.train.lr == 1e-4
    assert spec.train.idft.beta == 1.0 and spec.train.idft.gamma_min == 0.1 and spec.train.idft.gamma_max == 2.0
    assert JobSpec.model_validate(yaml.safe_load(spec.to_yaml())) == spec


def test_overrides_parse_values_as_yaml_and_create_sections():
    raw = {"train": {"lr": 0.1}}
    apply_override(raw, "train.lr=2e-5")
    apply_override(raw, "train.idft.beta=0.5")
    apply_override(raw, "data.shuffle=false")
    apply_override(raw, "name=my-run")
    spec = validate_spec(raw)
    assert spec.train.lr == 2e-5 and spec.train.idft.beta == 0.5 and spec.data.shuffle is False
    assert spec.name == "my-run"


def test_override_into_a_value_is_rejected():
    with pytest.raises(SpecError, match="iterations is a value, not a section"):
        apply_override({"iterations": 3}, "iterations.x=1")


def test_derived_step_counts():
    spec = validate_spec({"rollout": {"prompts_per_iteration": 8, "samples_per_prompt": 4},
                          "learner": {"ranks": 2}, "train": {"micro_batch_size": 2, "gradient_accumulation_steps": 2,
                                                             "epochs_per_iteration": 3}})
    assert spec.samples_per_iteration == 32
    assert spec.optimizer_steps_per_iteration == 32 // (2 * 2 * 2) * 3


def test_a_spec_states_only_what_it_changes_over_its_base(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\ntrain:\n  lr: 1.0e-5\n  micro_batch_size: 2\n"
                                        "reward:\n  sources: [{kind: math_answer}, {kind: format}]\n")
    (tmp_path / "variants").mkdir()
    variant = tmp_path / "variants" / "low.yaml"
    variant.write_text("base: ../base.yaml\nname: low\ntrain:\n  lr: 2.0e-6\nreward:\n  sources: [{kind: format}]\n")
    spec = load_spec(variant, ["train.epochs_per_iteration=2"])
    assert (spec.name, spec.train.lr, spec.train.micro_batch_size, spec.train.epochs_per_iteration) == ("low", 2e-6, 2, 2)
    assert [s.kind for s in spec.reward.sources] == ["format"]  # a list replaces the base's, it does not append


@pytest.mark.parametrize("base, words", [
    ("missing.yaml", ["missing.yaml: cannot read the spec file"]),
    ("[a, b]", ["base must be the path of another spec file", "['a', 'b']"]),
    ("loop.yaml", ["loop.yaml", "base 'variant.yaml' leads back to a spec that extends it"]),
])
def test_a_broken_base_chain_is_one_line(tmp_path, base, words):
    (tmp_path / "loop.yaml").write_text("base: variant.yaml\n")
    (tmp_path / "variant.yaml").write_text(f"base: {base}\nname: variant\n")
    with pytest.raises(SpecError) as error:
        load_spec(tmp_path / "variant.yaml")
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message
