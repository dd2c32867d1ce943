"""`ray job submit` against a local two-node cluster started as docs/operations.md says, token auth on.

The head and a second node are two raylets on this machine (bench/local_cluster.py), 2 CPUs each (fractional
requests: the actors ask for 0.25), each with its own ports; the second one joins the head's
session (and so its temp dir). Both the same size, so that Ray's SPREAD, which gives every
node one bundle and then each next bundle to the node left relatively emptiest, alternates. Each is stopped by signalling its own `ray start --block` process: never
`ray stop`, which would stop every Ray process of the user.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from bench.local_cluster import VENV_BIN, LocalCluster, local_cluster
from tests.conftest import REPO, assert_one_line, read_jsonl, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_cluster():
    with local_cluster(nodes=2, cpus_per_node=2, dashboard=True) as cluster:
        yield cluster


def submit(cluster: LocalCluster, *entrypoint: str, env: dict | None = None, runtime_env: dict | None = None,
           options: tuple[str, ...] = (), timeout: float = 900) -> subprocess.CompletedProcess:
    extra = ["--runtime-env-json", json.dumps(runtime_env)] if runtime_env else []
    return subprocess.run(
        [str(VENV_BIN / "ray"), "job", "submit", "--address", cluster.dashboard, "--working-dir", ".", *extra,
         *options, "--", *entrypoint],
        cwd=REPO, env=env or cluster.env, capture_output=True, text=True, timeout=timeout,
    )


def ray_job(cluster: LocalCluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "ray"), "job", *args, "--address", cluster.dashboard], cwd=REPO,
                          env=cluster.env, capture_output=True, text=True, timeout=timeout)


def test_submit_without_the_token_is_refused(ray_cluster):
    result = submit(ray_cluster, "python", "-c", "print('should not run')",
                    env={**ray_cluster.env, "RAY_AUTH_MODE": "disabled"}, timeout=120)
    assert result.returncode != 0
    assert "Missing authentication token" in result.stdout + result.stderr


def docs_multinode_runtime_env(shared: Path) -> dict:
    """docs/gpu.md's --runtime-env-json for several nodes, its /nfs storage put at `shared`."""
    given = re.findall(r"--runtime-env-json '([^']*)'", (REPO / "docs" / "gpu.md").read_text())
    assert len(given) == 1, given
    return json.loads(given[0].replace("/nfs", str(shared)))


