"""GPU specs that cannot work, refused before Ray starts: one line each, naming the fields.

Ray would accept such a spec, start the actors, and fail minutes later inside NCCL or vLLM,
or wait for ever. `python -m jobs.run` runs `check_gpu_spec` right after the spec loads, on
every run; `--check` stops there and prints the placement it checked.

- Two learner ranks on one GPU. NCCL refuses two ranks of one communicator on one device
  ("Duplicate GPU detected"), and Ray may pack bundles with fractional GPUs onto one device.
  So with learner.ranks > 1, the bundle of every rank must hold whole GPUs. That means
  learner.gpus_per_rank 1, or with placement.colocate a worker and a rank whose shares sum
  to 1, so that bundle i is GPU i.
- GPUs past the cluster. Ray knows the cluster's size only once it runs, so the spec states
  it (placement.gpus_per_node, placement.nodes). A bundle lives on one node: none may need
  more GPUs than a node has, and all of them together no more than the cluster has. Both are
  necessary, not sufficient: fractional bundles may still fail to pack, and Ray's own wait
  (actors/placement.py) then fails within 30 s with the numbers.
- The broadcast weight sync between a learner rank and an engine on one GPU. NCCL cannot
  join two processes on one device, and CUDA IPC handles are not built yet.
- bf16 on a GPU without it (compute capability below 8.0; vLLM refuses it when the engine
  starts). Before Ray starts, the only GPU in sight is the driver's, so that is the one
  checked. A driver that sees no GPU (a CPU machine, a head node without GPUs) skips it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from actors.placement import EVAL, LEARNER, REWARD, ROLLOUT, Layout, describe, label, layout
from jobs.core.errors import SpecError
from jobs.core.spec import JobSpec

EPS = 1e-6  # GPU shares are sums of floats (0.1 + 0.2)
GPU_FIELDS = {ROLLOUT: "rollout.gpus_per_worker", LEARNER: "learner.gpus_per_rank", REWARD: "reward.gpus",
              EVAL: "eval.gpus"}


@dataclass(frozen=True)
class DriverGPU:
    name: str
    bf16: bool


def driver_gpu() -> DriverGPU | None:
    """The GPU this process sees, or None. Asks CUDA for properties only; allocates nothing on it."""
    import torch

    if not torch.cuda.is_available():
        return None
    # Without emulation: vLLM refuses bf16 below compute capability 8.0 even where torch could emulate it.
    return DriverGPU(torch.cuda.get_device_name(), torch.cuda.is_bf16_supported(including_emulation=False))


def model_on_gpu(spec: JobSpec) -> bool:
    return spec.rollout.gpus_per_worker > 0 or spec.learner.gpus_per_rank > 0


def whole(gpus: float) -> bool:
    return gpus >= 1 - EPS and abs(gpus - round(gpus)) < EPS


def gpu_fields(plan: Layout, bundle: int) -> str:
    """The spec fields whose GPUs make up this bundle, e.g. "rollout.gpus_per_worker + learner.gpus_per_rank"."""
    fields = [field for name in plan.members(bundle) for role, field in GPU_FIELDS.items() if name.startswith(role)]
    return " + ".join(dict.fromkeys(fields))


def check_learner_ranks_own_gpus(spec: JobSpec, plan: Layout) -> None:
    if spec.learner.ranks < 2 or spec.learner.gpus_per_rank == 0:
        return
    for rank in range(spec.learner.ranks):
        slot = plan.slots[label(LEARNER, rank)]
        gpus = plan.bundles[slot].get("GPU", 0.0)
        if not whole(gpus):
            raise SpecError(
                f"learner.ranks {spec.learner.ranks} with learner.gpus_per_rank {spec.learner.gpus_per_rank:g}: "
                f"bundle {slot} ({' + '.join(plan.members(slot))}) holds {gpus:g} GPU, so Ray may put two learner "
                f"ranks on one GPU, which NCCL cannot run; give every rank whole GPUs ({gpu_fields(plan, slot)} = 1) "
                f"or use learner.ranks 1"
            )


def check_cluster_holds(spec: JobSpec, plan: Layout) -> None:
    per_node = spec.placement.gpus_per_node
    if per_node is None:
        return
    for index, bundle in enumerate(plan.bundles):
        gpus = bundle.get("GPU", 0.0)
        if gpus > per_node + EPS:
            raise SpecError(
                f"bundle {index} ({' + '.join(plan.members(index))}) needs {gpus:g} GPUs ({gpu_fields(plan, index)}) "
                f"but placement.gpus_per_node is {per_node}: a bundle has to fit on one node"
            )
    need, have = plan.total("GPU"), spec.placement.nodes * per_node
    if need > have + EPS:
        raise SpecError(
            f"the job needs {need:g} GPUs (rollout.workers x rollout.gpus_per_worker + learner.ranks x "
            f"learner.gpus_per_rank + reward.gpus + eval.gpus) but placement.nodes x placement.gpus_per_node "
            f"is {have}"
        )


def check_broadcast_devices(spec: JobSpec) -> None:
    if spec.sync.method != "broadcast" or not spec.placement.colocate:
        return
    if spec.rollout.gpus_per_worker > 0 and spec.learner.gpus_per_rank > 0:
        raise SpecError(
            "sync.method broadcast with placement.colocate on GPUs: learner rank 0 and rollout worker 0 share "
            "one GPU, and NCCL cannot broadcast between two processes on one device; use sync.method "
            "object_store, or give the workers GPUs of their own (placement.colocate false)"
        )


def check_bf16(spec: JobSpec, gpu: DriverGPU | None) -> None:
    """`gpu` is the driver's GPU (driver_gpu), an argument so that a test can hand in one without bf16."""
    if spec.model.dtype != "bfloat16" or not model_on_gpu(spec) or gpu is None or gpu.bf16:
        return
    raise SpecError(
        f"model.dtype bfloat16 needs a GPU with bf16 (compute capability 8.0 or newer) and this machine's "
        f"{gpu.name} has none: set model.dtype float16 or float32"
    )


