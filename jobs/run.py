"""Run a job spec: `python -m jobs.run SPEC [--output-dir DIR] [--set a.b=value ...] [--check]`.

Starts a local Ray, or joins the cluster named by RAY_ADDRESS (which is what
`ray job submit` sets), then runs the recipe the spec's `algorithm` selects.
Bad input ends the run with one line on stderr naming what is wrong, and a
non-zero exit: 2 for a bad spec, 1 for anything else. Ctrl-C or SIGTERM stops
at the next safe point with a checkpoint, prints the command that resumes the
run, and exits 130 or 143 (jobs/stop_signals.py). GPU layouts that cannot work are refused
before Ray starts (jobs/gpu_checks.py); `--check` stops right after those checks.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.core import builtin
from jobs.core.checkpoints import Checkpoint, CheckpointStore
from jobs.core.errors import HintflowError, ModelError, SpecError
from jobs.gpu_checks import check_gpu_spec
from jobs.outputs.progress import summary
from jobs.resume import resume_point, spec_changes
from jobs.core.spec import JobSpec, is_builtin, load_spec
from jobs.stop_signals import StopRequests

if TYPE_CHECKING:
    from jobs.onpolicy import LoopEnd


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.run", description=__doc__.split("\n")[0],
        usage="%(prog)s SPEC [--set KEY=VALUE ...] [--output-dir DIR] [--resume DIR] [--overwrite] [--actor-logs] "
        "[--quiet] [--check]",
    )
    # Optional here only so that a spec swallowed by --set (below) gets a message that says so.
    parser.add_argument("spec", nargs="?", help="YAML job spec, e.g. configs/hinted_idft.yaml")
    parser.add_argument("--output-dir", help="where outputs go (default: output_dir in the spec, or runs/<name>)")
    parser.add_argument(
        "--actor-logs", action="store_true",
        help="show the actors' own output (vLLM, DeepSpeed) in this terminal; it always goes to Ray's session logs",
    )
    parser.add_argument(
        "--quiet", action="store_true",
        help="no progress lines while the job runs (phases, heartbeats inside long ones, evals): only the summary "
        "at the end, and errors",
    )
    parser.add_argument(
        "--resume", metavar="DIR",
        help="continue the run in DIR (its output directory) from its newest complete checkpoint, "
        "or from DIR if it is one checkpoint folder (DIR/checkpoints/iter-N)",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="start over in an output directory that holds an earlier run's checkpoints (they are deleted)",
    )
    parser.add_argument(
        "--set", dest="overrides", nargs="+", action="append", default=[], metavar="KEY=VALUE",
        help="override spec fields: one or more KEY=VALUE per --set, and --set may repeat, e.g. "
        "--set train.lr=1e-5 iterations=3 --set eval.every=0 (values are read as YAML; put SPEC before --set)",
    )
    parser.add_argument(
        "--check", action="store_true",
        help="validate the spec, refuse what cannot work on its GPUs, print the resolved placement and exit; "
        "starts no Ray and needs no GPU",
    )
    args = parser.parse_args(argv)
    args.overrides = [assignment for group in args.overrides for assignment in group]
    if args.spec is None:
        # `--set a=1 SPEC`: --set takes every word up to the next option, the spec included.
        swallowed = [word for word in args.overrides if "=" not in word]
        parser.error(f"--set read {swallowed[-1]!r} as an override (it takes every word up to the next option); "
                     f"give the spec first: python -m jobs.run SPEC --set KEY=VALUE ..."
                     if swallowed else "the following arguments are required: SPEC")
    return args


def resolve_model(spec: JobSpec, outputs) -> str:
    """A local path the actors can load: builds the builtin model, checks user paths up front."""
    return model_folder(spec.model.path, "model.path", outputs.dir, seed=spec.seed)


def model_folder(path: str, field: str, run_dir: Path, seed: int = 0) -> str:
    """`path` as a local model folder: builtin:tiny-llama built under run_dir/builtin/, else resolve_model_path."""
    if is_builtin(path):
        if path != builtin.TINY_LLAMA:
            raise ModelError(f"{field}: unknown builtin {path!r}; expected {builtin.TINY_LLAMA!r}")
        return str(builtin.build_tiny_llama(Path(run_dir) / "builtin" / "tiny-llama", seed=seed))
    return resolve_model_path(path, field, f", or {builtin.TINY_LLAMA!r}")


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


def load_tokenizer(model_path: str, trust_remote_code: bool):
    """The model's tokenizer, once its config has loaded here: a model the actors cannot load fails now."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelError(f"model.path: cannot load the model config from {model_path!r} ({exc})") from None
    try:
        return AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelError(f"model.path: cannot load a tokenizer from {model_path!r} ({exc})") from None


def actor_env_vars(spec: JobSpec) -> dict[str, str]:
    """What every actor's environment holds; each adds its own thread count (actors.placement.thread_env)."""
    return {
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }


DEEPSPEED_CPU_NOTICE = "Setting accelerator to CPU."


