"""Shared fixtures: the tiny model, and running the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session):
    from tests.headless_browser import INSTALL, find_chromium

    if os.environ.get("CI") == "true" and find_chromium() is None:
        pytest.exit(f"CI=true and no headless browser: {INSTALL} (.ci/run does)", returncode=1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from jobs.core.builtin import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def tiny_tied_model(tmp_path_factory) -> Path:
    """Input and output embeddings share one tensor, as in SmolLM2, Qwen2.5-0.5B, Gemma."""
    from jobs.core.builtin import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama-tied", seed=0, tie_word_embeddings=True)


ONPOLICY_ARGS = ("configs/onpolicy_idft.yaml", "--set", "checkpoint.every=1")
TRACKERS_OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "MLFLOW_ALLOW_FILE_STORE": "true"}


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory, tiny_model):
    """A sequence-classification head on the tiny model's architecture: a reward model built here."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    config = LlamaConfig.from_pretrained(tiny_model, num_labels=1)
    torch.manual_seed(1)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():  # a freshly initialised head scores everything near 0; spread the rewards out
        model.score.weight.mul_(50.0)
    path = tmp_path_factory.mktemp("models") / "tiny-reward-model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def onpolicy_run(tmp_path_factory):
    """One uninterrupted run of configs/onpolicy_idft.yaml (3 iterations), shared by every module that needs one."""
    out = tmp_path_factory.mktemp("onpolicy")
    # checkpoint.every=1 keeps the weights each iteration's samples were drawn from. Every tracker rides
    # along (W&B offline, MLflow in a local file store): tests/test_trackers.py reads what they got.
    result = run_cli(*ONPOLICY_ARGS, "--output-dir", str(out), "--set", "logging.backends=[tensorboard, wandb, mlflow]",
                     f"logging.mlflow_tracking_uri=file://{out / 'mlruns'}", env=TRACKERS_OFFLINE)
    assert result.returncode == 0, f"job failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return out, result


@pytest.fixture(scope="session")
def hinted_run(tmp_path_factory):
    """configs/hinted_idft.yaml for 2 iterations (its eval actor after each, with 8 transfer problems):
    (out dir, training metrics).

    The loop waits for each eval before starting the next (eval.max_wait_seconds): on a loaded 2-core
    machine the eval of iteration 0 can outlast iteration 1, and the default (0) would skip an eval.
    """
    out = tmp_path_factory.mktemp("hinted")
    result = run_cli("configs/hinted_idft.yaml", "--output-dir", str(out), "--set", "iterations=2",
                     "--set", "checkpoint.every=1", "--set", "eval.max_wait_seconds=600",
                     "--set", "eval.transfer={path: 'builtin:arithmetic', prompt_column: prompt, problems: 8}")
    assert result.returncode == 0, f"job failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return out, [m for m in read_jsonl(out / "metrics.jsonl") if m.get("kind") != "eval"]


@pytest.fixture(scope="session")
def hinted_replica_run(tmp_path_factory):
    """configs/hinted_idft.yaml for 2 iterations with rollout.hinted.backend: replica and no eval: (out dir, metrics)."""
    out = tmp_path_factory.mktemp("hinted-replica")
    result = run_cli("configs/hinted_idft.yaml", "--output-dir", str(out), "--set", "iterations=2",
                     "checkpoint.every=1", "rollout.hinted.backend=replica", "eval.every=0")
    assert result.returncode == 0, f"job failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return out, [m for m in read_jsonl(out / "metrics.jsonl") if m.get("kind") != "eval"]


