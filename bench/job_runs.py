"""Running hintflow jobs for the benchmarks, and reading back what they measured.

A benchmark runs the real CLI (`python -m jobs.run SPEC --output-dir DIR --overwrite --set ...`) in
a subprocess and reads:

- `DIR/metrics.jsonl`: the training rows (`jobs.outputs.metrics_rows.row_kind(row) == TRAIN`), and when
  each row appeared. The file is polled every 50 ms while the job runs, so every row also gets
  an outside clock: the gap between two rows is the whole loop period (the iteration, plus the
  metrics/report writing and memory probes the job does after it measures `iteration_seconds`);
- the "<actor> ready after Ns" lines the driver prints while starting (jobs/startup.py);
- `DIR/spec.yaml` (the resolved spec), `DIR/placement.json` (bundles, nodes, and, when the job
  records it, the CPU threads each actor got), `DIR/samples/iter-N.jsonl` and
  `DIR/pairs/iter-N.jsonl` (the exact token ids the baselines replay).

`Bench` is one benchmark session: quick or full sizes, a work directory, and a cache so the
figures that read the same job (rollout efficiency, CLL overhead, learner efficiency,
orchestration...) run it once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import yaml

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
DEFAULT_WORKDIR = REPO / "runs" / "bench"  # runs/ is git-ignored
ONPOLICY = "configs/onpolicy_idft.yaml"
QUICKSTART = "configs/hinted_idft.yaml"
DPO = "configs/dpo.yaml"
SMOLLM2 = "configs/smollm2-135m.yaml"
READY_LINE = re.compile(r"\]\s+(.+?) ready after ([0-9.]+)s")
JOB_TIMEOUT_S = 900


def median(values: Iterable[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return statistics.median(kept) if kept else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def machine_cores() -> int:
    """The cores this process may run on: what a local job's Ray session counts as its CPUs."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


@dataclass
class JobRun:
    """One finished (or failed) job and everything a benchmark reads from it."""

    label: str
    config: str
    overrides: list[str]
    out_dir: Path
    returncode: int
    wall_seconds: float  # launch to exit, seen from outside
    output: str  # stdout then stderr
    rows: list[dict]  # training rows, in order
    row_seen: dict[int, float]  # iteration -> seconds after launch when its row appeared
    ready: dict[str, float] = field(default_factory=dict)  # actor label -> "ready after" seconds
    load_average: tuple[float, float] | None = None  # the machine's 1-minute load when the job started and ended

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and bool(self.rows)

    def failure(self) -> str:
        tail = "\n".join(self.output.strip().splitlines()[-15:])
        return f"job {self.label} ({self.config} {' '.join(self.overrides)}) exited {self.returncode}:\n{tail}"

    def command(self) -> str:
        sets = " ".join(f"--set {o}" for o in self.overrides)
        return f"python -m jobs.run {self.config} --output-dir DIR --overwrite {sets}".strip()

    @property
    def spec(self) -> dict:
        return yaml.safe_load((self.out_dir / "spec.yaml").read_text())

    def spec_value(self, dotted: str, default=None):
        node = self.spec
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def model_path(self) -> str:
        path = self.spec_value("model.path")
        if str(path).startswith("builtin:"):
            return str(self.out_dir / "builtin" / path.split(":", 1)[1])
        return str(path)

    def steady_rows(self) -> list[dict]:
        """Every row but iteration 0's (first-call warm-up) when there are at least two."""
        return self.rows[1:] if len(self.rows) > 1 else self.rows

    def values(self, key: str, steady: bool = True) -> list[float]:
        rows = self.steady_rows() if steady else self.rows
        return [float(r[key]) for r in rows if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]

    def median(self, key: str, steady: bool = True) -> float | None:
        return median(self.values(key, steady))

    def has(self, key: str) -> bool:
        return any(key in r for r in self.rows)

    def loop_periods(self) -> dict[int, float]:
        """Iteration -> seconds between the previous row and its own, seen from outside.

        The last row also waits for the final checkpoint, so it is left out when others remain.
        """
        seen = sorted(self.row_seen.items())
        periods = {b[0]: b[1] - a[1] for a, b in zip(seen, seen[1:])}
        if len(periods) > 1:
            periods.pop(max(periods))
        return periods

    def samples_per_s_by_iteration(self) -> dict[int, float]:
        """Iteration -> samples over its loop period seen from outside (the iterations loop_periods keeps)."""
        by_iteration = {r["iteration"]: r for r in self.rows}
        return {i: by_iteration[i].get("samples", 0) / p for i, p in self.loop_periods().items()
                if p > 0 and i in by_iteration}

    def samples_per_s(self) -> dict:
        """Loop throughput two ways: samples / iteration_seconds (the job's clock) and / the loop period (outside)."""
        inside = [r.get("samples", 0) / r["iteration_seconds"] for r in self.steady_rows() if r.get("iteration_seconds")]
        return {"outside_clock": median(self.samples_per_s_by_iteration().values()), "iteration_seconds": median(inside)}

    def placement(self) -> dict:
        path = self.out_dir / "placement.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def threads(self, actor: str) -> int | None:
        """The CPU threads placement.json says `actor` ("rollout worker 0") got; None when it does not say."""
        entry = self.placement().get("actors", {}).get(actor, {})
        return entry.get("threads") if isinstance(entry, dict) else None

    def samples(self, iteration: int) -> list[dict]:
        return read_jsonl(self.out_dir / "samples" / f"iter-{iteration}.jsonl")

    def pairs(self, iteration: int) -> list[dict]:
        return read_jsonl(self.out_dir / "pairs" / f"iter-{iteration}.jsonl")

    def summary(self) -> dict:
        return {"label": self.label, "command": self.command(), "output_dir": str(self.out_dir),
                "returncode": self.returncode, "wall_seconds": round(self.wall_seconds, 1),
                "iterations": len(self.rows), "load_average_start_end": self.load_average}


