"""Issue 26, the first hour of a new user: a held-out split that is real, checkpoints by default,
offline DPO as the README types it, GPU docs whose commands Ray accepts.

Everything here but the last test is a unit test (no Ray cluster, no vLLM engine, no learner).
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobs.core.data import heldout_indices, heldout_prompts, load_prompts

from jobs.core.records import Prompt
from jobs.core.errors import DataError
from jobs.core.spec import load_spec, validate_spec
from tests.conftest import REPO, read_jsonl, run_cli, write_jsonl


class WordTokenizer:
    """Enough of a tokenizer for data.chat_template 'none': one id per word."""

    eos_token_id = 0
    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True):
        return SimpleNamespace(input_ids=[1 + len(word) for word in text.split()])


def job(path: str, **sections) -> "JobSpec":  # noqa: F821
    raw = {
        "data": {"path": path, "chat_template": "none", **sections.pop("data", {})},
        "reward": {"sources": [{"kind": "math_answer"}]},
        "eval": {"every": 1, **sections.pop("eval", {})},
        **sections,
    }
    return validate_spec(raw)


def training_and_heldout(spec):
    """The two prompt lists exactly as the job builds them: jobs/run.py for training, eval_inputs for the eval."""
    tokenizer = WordTokenizer()
    training, _ = load_prompts(spec.data, tokenizer, spec.max_prompt_tokens)
    return training, heldout_prompts(spec, tokenizer)


@pytest.fixture
def forty_rows(tmp_path) -> Path:
    return write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"question {i}", "answer": str(i)} for i in range(40)])


def source_kinds(rows_file: Path) -> dict:
    return {
        "jsonl file": job(str(rows_file), eval={"problems": 32}),
        # data.seed 10: seed 11's first 64 problems repeat one of seed 10's (a collision the eval must drop)
        "builtin:arithmetic": job("builtin:arithmetic", data={"seed": 10}, eval={"problems": 64}),
        "builtin:word-problems": job("builtin:word-problems", data={"max_prompts": 30}, eval={"problems": 20}),
        # sums of two small terms; seed 1's problem i is seed 0's problem i + 1 (Random(seed + i))
        "reasoning-gym:chain_sum": job(
            "reasoning-gym:chain_sum", eval={"problems": 20},
            data={"prompt_column": "question", "max_prompts": 40,
                  "task_options": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}},
        ),
    }


@pytest.mark.parametrize("kind", ["jsonl file", "builtin:arithmetic", "builtin:word-problems", "reasoning-gym:chain_sum"])
def test_no_eval_prompt_is_a_training_prompt(kind, forty_rows):
    spec = source_kinds(forty_rows)[kind]
    training, heldout = training_and_heldout(spec)
    assert training and heldout
    assert not {p.text for p in heldout} & {p.text for p in training}
    if kind.startswith("reasoning-gym"):
        # chain_sum draws problem i from Random(seed + i): seed 1's first 20 are seed 0's problems 1-20,
        # so the eval has to look past the training problems to fill eval.problems.
        assert len(heldout) == spec.eval.problems


def test_a_file_is_split_by_row_index_and_prompts_keep_their_row_numbers(forty_rows):
    spec = job(str(forty_rows), eval={"problems": 32})
    training, heldout = training_and_heldout(spec)
    assert len(heldout) == math.ceil(0.1 * 40) == len(heldout_indices(40, 0.1))
    assert sorted(p.index for p in training + heldout) == list(range(40))  # nothing lost, nothing twice
    assert {p.index for p in heldout} == heldout_indices(40, 0.1)
    assert all(p.row["answer"] == str(p.index) for p in training + heldout)
    # Deterministic: the same rows again, and the split of a row never depends on the others' content.
    assert [p.index for p in training_and_heldout(spec)[1]] == [p.index for p in heldout]


def test_without_an_eval_nothing_is_held_out(forty_rows):
    training, _ = load_prompts(job(str(forty_rows), eval={"every": 0}).data, WordTokenizer(), 400)
    assert len(training) == 40
    with_own_file = job(str(forty_rows), eval={"data_path": str(forty_rows)})
    assert len(load_prompts(with_own_file.data, WordTokenizer(), 400)[0]) == 40


@pytest.mark.parametrize("rows, fraction", [(1, 0.1), (5, 0.9)])
def test_a_split_that_leaves_a_side_empty_is_refused_in_one_line(tmp_path, rows, fraction):
    path = write_jsonl(tmp_path / "few.jsonl", [{"prompt": f"q{i}", "answer": "1"} for i in range(rows)])
    with pytest.raises(DataError) as caught:
        load_prompts(job(str(path), eval={"holdout_fraction": fraction}).data, WordTokenizer(), 400)
    line = caught.value.one_line()
    assert "eval.holdout_fraction" in line and "eval.data_path" in line and "\n" not in line


def test_the_transfer_task_is_not_split_like_the_training_file(forty_rows):
    from actors.evaluation import transfer_data_spec

    spec = job(str(forty_rows), eval={"transfer": {"path": "builtin:arithmetic", "prompt_column": "prompt"}})
    assert spec.data._part is not None and transfer_data_spec(spec)._part is None


# -- checkpoints by default ------------------------------------------------------------------------

def test_checkpoint_due_whichever_comes_first():
    from jobs.core.checkpoints import checkpoint_due

    def due(iteration, seconds, every=10, every_seconds=1800, last=99):
        return checkpoint_due(iteration, last, every, every_seconds, seconds)

    assert [i for i in range(30) if due(i, 0)] == [9, 19, 29]
    assert due(3, 1800) and not due(3, 1799.9)
    assert due(99, 0, every=0, every_seconds=0)  # the last iteration always
    assert not due(9, 10_000, every=0, every_seconds=0)
    assert due(4, 2000, every=0) and not due(8, 0, every=0)


def test_every_shipped_spec_checkpoints_within_10_iterations_or_30_minutes():
    from jobs.core.operations_spec import CheckpointSpec

    assert (CheckpointSpec().every, CheckpointSpec().every_seconds) == (10, 1800)
    for path in sorted((REPO / "configs").glob("*.yaml")):
        checkpoint = load_spec(path).checkpoint
        assert 0 < checkpoint.every <= 10 or 0 < checkpoint.every_seconds <= 1800, path.name
    for name in ("gpu-1x.yaml", "gpu-node.yaml"):  # stated in the GPU specs, not left to the defaults
        assert "every_seconds:" in (REPO / "configs" / name).read_text()


# -- offline DPO as the README types it ------------------------------------------------------------

def readme_offline_dpo_command() -> list[str]:
    lines = [line for line in (REPO / "README.md").read_text().splitlines()
             if "jobs.run configs/dpo.yaml" in line and "preference.source=dataset" in line]
    assert len(lines) == 1, lines
    words = shlex.split(lines[0])
    assert words[:4] == [".venv/bin/python", "-m", "jobs.run", "configs/dpo.yaml"]
    return words[4:]


def overrides(words: list[str]) -> list[str]:
    return [value for flag, value in zip(words, words[1:]) if flag == "--set"]


PAIRS = [{"prompt": f"What is {i} + {i}?", "chosen": f"The answer is {2 * i}.", "rejected": "I do not know."}
         for i in range(8)]


def test_the_readme_offline_dpo_spec_needs_no_gold_answers():
    from actors.rewards.sources import check_reward_sources

    words = readme_offline_dpo_command()
    assert "reward.sources=[]" not in words
    spec = load_spec(REPO / "configs/dpo.yaml", overrides(words))
    assert not spec.uses_rollout and spec.reward.sources == []  # no reward actor to start
    rows = [Prompt(index=i, text=row["prompt"], token_ids=(1,), row=row) for i, row in enumerate(PAIRS)]
    check_reward_sources(spec, rows, resolve_model=None)
    # With an eval, the sources stay (the eval's verifier), and the offline rows still need no gold answer.
    evaluated = load_spec(REPO / "configs/dpo.yaml", [*overrides(words), "eval.every=1"])
    assert [s.kind for s in evaluated.reward.sources] == ["math_answer", "function"]
    check_reward_sources(evaluated, rows, resolve_model=None)


def test_a_run_that_samples_nothing_has_no_samples_folder(tmp_path):
    from jobs.outputs.run_outputs import RunOutputs

    outputs = RunOutputs(tmp_path / "run")
    assert not outputs.samples_dir.exists() and outputs.checkpoints_dir.is_dir()
    outputs.write_samples(0, [])
    assert (outputs.samples_dir / "iter-0.jsonl").is_file()


@pytest.mark.integration
def test_the_readme_offline_dpo_command_runs_and_its_summary_names_only_files_that_exist(tmp_path):
    """The README's command as typed, on an 8-pair file without an answer column (2 iterations, 1 rank)."""
    prefs = write_jsonl(tmp_path / "prefs.jsonl", PAIRS)
    out = tmp_path / "out"
    args = [f"data.path={prefs}" if word == "data.path=prefs.jsonl" else word for word in readme_offline_dpo_command()]
    result = run_cli("configs/dpo.yaml", *args, "--output-dir", str(out),
                     "--set", "iterations=2", "--set", "learner.ranks=1", timeout=300)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "rollout worker" not in result.stdout and "reward actor" not in result.stdout
    assert len(read_jsonl(out / "pairs" / "iter-1.jsonl")) > 0 and not (out / "samples").exists()
    listed = next(line for line in result.stdout.splitlines() if line.startswith("  metrics "))
    for word in listed.split()[1:]:
        if "." in word:  # a file (labels are bare words): iter-N stands for every iteration, so iter-0 exists
            assert (out / word.replace("iter-N", "iter-0")).is_file(), f"the summary names {word}: {listed}"
        else:
            assert (out / word).exists() or (out / f"{word}.yaml").exists(), f"the summary names {word}: {listed}"


