"""`ray job submit` against a local head started as the README says, token auth on.

The head gets its own temp dir and free ports, and is stopped by signalling
its own `ray start --block` process: never `ray stop`, which would stop every
Ray process of the user.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    # A short path: Ray's unix socket paths must stay under ~107 characters.
    workdir = Path(tempfile.mkdtemp(prefix="hf-ray-"))
    token = workdir / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {
        **os.environ,
        # Head and client must agree on auth; the client only sends the token
        # when its own RAY_AUTH_MODE is "token".
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        # The job runs `python` from the head's PATH: make it this venv's.
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("RAY_ADDRESS", None)
    dashboard = free_port()
    head = subprocess.Popen(
        [
            str(VENV_BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", "--disable-usage-stats",
            f"--port={free_port()}", f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
            f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
            f"--temp-dir={workdir / 'tmp'}",
        ],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # an answer, even 401 without the token, means the dashboard is up
            except OSError:
                assert head.poll() is None, "ray start --head exited"
                assert time.time() < deadline, "the Ray head did not come up in 180 s"
                time.sleep(1)
        yield address, env
    finally:
        # SIGTERM to the leader only: it drains and stops its own gcs/raylet/dashboard.
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def submit(address: str, env: dict, *entrypoint: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".", "--", *entrypoint],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


def test_main_job_runs_under_ray_job_submit(ray_head, tmp_path):
    address, env = ray_head
    out = tmp_path / "job-out"  # absolute: the job's working directory is a temporary copy of the repo
    result = submit(address, env, "python", "-m", "jobs.run", "configs/hinted_idft.yaml",
                    "--output-dir", str(out), "--set", "iterations=2")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "finished 2 iteration(s)" in result.stdout
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert (out / "checkpoints" / "iter-1" / "model.safetensors").is_file()


def test_submit_without_the_token_is_refused(ray_head):
    address, env = ray_head
    result = submit(address, {**env, "RAY_AUTH_MODE": "disabled"}, "python", "-c", "print('should not run')",
                    timeout=120)
    assert result.returncode != 0
    assert "Missing authentication token" in result.stdout + result.stderr
