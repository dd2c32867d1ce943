"""Run a job spec: `python -m jobs.run SPEC [--output-dir DIR] [--set a.b=value ...]`.

Starts a local Ray, or joins the cluster named by RAY_ADDRESS (which is what
`ray job submit` sets), then runs the recipe the spec's `algorithm` selects.
Bad input ends the run with one line on stderr naming what is wrong, and a
non-zero exit: 2 for a bad spec, 1 for anything else.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from jobs import builtin
from jobs.errors import HintflowError, ModelError, SpecError
from jobs.progress import summary
from jobs.spec import JobSpec, is_builtin, load_spec


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.run", description=__doc__.split("\n")[0])
    parser.add_argument("spec", help="YAML job spec, e.g. configs/hinted_idft.yaml")
    parser.add_argument("--output-dir", help="where outputs go (default: output_dir in the spec, or runs/<name>)")
    parser.add_argument(
        "--actor-logs", action="store_true",
        help="show the actors' own output (vLLM, DeepSpeed) in this terminal; it always goes to Ray's session logs",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a spec field, e.g. --set train.lr=1e-5 (repeatable)",
    )
    return parser.parse_args(argv)


def resolve_model(spec: JobSpec, outputs) -> str:
    """A local path the actors can load: builds the builtin model, checks user paths up front."""
    path = spec.model.path
    if is_builtin(path):
        if path != builtin.TINY_LLAMA:
            raise ModelError(f"model.path: unknown builtin {path!r}; expected {builtin.TINY_LLAMA!r}")
        return str(builtin.build_tiny_llama(outputs.dir / "builtin" / "tiny-llama", seed=spec.seed))
    return resolve_model_path(path, "model.path", f", or {builtin.TINY_LLAMA!r}")


def resolve_model_path(path: str, field: str, alternatives: str = "") -> str:
    """A local HF folder as it is, or a hub id fetched once here so every actor finds it in the local cache."""
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelError(f"{field}: {path!r} has no config.json; expected a Hugging Face model folder")
        return str(local.resolve())
    if path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise ModelError(
            f"{field}: {path!r} does not exist; expected a local model folder, a hub id like "
            f"'HuggingFaceTB/SmolLM2-135M-Instruct'{alternatives}"
        )
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(path)
    except Exception as exc:
        raise ModelError(f"{field}: cannot fetch hub model {path!r} ({type(exc).__name__}: {exc})") from None


def load_tokenizer(model_path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_path)
    except Exception as exc:
        raise ModelError(f"model.path: cannot load a tokenizer from {model_path!r} ({exc})") from None


def actor_env_vars(spec: JobSpec) -> dict[str, str]:
    threads = str(max(1, round(min(spec.rollout.cpus_per_worker, spec.learner.cpus_per_rank))))
    return {
        "OMP_NUM_THREADS": threads,
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }


def start_ray(actor_logs: bool) -> None:
    import ray

    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=actor_logs, logging_level=logging.ERROR)  # `ray job submit` sets RAY_ADDRESS
    else:
        ray.init(include_dashboard=False, log_to_driver=actor_logs, logging_level=logging.ERROR)


def check_cluster_fits(spec: JobSpec) -> None:
    """Fail now, not after Ray waits forever for an actor that can never be placed."""
    import ray

    have = ray.cluster_resources()
    for resource, per_worker, per_rank, reward in (
        ("GPU", spec.rollout.gpus_per_worker, spec.learner.gpus_per_rank, spec.reward.gpus),
        ("CPU", spec.rollout.cpus_per_worker, spec.learner.cpus_per_rank, spec.reward.cpus),
    ):
        workers = spec.rollout.workers if spec.uses_rollout else 0
        need = workers * per_worker + spec.learner.ranks * per_rank + (reward if spec.reward.sources else 0)
        if need > have.get(resource, 0):
            kind = resource.lower()
            raise SpecError(
                f"the job needs {need:g} {resource}s (rollout.workers x rollout.{kind}s_per_worker + "
                f"learner.ranks x learner.{kind}s_per_rank + reward.{kind}s) but the Ray cluster has "
                f"{have.get(resource, 0):g}"
            )


def unwrap_user_error(exc: BaseException) -> HintflowError | None:
    """A HintflowError raised inside an actor arrives wrapped by Ray; find the original."""
    seen: BaseException | None = exc
    while seen is not None:
        # Ray's wrapper subclasses the original error type too, but its message
        # is the remote traceback: always descend to `.cause` first.
        cause = getattr(seen, "cause", None)
        if isinstance(cause, BaseException) and cause is not seen:
            seen = cause
            continue
        if isinstance(seen, HintflowError):
            return seen
        seen = seen.__cause__
    return None


def written_response_columns(spec: JobSpec) -> list[str]:
    """The columns whose responses the job trains on or scores as written."""
    if spec.algorithm == "irft" or spec.rollout.mode != "on_policy":
        return [spec.data.solution_column]
    if spec.trains_on_pairs and spec.preference.source == "dataset":
        return [spec.data.chosen_column, spec.data.rejected_column]
    return []


def run(spec: JobSpec, output_dir: str, actor_logs: bool = False) -> list[dict]:
    import ray

    from actors.reward_sources import check_reward_sources
    from jobs.data import check_columns, load_prompts
    from jobs.onpolicy import run_onpolicy
    from jobs.run_outputs import RunOutputs

    started = time.perf_counter()
    outputs = RunOutputs(output_dir)
    spec.output_dir = str(outputs.dir)
    outputs.save_spec(spec)
    model_path = resolve_model(spec, outputs)
    # Every row, reward source and model path is checked before any actor starts: bad input fails in seconds.
    tokenizer = load_tokenizer(model_path)
    prompts = load_prompts(spec.data, tokenizer, spec.max_prompt_tokens)
    check_columns(prompts, written_response_columns(spec), tokenizer, spec.model.max_model_len)
    reward_model_paths = check_reward_sources(spec, prompts, resolve_model_path)
    start_ray(actor_logs)
    try:
        check_cluster_fits(spec)
        history = run_onpolicy(
            spec, outputs, model_path, prompts, actor_env_vars(spec), tokenizer, reward_model_paths
        )
    finally:
        ray.shutdown()
    print(summary(spec.name, history, str(outputs.dir), time.perf_counter() - started), flush=True)
    return history


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = load_spec(args.spec, args.overrides)
        output_dir = args.output_dir or spec.output_dir or str(Path("runs") / spec.name)
        run(spec, output_dir, actor_logs=args.actor_logs)
    except SpecError as exc:
        print(exc.one_line(), file=sys.stderr)
        return 2
    except Exception as exc:
        user_error = unwrap_user_error(exc)
        if user_error is None:
            raise
        print(user_error.one_line(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