@pytest.fixture(scope="session")
def hinted_engine_only_run(tmp_path_factory):
    """configs/hinted_idft.yaml for 2 iterations with rollout.cll_check: engine (no replica in the rollout workers;
    the eval actor keeps its own for the forgetting metrics): (out dir, training metrics)."""
    out = tmp_path_factory.mktemp("hinted-engine-only")
    result = run_cli("configs/hinted_idft.yaml", "--output-dir", str(out), "--set", "iterations=2",
                     "checkpoint.every=1", "rollout.cll_check=engine", "eval.max_wait_seconds=600")
    assert result.returncode == 0, f"job failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return out, [m for m in read_jsonl(out / "metrics.jsonl") if m.get("kind") != "eval"]


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    """The tiny model's tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_cli(*args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m jobs.run ARGS` exactly as a user types it, from the repo root."""
    return subprocess.run(
        [sys.executable, "-m", "jobs.run", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def run_main(*args: str) -> subprocess.CompletedProcess:
    """`jobs.run.main(ARGS)` in this process, for refusals that stop before Ray starts: the CLI's exit code and what
    it prints, without a new interpreter's imports (seconds each). A refusal that failed to refuse would start Ray
    here: that is refused first. tests/test_spec.py keeps the same refusals through a real process (run_cli)."""
    import contextlib
    import io
    import traceback

    import ray

    from jobs import run as job_run

    out, err = io.StringIO(), io.StringIO()
    started = job_run.start_ray

    def no_ray(*_args, **_kwargs):
        raise AssertionError("run_main is for refusals: this job got as far as starting Ray")

    job_run.start_ray = no_ray
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = job_run.main(list(args))
            except SystemExit as exc:  # argparse
                code = exc.code
            except AssertionError:
                raise
            except Exception:  # what the interpreter would print, and its exit status
                traceback.print_exc()
                code = 1
    finally:
        job_run.start_ray = started
    assert not ray.is_initialized()
    return subprocess.CompletedProcess(["jobs.run", *args], code, out.getvalue(), err.getvalue())


def assert_one_line(result, prefix: str, *words: str) -> str:
    """The CLI's promise for bad input: exactly one stderr line, with `prefix` and `words`, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(prefix), lines[0]
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def vllm_prompt_logprobs(model_dir: str | Path, token_ids: list[int], timeout: float = 300) -> list[float]:
    """vLLM's teacher-forced log p of token_ids[1:] for a saved model, in a fresh process."""
    script = (
        "import json, sys\n"
        "from vllm import LLM, SamplingParams\n"
        "from vllm.inputs import TokensPrompt\n"
        "ids = json.loads(sys.argv[2])\n"
        "llm = LLM(model=sys.argv[1], dtype='float32', max_model_len=512, enforce_eager=True)\n"
        "out = llm.generate([TokensPrompt(prompt_token_ids=ids)], SamplingParams(max_tokens=1, prompt_logprobs=0),"
        " use_tqdm=False)[0]\n"
        "print('LOGPROBS=' + json.dumps([step[t].logprob for t, step in zip(ids[1:], out.prompt_logprobs[1:])]))\n"
    )
    import json

    result = subprocess.run(
        [sys.executable, "-c", script, str(model_dir), json.dumps(token_ids)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **os.environ,
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        },
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("LOGPROBS=")]
    assert result.returncode == 0 and lines, f"vLLM failed to load {model_dir}:\n{result.stderr[-3000:]}"
    return json.loads(lines[-1].removeprefix("LOGPROBS="))


def printed_json(command: list, prefix: str, timeout: float = 600):
    """Run `command` from the repo root and return the JSON it printed on its last line starting with `prefix`
    (the helper scripts beside the tests print their results so)."""
    import json

    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    lines = [line for line in result.stdout.splitlines() if line.startswith(prefix)]
    assert result.returncode == 0 and lines, result.stderr[-4000:]
    return json.loads(lines[-1].removeprefix(prefix))


def independent_token_stats(model, prompt_ids: list[int], response_ids: list[int]) -> list[tuple[float, float]]:
    """(log p_t, H_t) of each response token from full logits, in float64, written apart from losses/."""
    import torch

    ids = torch.tensor([list(prompt_ids) + list(response_ids)])
    with torch.no_grad():
        logits = model(ids).logits[0].double()
    values = []
    for position in range(len(prompt_ids), ids.shape[1]):
        log_dist = torch.log_softmax(logits[position - 1], dim=-1)
        entropy = -(log_dist.exp() * log_dist).sum()
        values.append((float(log_dist[ids[0, position]]), float(entropy)))
    return values


def read_jsonl(path) -> list[dict]:
    import json

    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def assert_rose_beyond_noise(before: list[float], after: list[float], what: str, z: float = 2.0) -> None:
    """mean(after) exceeds mean(before) by more than z standard errors of that difference, the errors
    measured on these values themselves (per sample or per pair, from the same run): a bound set by
    the run's own noise, not by a number seen in an earlier run. With z = 2 a run in which nothing
    changed passes about 2% of the time (one-sided normal tail)."""
    import statistics

    difference = statistics.fmean(after) - statistics.fmean(before)
    error = (statistics.pvariance(before) / len(before) + statistics.pvariance(after) / len(after)) ** 0.5
    assert difference > z * error, (f"{what}: {statistics.fmean(before):.4g} -> {statistics.fmean(after):.4g} "
                                    f"(+{difference:.4g}), not above {z} x its standard error {error:.4g}")