def check_gpu_spec(spec: JobSpec, probe: Callable[[], DriverGPU | None] = driver_gpu) -> list[str]:
    """Refuse what cannot work (SpecError); return the lines `--check` prints about what was checked."""
    plan = layout(spec)
    check_learner_ranks_own_gpus(spec, plan)
    check_cluster_holds(spec, plan)
    check_broadcast_devices(spec)
    needs_bf16 = spec.model.dtype == "bfloat16" and model_on_gpu(spec)
    gpu = probe() if needs_bf16 else None  # torch is imported only for a bf16 model on GPUs
    check_bf16(spec, gpu)

    placement = spec.placement
    cluster = ("not stated (placement.gpus_per_node null): Ray's own count is checked once it runs"
               if placement.gpus_per_node is None else
               f"{placement.nodes} node(s) x {placement.gpus_per_node} GPUs (placement.nodes x placement.gpus_per_node)")
    lines = [f"placement: strategy {placement.strategy}, colocate {str(placement.colocate).lower()}; cluster: {cluster}",
             *plan.lines(),
             f"in all: {describe({r: plan.total(r) for r in ('CPU', 'GPU') if plan.total(r)})}"]
    if spec.uses_rollout:
        engine = spec.rollout.engine
        lines.append(
            f"engine: enforce_eager {str(engine.enforce_eager).lower()}, "
            + (f"gpu_memory_utilization {engine.gpu_memory_utilization:g} (a GPU engine)"
               if spec.rollout.gpus_per_worker > 0 else f"cpu_kv_cache_gib {engine.cpu_kv_cache_gib:g} (a CPU engine)")
            + f", model.dtype {spec.model.dtype}"
        )
    if not needs_bf16:
        lines.append("bf16 check: not needed (no bfloat16 model on a GPU)")
    elif gpu is None:
        lines.append("bf16 check: skipped, no GPU visible here (it runs on a driver that sees one)")
    else:
        lines.append(f"bf16 check: {gpu.name} supports bf16")
    return lines
