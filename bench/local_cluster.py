"""A Ray cluster of several nodes on this one machine: the one module of local-cluster and port
helpers, used by the benchmarks (bench/scaling.py's multi-node points) and the tests
(tests/test_ray_job_submit.py).

`local_cluster(nodes, cpus_per_node, dashboard)` starts a head (`ray start --head --block`) and
nodes-1 more raylets that join it, each with its own ports and --num-cpus, all under one private
--temp-dir, with token auth on: the head, the nodes and every client agree on RAY_AUTH_MODE=token
and one token file (docs/operations.md's set-up). It yields a `LocalCluster`: the environment a
client needs, the GCS address, the dashboard's (for `ray job submit`, when asked for) and the node
ids, head first. On exit each `ray start --block` process this module started gets SIGTERM (it
stops its own GCS, raylet and agents), SIGKILL to its own process group if it lingers. Never
`ray stop`, which would stop every Ray process of the user, other people's included.
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
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 180


def free_port() -> int:
    """A port nobody listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalCluster:
    env: dict  # token auth on, this venv first on PATH; no RAY_ADDRESS (a job started with it joins)
    gcs: str  # host:port, for RAY_ADDRESS and `ray start --address`
    dashboard: str | None  # http://host:port for `ray job ...`; None when started without one
    nodes: list[dict]  # {"id", "cpus"} of every alive node, head first

    @property
    def node_ids(self) -> list[str]:
        return [node["id"] for node in self.nodes]

    @property
    def job_env(self) -> dict:
        """The environment of a `python -m jobs.run` that runs on this cluster."""
        return {**self.env, "RAY_ADDRESS": self.gcs}