def record_path(out_dir: Path) -> Path:
    return out_dir.parent / f"{out_dir.name}.run.json"


def save_record(run: JobRun) -> None:
    """What was seen from outside (exit, wall, row clock, ready lines) beside the job's own outputs."""
    record = {"label": run.label, "config": run.config, "overrides": run.overrides, "returncode": run.returncode,
              "wall_seconds": run.wall_seconds, "row_seen": run.row_seen, "ready": run.ready,
              "load_average": run.load_average}
    record_path(run.out_dir).write_text(json.dumps(record, indent=1) + "\n")


def load_record(out_dir: Path) -> JobRun | None:
    path = record_path(out_dir)
    if not path.exists() or not (out_dir / "metrics.jsonl").exists():
        return None
    from jobs.outputs.metrics_rows import TRAIN, parse_rows, row_kind

    record = json.loads(path.read_text())
    rows = [r for r in parse_rows((out_dir / "metrics.jsonl").read_text()) if row_kind(r) == TRAIN]
    output = "".join(p.read_text() for p in (out_dir.parent / f"{out_dir.name}.stdout",
                                               out_dir.parent / f"{out_dir.name}.stderr") if p.exists())
    return JobRun(record["label"], record["config"], record["overrides"], out_dir, record["returncode"],
                  record["wall_seconds"], output, rows, {int(k): v for k, v in record["row_seen"].items()},
                  record["ready"], record.get("load_average"))