# -- GPU docs a cluster user can follow --------------------------------------------------------------

DOCS = ("README.md", "docs/gpu.md", "docs/operations.md")


def test_every_runtime_env_json_in_the_docs_is_one_ray_accepts_and_installs_nothing():
    from ray.dashboard.modules.dashboard_sdk import parse_runtime_env_args
    from ray.runtime_env import RuntimeEnv

    found = {doc: re.findall(r"--runtime-env-json '([^']*)'", (REPO / doc).read_text()) for doc in DOCS}
    assert found["docs/gpu.md"], "docs/gpu.md gives no --runtime-env-json"
    for doc, given in found.items():
        for text in given:
            # What `ray job submit --working-dir . --runtime-env-json ...` builds, then Ray's own validation.
            env = RuntimeEnv(**parse_runtime_env_args(runtime_env_json=text, working_dir="."))
            assert set(json.loads(text)) <= {"working_dir", "env_vars"}, (doc, text)  # the same environment on every node
            assert all(isinstance(v, str) for v in env.get("env_vars", {}).values())


def test_the_docs_name_no_path_outside_the_repository():
    for doc in (*DOCS, "configs/gpu-1x.yaml", "configs/gpu-node.yaml"):
        text = (REPO / doc).read_text()
        assert "shared/" not in text and "ALGORITHMS.md" not in text, doc