def test_the_quickstart_job_runs_under_ray_job_submit_spread_over_both_nodes(ray_cluster, tmp_path):
    """One submitted job for two checks: the main job (the quickstart's config, with its eval actor) runs under
    `ray job submit`, and placement.strategy spread puts its workers and learners on both nodes."""
    out = tmp_path / "spread"
    # Submitted with docs/gpu.md's own runtime env (the one its multi-node command gives), plus one
    # variable: env_vars reach the entrypoint's shell, and the output directory is named only there.
    runtime_env = docs_multinode_runtime_env(tmp_path / "nfs")
    runtime_env["env_vars"]["HINTFLOW_TEST_OUT"] = str(out)
    # One iteration is enough: its weights still go to the engines (across the nodes) and to the eval actor.
    result = submit(
        ray_cluster, "sh", "-c",
        f'test "$HF_HOME" = "{tmp_path / "nfs" / "hf"}" && test "$RAY_JOB_STOP_WAIT_TIME_S" = 600 && '
        'python -m jobs.run configs/hinted_idft.yaml --output-dir "$HINTFLOW_TEST_OUT" '
        "--set placement.strategy=spread --set iterations=1",
        runtime_env=runtime_env,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "finished 1 iteration(s)" in result.stdout
    rows = read_jsonl(out / "metrics.jsonl")
    assert [m["iteration"] for m in rows if m.get("kind") != "eval"] == [0]
    # The config's eval actor: before training and after the iteration.
    assert [m["iteration"] for m in rows if m.get("kind") == "eval"] == [-1, 0]
    assert (out / "checkpoints" / "iter-0" / "model.safetensors").is_file()
    placed = json.loads((out / "placement.json").read_text())
    assert (placed["strategy"], placed["colocate"]) == ("spread", False)
    assert sorted(placed["nodes"]) == sorted(ray_cluster.node_ids)
    nodes_of = {role: {entry["node_id"] for name, entry in placed["actors"].items() if name.startswith(role)}
                for role in ("rollout worker", "learner rank")}
    assert nodes_of == {"rollout worker": set(ray_cluster.node_ids), "learner rank": set(ray_cluster.node_ids)}, placed


def test_a_bundle_that_fits_no_node_fails_at_once_with_one_line(ray_cluster, tmp_path):
    # 2.5 + 2 x 0.25 + 0.1 = 3.1 CPUs: the cluster's 4 hold the total, but neither node (2 each) holds 2.5.
    # Without the check the job would wait for that bundle forever (run_cli's timeout would end the test).
    result = run_cli("configs/onpolicy_idft.yaml", "--output-dir", str(tmp_path / "out"),
                     "--set", "rollout.workers=1", "--set", "rollout.cpus_per_worker=2.5",
                     env=ray_cluster.job_env, timeout=300)
    assert result.returncode == 2
    line = assert_one_line(result, "spec error: no Ray node can hold bundle 0 (rollout worker 0: CPU 2.5)",
                           "1 (learner rank 0) CPU 0.25", "3 (reward actor) CPU 0.1")
    assert line.count("has CPU 2") == 2, line
    assert not (tmp_path / "out" / "placement.json").exists()


STOP_WAIT_JOB = """
import os, pathlib, signal, sys, time
def on_term(signum, frame):
    time.sleep(6)  # a checkpoint being written
    pathlib.Path(sys.argv[1], "saved").write_text("ok")
    sys.exit(143)
signal.signal(signal.SIGTERM, on_term)
pathlib.Path(sys.argv[1], "started").write_text("")
while True:
    time.sleep(0.2)
"""


@pytest.mark.parametrize("wait_s", [None, 30], ids=["default-3s", "env-30s"])
def test_job_stop_waits_as_long_as_runtime_env_says(ray_cluster, tmp_path, wait_s):
    """`ray job stop` sends SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S (3 by default), which the
    job supervisor reads from its own environment: --runtime-env-json env_vars reach it."""
    runtime_env = {"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(wait_s)}} if wait_s else None
    job_id = f"stop-wait-{wait_s}-{secrets.token_hex(3)}"
    result = submit(ray_cluster, "python", "-c", STOP_WAIT_JOB, str(tmp_path), runtime_env=runtime_env,
                    options=("--no-wait", "--submission-id", job_id), timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    deadline = time.time() + 120
    while not (tmp_path / "started").exists():
        assert time.time() < deadline, ray_job(ray_cluster, "logs", job_id).stdout[-3000:]
        time.sleep(0.5)
    asked = time.monotonic()
    assert ray_job(ray_cluster, "stop", job_id).returncode == 0  # waits until the job has ended
    took = time.monotonic() - asked
    status = ray_job(ray_cluster, "status", job_id).stdout
    assert f"Job '{job_id}' was stopped" in status, status
    assert (tmp_path / "saved").exists() == bool(wait_s), f"stop took {took:.1f}s"
    assert took >= (6 if wait_s else 3), took


def job_status(cluster: LocalCluster, job_id: str) -> str:
    """PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED, as `ray job status` says it."""
    said = ray_job(cluster, "status", job_id).stdout
    # Ray's CLI words the ended states its own way (ray/dashboard/modules/job/cli.py, _log_job_status).
    for ended, words in (("SUCCEEDED", "succeeded"), ("STOPPED", "was stopped"), ("FAILED", "failed")):
        if f"Job '{job_id}' {words}" in said:
            return ended
    found = re.search(r"Status for job '[^']+': (\w+)", said)
    assert found, said
    return found.group(1)


def wait_for_job(cluster: LocalCluster, job_id: str, timeout: float = 600) -> str:
    """The job's final status. Polls every 5 s: each `ray job status` is a new Python process."""
    deadline = time.monotonic() + timeout
    while (status := job_status(cluster, job_id)) in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, ray_job(cluster, "logs", job_id).stdout[-3000:]
        time.sleep(5)
    return status


def test_two_jobs_share_the_cluster_a_third_waits_then_fails_and_ray_job_stop_leaves_a_checkpoint(
        ray_cluster, tmp_path):
    """Two hintflow jobs submitted together (1.1 CPUs each of the cluster's 4) run side by side, each in its
    own placement group with its own learner port and output directory. A third, whose 1.5-CPU bundle would
    fit an idle node (2 CPUs) but not what the two leave free (0.9 a node while both run), waits
    placement.timeout_seconds, then fails in one line naming its bundles, the nodes and what is free. The
    long job then gets `ray job stop` (SIGTERM; SIGKILL only after RAY_JOB_STOP_WAIT_TIME_S): it stops at
    its next safe point with a checkpoint of its last finished iteration. The other finishes."""
    finishing, stopped = tmp_path / "finishing", tmp_path / "stopped"
    ids = {out: f"two-jobs-{out.name}-{secrets.token_hex(3)}" for out in (finishing, stopped)}
    # The stopped one would run for hours (an iteration of this config takes about a second alone). Its
    # `ray job submit` stays attached and prints the job's output as it comes, as a user's terminal would.
    entrypoint = ["python", "-m", "jobs.run", "configs/onpolicy_idft.yaml", "--set", "checkpoint.every=0",
                  "eval.every=0"]
    runtime_env = json.dumps({"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "120"}})
    attached = subprocess.Popen(
        [str(VENV_BIN / "ray"), "job", "submit", "--address", ray_cluster.dashboard, "--working-dir", ".",
         "--runtime-env-json", runtime_env, "--submission-id", ids[stopped], "--", *entrypoint,
         "iterations=100000", "--output-dir", str(stopped)],
        cwd=REPO, env=ray_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # 30 iterations: in the full suite a 4-iteration job ended before the third job was refused.
    result = submit(ray_cluster, *entrypoint, "iterations=30", "--output-dir", str(finishing),
                    runtime_env=json.loads(runtime_env), options=("--no-wait", "--submission-id", ids[finishing]),
                    timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    def logs() -> str:
        return "\n".join(ray_job(ray_cluster, "logs", job_id).stdout[-2000:] for job_id in ids.values())

    deadline = time.monotonic() + 600
    while not all((out / "placement.json").exists() for out in ids):  # written once the group is placed
        assert time.monotonic() < deadline, logs()
        time.sleep(1)
    third = run_cli("configs/onpolicy_idft.yaml", "--output-dir", str(tmp_path / "third"),
                    "--set", "rollout.workers=1", "rollout.cpus_per_worker=1.5", "placement.timeout_seconds=10",
                    env=ray_cluster.job_env, timeout=300)
    assert {job_status(ray_cluster, job_id) for job_id in ids.values()} == {"RUNNING"}, "a job ended too soon"
    assert third.returncode == 2, third.stdout[-3000:] + third.stderr[-3000:]
    assert_one_line(third, "spec error: the job's placement group (PACK) was not placed within 10",
                    "rollout worker 0) CPU 1.5", "free in the cluster now: CPU")
    placed = {out: json.loads((out / "placement.json").read_text()) for out in ids}
    assert len({json.dumps(p["actors"], sort_keys=True) for p in placed.values()}) == 2  # nothing shared

    while not ((stopped / "metrics.jsonl").exists() and (stopped / "metrics.jsonl").read_text().strip()):
        assert time.monotonic() < deadline, logs()  # stop it at work, past its first iteration
        time.sleep(1)
    assert ray_job(ray_cluster, "stop", ids[stopped], timeout=300).returncode == 0  # returns once it has ended
    assert job_status(ray_cluster, ids[stopped]) == "STOPPED"
    said = attached.communicate(timeout=120)[0]
    line = re.search(r"stopped by SIGTERM after iteration (\d+): checkpoint (\S+); resume with: ", said)
    assert line, said[-3000:]
    iteration, checkpoint = int(line.group(1)), Path(line.group(2))
    assert checkpoint == stopped / "checkpoints" / f"iter-{iteration}"
    assert json.loads((checkpoint / "training_state" / "loop.json").read_text())["next_iteration"] == iteration + 1
    assert (checkpoint / "model.safetensors").is_file()

    assert wait_for_job(ray_cluster, ids[finishing]) == "SUCCEEDED", logs()
    assert [m["iteration"] for m in read_jsonl(finishing / "metrics.jsonl")] == list(range(30))
    assert (finishing / "checkpoints" / "iter-29" / "model.safetensors").is_file()