def start_block(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([str(VENV_BIN / "ray"), "start", "--block", "--disable-usage-stats", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop_block(process: subprocess.Popen) -> None:
    # SIGTERM to the leader only: it drains and stops its own gcs/raylet/dashboard/agents.
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for_nodes(gcs: str, env: dict, count: int, prefix: list[str] | None = None) -> list[dict]:
    """Every alive node (id, CPUs, address) once `count` have joined, head first. `prefix`: what the asking
    process runs under (`ip netns exec NS` for a cluster in namespaces)."""
    script = (
        "import json, time, ray\n"
        f"ray.init(address={gcs!r}, logging_level='ERROR')\n"
        f"deadline = time.time() + {START_TIMEOUT_S}\n"
        "while True:\n"
        "    nodes = [n for n in ray.nodes() if n['Alive']]\n"
        f"    if len(nodes) >= {count} or time.time() > deadline: break\n"
        "    time.sleep(0.5)\n"
        "nodes.sort(key=lambda n: not n['Resources'].get('node:__internal_head__'))\n"
        "print('NODES=' + json.dumps([{'id': n['NodeID'], 'cpus': n['Resources'].get('CPU', 0),\n"
        "                             'address': n['NodeManagerAddress']} for n in nodes]))\n"
    )
    result = subprocess.run([*(prefix or []), sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=START_TIMEOUT_S + 60)
    lines = [line for line in result.stdout.splitlines() if line.startswith("NODES=")]
    if not lines:
        raise RuntimeError(f"the Ray cluster did not answer:\n{result.stderr[-2000:]}")
    nodes = json.loads(lines[-1].removeprefix("NODES="))
    if len(nodes) < count:
        raise RuntimeError(f"only {len(nodes)} of {count} Ray nodes came up")
    return nodes


def wait_for_dashboard(address: str, head: subprocess.Popen) -> None:
    deadline = time.time() + START_TIMEOUT_S
    while True:
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=2)
            return
        except urllib.error.HTTPError:
            return  # an answer, even 401 without the token, means the dashboard is up
        except OSError:
            if head.poll() is not None:
                raise RuntimeError("ray start --head exited") from None
            if time.time() > deadline:
                raise RuntimeError(f"the Ray dashboard did not come up in {START_TIMEOUT_S} s") from None
            time.sleep(1)


@contextlib.contextmanager
def local_cluster(nodes: int = 2, cpus_per_node: float = 1, dashboard: bool = False) -> Iterator[LocalCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="hf-ray-"))  # short: Ray's socket paths must stay < ~107 chars
    token = workdir / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    # Every node and every client must agree on auth; a client only sends the token when its own
    # RAY_AUTH_MODE is "token". A job runs `python` from the head's PATH: this venv's.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    gcs_port, dashboard_port = free_port(), free_port()
    gcs = f"127.0.0.1:{gcs_port}"
    address = f"http://127.0.0.1:{dashboard_port}" if dashboard else None
    shows = [f"--dashboard-port={dashboard_port}", "--dashboard-host=127.0.0.1"] if dashboard else ["--include-dashboard=false"]
    processes = []
    try:
        head = start_block([
            "--head", f"--num-cpus={cpus_per_node:g}", f"--port={gcs_port}", *shows,
            f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
            "--object-store-memory=500000000", f"--temp-dir={workdir / 'tmp'}",
        ], env)
        processes.append(head)
        if address:
            wait_for_dashboard(address, head)
        wait_for_nodes(gcs, env, 1)
        # More raylets on the same machine: every port of their own (the defaults of some are fixed
        # numbers the head already holds), and worker ports picked by the OS.
        for _ in range(nodes - 1):
            processes.append(start_block([
                f"--address={gcs}", f"--num-cpus={cpus_per_node:g}", "--object-store-memory=500000000",
                f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                "--min-worker-port=0", "--max-worker-port=0",
            ], env))
        yield LocalCluster(env, gcs, address, wait_for_nodes(gcs, env, nodes))
    finally:
        for process in reversed(processes):
            stop_block(process)
        shutil.rmtree(workdir, ignore_errors=True)



# Two hosts with addresses of their own: each node in a network namespace, joined by a veth pair.
SUBNET = "10.77.{net}"


def ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def namespaces_unavailable() -> str | None:
    """Why two network namespaces cannot be made here (None when they can): it needs root and `ip`."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"hf-probe-{secrets.token_hex(3)}"
    made = ip("netns", "add", probe)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip() or made.returncode} (it needs root)"
    ip("netns", "del", probe)
    return None


@dataclass
class Host:
    namespace: str
    address: str  # this host's own IPv4 address, on the veth

    def command(self, args: list[str]) -> list[str]:
        """`args` run inside this host's network namespace."""
        return ["ip", "netns", "exec", self.namespace, *args]

    def pids(self) -> list[int]:
        return [int(pid) for pid in ip("netns", "pids", self.namespace).stdout.split()]

    def processes_named(self, name: str) -> list[int]:
        found = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                    found.append(pid)
        return found


@dataclass
class HostsCluster:
    hosts: list[Host]  # head first
    env: dict  # token auth on, this venv first on PATH, RAY_ADDRESS the head's GCS
    nodes: list[dict]  # {"id", "cpus", "address"} of every alive node, head first

    def run(self, args: list[str], host: int = 0, **kwargs) -> subprocess.CompletedProcess:
        """`args` (a driver, a script) on one host, against the cluster."""
        return subprocess.run(self.hosts[host].command(args), env=self.env, **kwargs)


def make_host(namespace: str, interface: str, address: str, peer: str) -> None:
    for args in (("link", "set", interface, "netns", namespace),
                 ("-n", namespace, "addr", "add", f"{address}/24", "dev", interface),
                 ("-n", namespace, "link", "set", interface, "up"),
                 ("-n", namespace, "link", "set", "lo", "up"),
                 # A default route: Ray finds a node's own address by routing towards a public one.
                 ("-n", namespace, "route", "add", "default", "via", peer)):
        made = ip(*args)
        if made.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {made.stderr.strip()}")


@contextlib.contextmanager
def hosts_cluster(cpus_per_node: float = 2) -> Iterator[HostsCluster]:
    """A head and one more node, each in a network namespace of its own with its own address
    (10.77.N.1 and 10.77.N.2, a veth pair between them), so that every byte between them, the
    object store's and gloo's included, crosses a network link. The filesystem is shared, as an NFS
    mount would be on a real cluster. Needs root (see namespaces_unavailable)."""
    tag = secrets.token_hex(3)
    net = int(tag, 16) % 250 + 1
    names = [f"hf-{tag}-a", f"hf-{tag}-b"]
    addresses = [SUBNET.format(net=net) + ".1", SUBNET.format(net=net) + ".2"]
    interfaces = [f"hfa{tag}", f"hfb{tag}"]  # interface names stay under 16 characters
    workdir = Path(tempfile.mkdtemp(prefix="hf-ray-"))
    token = workdir / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "RAY_ADDRESS": f"{addresses[0]}:6379"}
    processes = []
    try:
        for name in names:
            made = ip("netns", "add", name)
            if made.returncode != 0:
                raise RuntimeError(f"ip netns add {name}: {made.stderr.strip()}")
        made = ip("link", "add", interfaces[0], "type", "veth", "peer", "name", interfaces[1])
        if made.returncode != 0:
            raise RuntimeError(f"ip link add (veth): {made.stderr.strip()}")
        make_host(names[0], interfaces[0], addresses[0], addresses[1])
        make_host(names[1], interfaces[1], addresses[1], addresses[0])
        hosts = [Host(name, address) for name, address in zip(names, addresses)]
        # Each host has ports of its own, so Ray's defaults do not collide.
        common = [f"--num-cpus={cpus_per_node:g}", "--object-store-memory=500000000", "--disable-usage-stats"]
        head_env = {key: value for key, value in env.items() if key != "RAY_ADDRESS"}
        processes.append(subprocess.Popen(
            hosts[0].command([str(VENV_BIN / "ray"), "start", "--block", "--head", "--port=6379",
                              f"--node-ip-address={addresses[0]}", "--include-dashboard=false",
                              f"--temp-dir={workdir / 'tmp'}", *common]),
            env=head_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_for_nodes(env["RAY_ADDRESS"], env, 1, hosts[0].command([]))
        processes.append(subprocess.Popen(
            hosts[1].command([str(VENV_BIN / "ray"), "start", "--block", f"--address={addresses[0]}:6379",
                              f"--node-ip-address={addresses[1]}", *common]),
            env=head_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        yield HostsCluster(hosts, env, wait_for_nodes(env["RAY_ADDRESS"], env, 2, hosts[0].command([])))
    finally:
        for process in reversed(processes):
            stop_block(process)
        for name in names:  # deleting a namespace deletes its end of the veth, and so the pair
            for pid in Host(name, "").pids():  # anything a test started there and left behind
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            ip("netns", "del", name)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":  # a smoke check: start two nodes (--hosts: in two namespaces), print them, stop
    started = time.perf_counter()
    with (hosts_cluster() if "--hosts" in sys.argv else local_cluster()) as cluster:
        print(cluster.nodes, f"up after {time.perf_counter() - started:.1f}s")
    print(f"stopped after {time.perf_counter() - started:.1f}s")