def without_deepspeed_cpu_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(DEEPSPEED_CPU_NOTICE)


def silence_deepspeed_cpu_notice() -> None:
    """Keep DeepSpeed's "Setting accelerator to CPU..." warning out of the driver's stdout.

    The driver never runs DeepSpeed, but transformers' save_pretrained (building the builtin model) imports
    it through accelerate, and on a machine without a GPU that import logs the warning to stdout (DeepSpeed's
    "DeepSpeed" logger writes there). A filter on that logger, made here before DeepSpeed makes it its own,
    drops this one message in this process; every other DeepSpeed message passes. The learners set
    DS_ACCELERATOR before they import DeepSpeed, so they never log it.
    """
    deepspeed_logger = logging.getLogger("DeepSpeed")
    if without_deepspeed_cpu_notice not in deepspeed_logger.filters:
        deepspeed_logger.addFilter(without_deepspeed_cpu_notice)


def start_ray(actor_logs: bool) -> None:
    import ray

    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=actor_logs, logging_level=logging.ERROR)  # `ray job submit` sets RAY_ADDRESS
    else:
        # "local": a private instance even when `ray start` left a cluster address on this machine.
        ray.init(address="local", include_dashboard=False, log_to_driver=actor_logs, logging_level=logging.ERROR)


def check_cluster_fits(spec: JobSpec) -> None:
    """Fail now, not after Ray waits forever for an actor that can never be placed."""
    import ray

    have = ray.cluster_resources()
    for resource, per_worker, per_rank, reward, evaluation in (
        ("GPU", spec.rollout.gpus_per_worker, spec.learner.gpus_per_rank, spec.reward.gpus, spec.eval.gpus),
        ("CPU", spec.rollout.cpus_per_worker, spec.learner.cpus_per_rank, spec.reward.cpus, spec.eval.cpus),
    ):
        workers = spec.rollout.workers if spec.uses_rollout else 0
        need = (workers * per_worker + spec.learner.ranks * per_rank + (reward if spec.reward.sources else 0)
                + (evaluation if spec.eval.every else 0))
        if need > have.get(resource, 0):
            kind = resource.lower()
            raise SpecError(
                f"the job needs {need:g} {resource}s (rollout.workers x rollout.{kind}s_per_worker + "
                f"learner.ranks x learner.{kind}s_per_rank + reward.{kind}s + eval.{kind}s) but the Ray cluster "
                f"has {have.get(resource, 0):g}"
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
    if spec.pairs_demonstrations_with_own_samples or spec.rollout.mode != "on_policy":
        return [spec.data.solution_column]
    if spec.trains_on_pairs and spec.preference.source == "dataset":
        return [spec.data.chosen_column, spec.data.rejected_column]
    return []


def submitted_by_ray_job() -> bool:
    """Whether this driver is the entrypoint of a `ray job submit`.

    Ray's job supervisor starts the entrypoint with RAY_JOB_CONFIG_JSON_ENV_VAR set, for the driver only
    (ray/dashboard/modules/job/job_supervisor.py, _get_driver_env_vars). RAY_JOB_ID is not a sign: Ray strips
    it from the entrypoint's environment (ray-project/ray#48621), and no RAY_SUBMISSION_ID is set.
    """
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def resume_command(args: argparse.Namespace, output_dir: Path) -> str:
    """What to type to continue this run: the same spec and overrides (fixed fields must match).

    Run here, it starts with this very interpreter (a bare `python` may be another one, without hintflow's
    packages); a submitted job is submitted again, where `python` is whatever the cluster's PATH gives, as
    for the first submission.
    """
    words = ["-m", "jobs.run", args.spec]
    for assignment in args.overrides:
        words += ["--set", assignment]
    words += ["--resume", str(output_dir)]
    if submitted_by_ray_job():
        return shlex.join(["ray", "job", "submit", "--working-dir", ".", "--", "python", *words])
    return shlex.join([sys.executable, *words])


def prepare_output_dir(outputs, args: argparse.Namespace, resuming: bool) -> None:
    """Clear away half-written checkpoints; never start a new run over an earlier run's checkpoints by accident."""
    store = CheckpointStore(outputs.checkpoints_dir)
    store.remove_partial()
    earlier = store.latest()
    if earlier and not resuming:
        if not args.overwrite:
            raise SpecError(
                f"{outputs.dir} already holds checkpoints of an earlier run (newest: {earlier.path.name}); "
                f"continue it with --resume {outputs.dir}, start over with --overwrite, or pick another --output-dir"
            )
        for checkpoint in store.complete():
            shutil.rmtree(checkpoint.path)


def run(spec: JobSpec, output_dir: Path, args: argparse.Namespace, stop: StopRequests, resume: Checkpoint | None = None,
        changes: dict | None = None) -> "LoopEnd":
    import ray

    from actors.learner_group import LearnerDied
    from actors.training.trainable_model import check_trainable_model
    from actors.rewards.sources import check_reward_sources
    from jobs.core.data import check_columns, load_prompts
    from jobs.outputs.metrics_rows import RunMetrics
    from jobs.onpolicy import RunContext, run_onpolicy
    from jobs.outputs.run_outputs import RunOutputs
    from jobs.outputs.trackers import check_backends

    started = time.perf_counter()
    outputs = RunOutputs(output_dir)
    prepare_output_dir(outputs, args, resuming=resume is not None)
    spec.output_dir = str(outputs.dir)
    outputs.save_spec(spec)
    if resume:
        outputs.record_resume(resume, changes or {})
    check_backends(spec)
    model_path = resolve_model(spec, outputs)
    # Every row, reward source and model path is checked before any actor starts: bad input fails in seconds.
    tokenizer = load_tokenizer(model_path, spec.model.trust_remote_code)
    check_trainable_model(spec, model_path)
    prompts, prompt_counts = load_prompts(spec.data, tokenizer, spec.max_prompt_tokens)
    if any(prompt_counts.values()):
        print(f"[hintflow] prompts over {spec.max_prompt_tokens} tokens (data.overlong_prompts: "
              f"{spec.data.overlong_prompts}): {prompt_counts['prompts_dropped_too_long']} dropped, "
              f"{prompt_counts['prompts_truncated']} truncated", flush=True)
    check_columns(prompts, written_response_columns(spec), tokenizer, spec.model.max_model_len)
    reward_model_paths = check_reward_sources(spec, prompts, resolve_model_path)
    restarts = 0
    while True:
        start_ray(args.actor_logs)
        stop.install()
        try:
            check_cluster_fits(spec)
            end = run_onpolicy(RunContext(
                spec, outputs, model_path, prompts, actor_env_vars(spec), tokenizer, reward_model_paths,
                stop, resume, started, prompt_counts, quiet=args.quiet,
            ))
            break
        except LearnerDied as exc:
            latest = CheckpointStore(outputs.checkpoints_dir).latest()
            where = f"last good checkpoint: {latest.path}" if latest else "no checkpoint written yet"
            if latest is None or restarts >= spec.faults.job_restarts:
                how = f"; resume with: {resume_command(args, outputs.dir)}" if latest else "; start the job again"
                raise LearnerDied(f"{exc}; {where}{how}", exc.rank) from None
            restarts += 1
            print(f"[hintflow] {exc}; restarting from {latest.path} "
                  f"(restart {restarts} of faults.job_restarts={spec.faults.job_restarts})", flush=True)
            resume = latest
        finally:
            # Also the clean slate for a restart: every actor of the failed attempt goes with the session.
            ray.shutdown()
    if not stop.requested:
        evals = RunMetrics.read(outputs.dir).eval
        print(summary(spec.name, end.history, str(outputs.dir), time.perf_counter() - started, evals), flush=True)
    return end


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    silence_deepspeed_cpu_notice()
    stop = StopRequests()
    stop.install()
    output_dir = None
    try:
        spec = load_spec(args.spec, args.overrides)
        checked = check_gpu_spec(spec)
        if args.check:
            print(f"spec {args.spec}: valid ({spec.name}, algorithm {spec.algorithm}, rollout.mode "
                  f"{spec.rollout.mode}); --check starts nothing", *checked, sep="\n", flush=True)
            return 0
        resume, changes = None, None
        if args.resume:
            output_dir, resume = resume_point(args.resume)
            spec.output_dir = str(output_dir)  # where a resumed run writes is not a change of spec
            if args.output_dir and Path(args.output_dir).resolve() != output_dir:
                raise SpecError(f"--output-dir {args.output_dir} and --resume {args.resume} name different runs; "
                                f"a resumed run writes into the run it continues")
            changes = spec_changes(resume, spec)
        else:
            output_dir = Path(args.output_dir or spec.output_dir or Path("runs") / spec.name).resolve()
        end = run(spec, output_dir, args, stop, resume, changes)
    except SpecError as exc:
        print(exc.one_line(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # The second signal (or a Ctrl-C before the handler was in place): stop now, save nothing new.
        latest = CheckpointStore(output_dir / "checkpoints").latest() if output_dir else None
        held = f"the newest complete checkpoint is {latest.path}; resume with: {resume_command(args, output_dir)}" \
            if latest else "no checkpoint was written; start the job again"
        print(f"stopped at once by {stop.name or 'SIGINT'}: {held}", file=sys.stderr, flush=True)
        return stop.exit_code if stop.requested else 130
    except Exception as exc:
        user_error = unwrap_user_error(exc)
        if user_error is None:
            raise
        print(user_error.one_line(), file=sys.stderr)
        return 1
    finally:
        stop.uninstall()
    if stop.requested:
        if end.stopped_after is None:
            print(f"stopped by {stop.name} before the first iteration finished: no checkpoint to resume from; "
                  f"start the job again", file=sys.stderr, flush=True)
        else:
            print(f"stopped by {stop.name} after iteration {end.stopped_after}: checkpoint {end.checkpoint.path}; "
                  f"resume with: {resume_command(args, output_dir)}", file=sys.stderr, flush=True)
        return stop.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
