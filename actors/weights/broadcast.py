"""The weights as one flat buffer, broadcast from learner rank 0 to every engine worker and CLL replica.

A process group of its own, apart from DeepSpeed's: learner rank 0 is rank 0 and hosts the
rendezvous store; each rollout worker brings its vLLM engine worker and, when it keeps one, its
CLL replica (`ranks_per_rollout_worker`). The backend follows the device: gloo on CPU, NCCL on GPU,
so the same code runs in the CPU suite and on a GPU node.

What travels is the payload the object-store path sends (actors/weights/payload.py: safetensors,
tied weights once), as a uint8 tensor: its length first, then the bytes. The receivers decode it
in place into tensor views on their own device, with no copy through the object store or the
driver. NCCL cannot join two processes on one GPU, so this path is for engines on GPUs of their
own; colocated ones use the object store (CUDA IPC handles are not built yet).
"""

from __future__ import annotations

import datetime
import os
import socket

import torch
import torch.distributed as dist



def ranks_per_rollout_worker(spec) -> int:
    """The engine worker (tensor parallelism is not used), and the CLL replica when the worker keeps one."""
    return 2 if spec.rollout.cll_check == "replica" else 1

GROUP_TIMEOUT = datetime.timedelta(seconds=300)


def backend_for(device: torch.device | str) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def free_address() -> tuple[str, int]:
    """This node's address and a port free on it now, for the group's store (hosted by rank 0)."""
    import ray

    with socket.socket() as probe:
        probe.bind(("", 0))
        return ray.util.get_node_ip_address(), probe.getsockname()[1]


def interface_with(address: str) -> str | None:
    """The name of this machine's network interface that holds the IPv4 `address` (None: none does)."""
    import fcntl
    import struct

    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:  # SIOCGIFADDR: the interface's IPv4 address
                answer = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
            except OSError:  # no IPv4 address on it
                continue
        if socket.inet_ntoa(answer[20:24]) == address:
            return name
    return None


def gloo_on_node_address() -> None:
    """Gloo picks the address it listens on by resolving the host name, which on many machines gives
    127.0.0.1 (or an address other hosts cannot reach): ranks on other hosts then fail with
    "connectFullMesh ... Connection refused". Pin it to the interface of the address Ray knows this
    node by, unless the user chose one (GLOO_SOCKET_IFNAME). Call before any gloo group is made."""
    if os.environ.get("GLOO_SOCKET_IFNAME"):
        return
    import ray

    name = interface_with(ray.util.get_node_ip_address())
    if name:
        os.environ["GLOO_SOCKET_IFNAME"] = name


def open_group(address: str, port: int, rank: int, world_size: int, device: torch.device | str):
    """Join the group; every member must call this at the same time (it waits for all of them)."""
    gloo_on_node_address()
    store = dist.TCPStore(address, port, world_size, is_master=rank == 0, timeout=GROUP_TIMEOUT)
    if backend_for(device) == "nccl":
        return dist.ProcessGroupNCCL(store, rank, world_size)
    return dist.ProcessGroupGloo(store, rank, world_size, GROUP_TIMEOUT)


def _broadcast(group, tensor: torch.Tensor) -> None:
    options = dist.BroadcastOptions()
    options.rootRank = 0
    group.broadcast([tensor], options).wait()


def send_payload(group, payload: bytearray, device: torch.device | str) -> int:
    """Rank 0: the payload's length, then its bytes; returns the bytes sent."""
    _broadcast(group, torch.tensor([len(payload)], dtype=torch.int64, device=device))
    _broadcast(group, torch.frombuffer(payload, dtype=torch.uint8).to(device))
    return len(payload)


def receive_payload(group, device: torch.device | str) -> torch.Tensor:
    """Any other rank: the payload as a uint8 tensor on `device` (decode with decode_weights_buffer)."""
    length = torch.zeros(1, dtype=torch.int64, device=device)
    _broadcast(group, length)
    buffer = torch.empty(int(length.item()), dtype=torch.uint8, device=device)
    _broadcast(group, buffer)
    return buffer