def check_overrides(config: str, overrides: list[str]) -> str | None:
    """None when the spec accepts these overrides, else the job's own one-line reason (e.g. a field it lacks)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from jobs.core.errors import SpecError
    from jobs.core.spec import load_spec

    try:
        load_spec(REPO / config, overrides)
    except SpecError as exc:
        return str(exc)
    return None


def run_job(label: str, config: str, overrides: list[str], out_dir: Path, env: dict | None = None,
            timeout: float = JOB_TIMEOUT_S, log: Callable[[str], None] = print) -> JobRun:
    """Run one job to the end, watching its metrics rows appear."""
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a stale metrics.jsonl would be read as this run's rows
    out_dir.mkdir(parents=True)
    command = [PYTHON, "-m", "jobs.run", config, "--output-dir", str(out_dir), "--overwrite"]
    for assignment in overrides:
        command += ["--set", assignment]
    log(f"  job {label}: {' '.join(command[2:])}")
    load_before = round(os.getloadavg()[0], 2)
    stdout_path, stderr_path = out_dir.parent / f"{out_dir.name}.stdout", out_dir.parent / f"{out_dir.name}.stderr"
    metrics_path = out_dir / "metrics.jsonl"
    started = time.perf_counter()
    with stdout_path.open("w") as stdout, stderr_path.open("w") as stderr:
        process = subprocess.Popen(command, cwd=REPO, stdout=stdout, stderr=stderr, env={**os.environ, **(env or {})},
                                   start_new_session=True)
        row_seen: dict[int, float] = {}
        timed_out = False
        try:
            watch(process, metrics_path, started, row_seen, timeout)
        except TimeoutError:
            timed_out = True
            stop_session(process)
        except BaseException:  # Ctrl-C or a bug here: the job is in its own session and would run on
            stop_session(process)
            raise
    wall = time.perf_counter() - started
    output = stdout_path.read_text() + stderr_path.read_text()
    rows = []
    if metrics_path.exists():
        from jobs.outputs.metrics_rows import TRAIN, parse_rows, row_kind

        rows = [r for r in parse_rows(metrics_path.read_text()) if row_kind(r) == TRAIN]
    ready = {m.group(1): float(m.group(2)) for m in READY_LINE.finditer(output)}
    returncode = 124 if timed_out else process.returncode
    run = JobRun(label, config, list(overrides), out_dir, returncode, wall, output, rows, row_seen, ready,
                 (load_before, round(os.getloadavg()[0], 2)))
    log(f"  job {label}: exit {returncode}, {len(rows)} iteration(s), {wall:.1f}s")
    return run


def watch(process: subprocess.Popen, metrics_path: Path, started: float, row_seen: dict[int, float],
          timeout: float) -> None:
    """Until the job exits: note when each training row first appears in metrics.jsonl (seconds after launch)."""
    from jobs.outputs.metrics_rows import TRAIN, parse_rows, row_kind

    while True:
        finished = process.poll() is not None
        if metrics_path.exists():
            try:
                rows = parse_rows(metrics_path.read_text())
            except (OSError, ValueError):
                rows = []
            now = time.perf_counter() - started
            for row in rows:
                if row_kind(row) == TRAIN and row.get("iteration") not in row_seen:
                    row_seen[row["iteration"]] = now
        if finished:
            return
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"job still running after {timeout:g}s")
        time.sleep(0.05)


def stop_session(process: subprocess.Popen) -> None:
    """SIGTERM to the job's own session (the job and its Ray processes), SIGKILL if it lingers."""
    for signum, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_script(script: str, args: list[str], env: dict | None = None, timeout: float = 900,
               log: Callable[[str], None] = print) -> dict:
    """Run one of bench's standalone baselines (a file in bench/) in its own process; its last RESULT= line, parsed."""
    command = [PYTHON, str(REPO / "bench" / script), *args]
    log(f"  baseline: {' '.join(command[1:])}")
    load_before = round(os.getloadavg()[0], 2)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})},
                            timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT=")]
    if result.returncode or not lines:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise RuntimeError(f"{script} exited {result.returncode}:\n{tail}")
    log(f"  baseline {script}: {time.perf_counter() - started:.1f}s")
    return {**json.loads(lines[-1].removeprefix("RESULT=")), "seconds": round(time.perf_counter() - started, 1),
            "load_average_start_end": (load_before, round(os.getloadavg()[0], 2))}


# Job sizes. The tiny model's iterations are short, so the batch is made big enough (64 samples of
# up to 64 tokens) that generation and training take long enough to time, and every job runs a
# few iterations: iteration 0 carries first-call warm-up and the last one the final checkpoint.
# Baselines time at most `baseline_iterations` of a job's iterations (None: all), each `repeats` times;
# `thread_diagnostics` adds 1 thread and every core beside the in-job actor's thread count.
# Iteration counts give every tiny-model figure 3 repeats or more (bench/results.py); each of time to first
# iteration's `start_repeats` (a quickstart start and its actors alone) costs about a minute on 2 cores.
QUICK = {"iterations": 5, "prompts": 16, "samples_per_prompt": 4, "max_new_tokens": 64, "scaling_iterations": 5,
         "repeats": 3, "baseline_iterations": 2, "thread_diagnostics": False, "dpo_iterations": 4,
         "quickstart_iterations": 4, "smollm2_iterations": 2, "start_repeats": 3}
FULL = {"iterations": 8, "prompts": 32, "samples_per_prompt": 4, "max_new_tokens": 64, "scaling_iterations": 6,
        "repeats": 5, "baseline_iterations": None, "thread_diagnostics": True, "dpo_iterations": 6,
        "quickstart_iterations": 4, "smollm2_iterations": 3, "start_repeats": 5}


