"""A Ray cluster of several nodes on this one machine, for the multi-node scaling points.

`local_cluster(nodes, cpus_per_node)` starts a head (`ray start --head --block`) and nodes-1 more
raylets that join it, each with its own ports and --num-cpus, all under one private --temp-dir,
with token auth on (the head, the nodes and every client agree on RAY_AUTH_MODE=token and one
token file, as tests/test_ray_job_submit.py does). It yields the environment a job needs to run
on it (RAY_ADDRESS = the head's GCS address, the auth variables, this venv first on PATH).
On exit each `ray start --block` process this module started gets SIGTERM (it stops its own
GCS, raylet and agents), SIGKILL to its own process group if it lingers. Never `ray stop`, which
would stop every Ray process of the user, other people's included.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_block(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([str(VENV_BIN / "ray"), "start", "--block", "--disable-usage-stats", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop_block(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for_nodes(gcs: str, env: dict, count: int) -> list[dict]:
    """Every alive node (id and CPUs) once `count` have joined."""
    script = (
        "import json, time, ray\n"
        f"ray.init(address={gcs!r}, logging_level='ERROR')\n"
        f"deadline = time.time() + {START_TIMEOUT_S}\n"
        "while True:\n"
        "    nodes = [n for n in ray.nodes() if n['Alive']]\n"
        f"    if len(nodes) >= {count} or time.time() > deadline: break\n"
        "    time.sleep(0.5)\n"
        "print('NODES=' + json.dumps([{'id': n['NodeID'], 'cpus': n['Resources'].get('CPU', 0)} for n in nodes]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                            timeout=START_TIMEOUT_S + 60)
    lines = [line for line in result.stdout.splitlines() if line.startswith("NODES=")]
    if not lines:
        raise RuntimeError(f"the local Ray cluster did not answer:\n{result.stderr[-2000:]}")
    nodes = json.loads(lines[-1].removeprefix("NODES="))
    if len(nodes) < count:
        raise RuntimeError(f"only {len(nodes)} of {count} Ray nodes came up")
    return nodes


@contextlib.contextmanager
def local_cluster(nodes: int = 2, cpus_per_node: float = 1) -> Iterator[dict]:
    workdir = Path(tempfile.mkdtemp(prefix="hf-bench-ray-"))  # short: Ray's socket paths must stay < ~107 chars
    token = workdir / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    gcs_port = free_port()
    gcs = f"127.0.0.1:{gcs_port}"
    processes = []
    try:
        processes.append(start_block([
            "--head", f"--num-cpus={cpus_per_node:g}", f"--port={gcs_port}", "--include-dashboard=false",
            f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
            "--object-store-memory=500000000", f"--temp-dir={workdir / 'tmp'}",
        ], env))
        wait_for_nodes(gcs, env, 1)
        for _ in range(nodes - 1):
            processes.append(start_block([
                f"--address={gcs}", f"--num-cpus={cpus_per_node:g}", "--object-store-memory=500000000",
                f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                "--min-worker-port=0", "--max-worker-port=0",
            ], env))
        alive = wait_for_nodes(gcs, env, nodes)
        yield {**env, "RAY_ADDRESS": gcs, "HINTFLOW_BENCH_NODES": json.dumps(alive)}
    finally:
        for process in reversed(processes):
            stop_block(process)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":  # a smoke check: start two nodes, print them, stop
    started = time.perf_counter()
    with local_cluster() as cluster_env:
        print(cluster_env["HINTFLOW_BENCH_NODES"], f"up after {time.perf_counter() - started:.1f}s")
    print(f"stopped after {time.perf_counter() - started:.1f}s")