def test_the_gpu_extra_is_pinned_to_the_tested_vllm_versions():
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["gpu"] == ["vllm>=0.26,<0.33"]


def test_the_one_gpu_spec_is_the_answer_first_recipe_with_a_verifier_and_an_eval():
    spec = load_spec(REPO / "configs/gpu-1x.yaml")
    assert (spec.rollout.mode, spec.algorithm, spec.rollout.hinted.verifier) == ("hinted", "idft", "math_answer")
    assert spec.eval.every > 0 and spec.eval.verifier == "math_answer" and spec.eval.gpus > 0
    assert spec.model.path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (spec.data.path, spec.data.solution_column) == ("reasoning-gym:gsm_symbolic", "metadata.answer_cot")


class _Checkpoint:
    """What spec_changes reads of a checkpoint: the spec it was written under, its iteration and name."""

    def __init__(self, spec):
        from pathlib import Path

        self.spec, self.iteration, self.path = spec.model_dump(mode="json"), 0, Path("iter-0")

    def loop_state(self):
        return {"spec": self.spec}


@pytest.mark.parametrize("then, now, refused", [
    ({"eval.every": 1}, {"eval.every": 0}, True),             # the eval off: the held-out rows would train
    ({"eval.every": 0}, {"eval.every": 2}, True),             # the eval on: rows trained on become held out
    ({"eval.every": 1}, {"eval.every": 3}, False),            # still on: the same split
    ({"eval.holdout_fraction": 0.1}, {"eval.holdout_fraction": 0.2}, True),
])
def test_a_resume_cannot_move_the_rows_of_a_fixed_dataset_between_training_and_eval(tmp_path, then, now, refused):
    from jobs.core.errors import SpecError
    from jobs.resume import spec_changes
    from jobs.core.spec import JobSpec

    def job(**fields):
        rows = tmp_path / "rows.jsonl"
        rows.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": str(i)}) + "\n" for i in range(20)))
        base = {"iterations": 5, "data": {"path": str(rows)}, "reward": {"sources": [{"kind": "math_answer"}]},
                "eval": {"every": 1}}
        for key, value in fields.items():
            base["eval"][key.split(".")[1]] = value
        return JobSpec.model_validate(base)

    checkpoint = _Checkpoint(job(**then))
    if refused:
        with pytest.raises(SpecError, match="cannot change mid-run"):
            spec_changes(checkpoint, job(**now))
    else:
        spec_changes(checkpoint, job(**now))
    # a generated source has no split: the eval may go on and off
    generated = JobSpec.model_validate({"iterations": 5, "reward": {"sources": [{"kind": "math_answer"}]},
                                        "eval": {"every": 1}})
    spec_changes(_Checkpoint(generated), generated.model_copy(update={"eval": generated.eval.model_copy(
        update={"every": 0})}))