class Bench:
    """One benchmark session: sizes, where jobs write, and the jobs already run (each runs once)."""

    def __init__(self, quick: bool = True, workdir: Path | str = DEFAULT_WORKDIR, smollm2: str | None = None,
                 log: Callable[[str], None] = print, reuse: bool = False, job_threads: bool = False):
        self.quick = quick
        self.reuse = reuse
        self.job_threads = job_threads
        self._pins: list[str] | None = None
        self.thread_note = ""
        self.sizes = QUICK if quick else FULL
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.smollm2 = str(Path(smollm2).resolve()) if smollm2 else None
        self.log = log
        self.runs: dict[str, JobRun] = {}
        self.cache: dict[str, object] = {}  # baseline results shared between figures

    @property
    def repeats(self) -> int:
        return self.sizes["repeats"]

    def baseline_args(self) -> list[str]:
        """--repeats and --max-iterations for the baseline scripts."""
        limit = self.sizes["baseline_iterations"]
        return ["--repeats", str(self.repeats), *(["--max-iterations", str(limit)] if limit else [])]

    def thread_settings(self, in_job: int) -> list[int]:
        """The in-job actor's thread count first; with thread diagnostics also every core and 1 thread."""
        extra = {machine_cores(), 1} if self.sizes["thread_diagnostics"] else set()
        return sorted({in_job} | extra, key=lambda t: (t != in_job, t))

    def job(self, label: str, config: str, overrides: list[str], env: dict | None = None) -> JobRun:
        if label not in self.runs:
            run = self.reused(label, config, overrides) if self.reuse else None
            if run is None:
                run = run_job(label, config, overrides, self.workdir / label, env=env, log=self.log)
                save_record(run)
            self.runs[label] = run
        return self.runs[label]

    def reused(self, label: str, config: str, overrides: list[str]) -> JobRun | None:
        """A finished run of exactly this job left in the work directory by an earlier session (--reuse-jobs)."""
        run = load_record(self.workdir / label)
        if run and run.ok and run.config == config and run.overrides == list(overrides):
            self.log(f"  job {label}: reusing {run.out_dir} (--reuse-jobs)")
            return run
        return None

    def thread_pins(self) -> list[str]:
        """One CPU thread per rollout worker and learner rank, unless --job-threads (or the job cannot pin them).

        On a machine whose cores other work shares, a team of OpenMP threads stalls whenever one of
        its threads is descheduled, so jobs whose actors each take every core time erratically
        (docs/benchmarks.md). With one thread per actor the ratios hold still; the thread counts the
        job picks itself are measured too (the scaling table's "job threads" point), and
        --job-threads measures everything that way.
        """
        if self._pins is None:
            pins = ["rollout.threads_per_worker=1", "learner.threads_per_rank=1"]
            if self.job_threads:
                self._pins, self.thread_note = [], "threads as the job picks them (--job-threads)"
            elif check_overrides(ONPOLICY, pins):
                self._pins, self.thread_note = [], "this checkout's job cannot pin threads: threads as the job picks them"
            else:
                self._pins, self.thread_note = pins, "1 thread per rollout worker and learner rank (--set " + \
                    " --set ".join(pins) + "); baselines at the same count"
        return self._pins

    def onpolicy_overrides(self, workers: int = 1, ranks: int = 1, iterations: int | None = None,
                           pinned: bool = True) -> list[str]:
        s = self.sizes
        return [
            f"iterations={iterations or s['iterations']}",
            f"rollout.workers={workers}",
            f"learner.ranks={ranks}",
            f"rollout.prompts_per_iteration={s['prompts']}",
            f"rollout.samples_per_prompt={s['samples_per_prompt']}",
            f"rollout.max_new_tokens={s['max_new_tokens']}",
            *(self.thread_pins() if pinned else []),
        ]

    def onpolicy(self, workers: int = 1, ranks: int = 1, extra: list[str] = (), tag: str = "",
                 iterations: int | None = None, env: dict | None = None, pinned: bool = True) -> JobRun:
        """On-policy IDFT on the builtin tiny model: the plain loop, one worker and one rank unless asked."""
        label = f"onpolicy-w{workers}-r{ranks}{tag}"
        overrides = self.onpolicy_overrides(workers, ranks, iterations, pinned) + list(extra)
        return self.job(label, ONPOLICY, overrides, env=env)

    def base(self) -> JobRun:
        """The job most figures read: 1 rollout worker, 1 learner rank (so a one-process baseline has its cores)."""
        return self.onpolicy(1, 1)

    def quickstart(self) -> JobRun:
        return self.job("quickstart", QUICKSTART, [f"iterations={self.sizes['quickstart_iterations']}"])

    def smollm2_job(self) -> JobRun | None:
        """configs/smollm2-135m.yaml on the local folder given with --smollm2; None without one."""
        if not self.smollm2:
            return None
        return self.job("smollm2", SMOLLM2, [f"model.path={self.smollm2}",
                                             f"iterations={self.sizes['smollm2_iterations']}", *self.thread_pins()])

    def smollm2_numbers(self, numbers, notes: list[str]) -> dict | None:
        """`numbers(bench, run)` of the SmolLM2 job: its figures, or {"error": ...} when it failed; None
        (and a note) without --smollm2 PATH."""
        run = self.smollm2_job()
        if run is None:
            notes.append("SmolLM2 setting skipped: no --smollm2 PATH given")
            return None
        return numbers(self, run) if run.ok else {"error": run.failure()}

    def need(self, run: JobRun) -> JobRun:
        if not run.ok:
            raise RuntimeError(run.failure())
        return run
