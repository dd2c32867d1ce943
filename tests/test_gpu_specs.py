"""The GPU specs, checked on CPU: `--check`, the refusals before Ray starts, the device-aware engine defaults."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobs.core.errors import SpecError
from jobs.gpu_checks import DriverGPU, check_bf16, check_gpu_spec
from jobs.core.spec import load_spec, validate_spec
from tests.conftest import REPO, assert_one_line, run_cli


def test_one_gpu_spec_passes_check_with_worker_and_rank_sharing_the_gpu():
    result = run_cli("configs/gpu-1x.yaml", "--check", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "bundle 0 (CPU 2, GPU 0.8): rollout worker 0 (CPU 1, GPU 0.4) + learner rank 0 (CPU 1, GPU 0.4)" in lines
    # The recipe's reward actor (CPU only) and eval actor (the GPU's last 0.2) come after the colocated pair.
    assert "bundle 1 (CPU 0.25): reward actor (CPU 0.25)" in lines
    assert "bundle 2 (CPU 1, GPU 0.2): eval actor (CPU 1, GPU 0.2)" in lines
    assert not any(line.startswith("bundle 3 ") for line in lines)
    assert "in all: CPU 3.25, GPU 1" in lines
    assert "engine: enforce_eager false, gpu_memory_utilization 0.3 (a GPU engine), model.dtype bfloat16" in lines


def test_node_spec_passes_check_with_a_gpu_per_actor():
    result = run_cli("configs/gpu-node.yaml", "--check", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for i in range(4):
        assert f"bundle {i} (CPU 2, GPU 1): rollout worker {i} (CPU 2, GPU 1)" in lines
        assert f"bundle {4 + i} (CPU 2, GPU 1): learner rank {i} (CPU 2, GPU 1)" in lines
    assert "in all: CPU 16, GPU 8" in lines
    assert "engine: enforce_eager false, gpu_memory_utilization 0.75 (a GPU engine), model.dtype bfloat16" in lines


# (spec, overrides, words the one line must hold)
REFUSED = {
    "two ranks on one gpu, colocated": (
        "configs/gpu-1x.yaml", ["learner.ranks=2"],
        ["learner.ranks 2", "learner.gpus_per_rank 0.4", "two learner ranks on one GPU", "bundle 0"],
    ),
    "two ranks on one gpu, own bundles": (
        "configs/gpu-node.yaml", ["learner.gpus_per_rank=0.5"],
        ["learner.ranks 4", "learner.gpus_per_rank 0.5", "two learner ranks on one GPU", "learner.gpus_per_rank = 1"],
    ),
    "gpus past the cluster": (
        "configs/gpu-node.yaml", ["learner.ranks=8"],
        ["needs 12 GPUs", "learner.ranks x learner.gpus_per_rank", "placement.nodes x placement.gpus_per_node is 8"],
    ),
    "broadcast between processes on one gpu": (
        "configs/gpu-1x.yaml", ["sync.method=broadcast"],
        ["sync.method broadcast with placement.colocate", "NCCL cannot broadcast", "object_store"],
    ),
    "a bundle bigger than a node": (
        "configs/gpu-1x.yaml", ["rollout.gpus_per_worker=0.7"],
        ["bundle 0", "needs 1.1 GPUs", "rollout.gpus_per_worker + learner.gpus_per_rank", "placement.gpus_per_node is 1"],
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unworkable_gpu_spec_is_refused_before_ray_in_one_line(case):
    spec, overrides, words = REFUSED[case]
    sets = [arg for assignment in overrides for arg in ("--set", assignment)]
    result = run_cli(spec, *sets, "--check", timeout=120)
    assert result.returncode == 2
    assert_one_line(result, "spec error: ", *words)
    assert result.stdout == ""  # refused before the placement is printed


def test_a_run_is_refused_the_same_way_without_check(tmp_path):
    """The refusals guard every run, not only --check: nothing is started or written."""
    result = run_cli("configs/gpu-1x.yaml", "--set", "learner.ranks=2", "--output-dir", str(tmp_path / "out"),
                     timeout=120)
    assert result.returncode == 2
    assert_one_line(result, "spec error: ", "learner.ranks 2", "two learner ranks on one GPU")
    assert not (tmp_path / "out").exists()


def test_two_colocated_ranks_on_whole_gpus_are_allowed():
    """Worker i and rank i at 0.5 each: bundle i is GPU i, so no two ranks share a device."""
    spec = load_spec(REPO / "configs/onpolicy_idft.yaml", ["placement.colocate=true", "rollout.gpus_per_worker=0.5",
                                                           "learner.gpus_per_rank=0.5", "placement.gpus_per_node=2"])
    lines = check_gpu_spec(spec, probe=lambda: None)
    assert "in all: CPU 1.1, GPU 2" in lines


def bf16_spec():
    return load_spec(REPO / "configs/gpu-1x.yaml")


def test_bf16_on_a_gpu_without_bf16_is_refused_naming_model_dtype():
    with pytest.raises(SpecError) as caught:
        check_bf16(bf16_spec(), DriverGPU("Tesla V100-SXM2-16GB", bf16=False))
    line = caught.value.one_line()
    assert line.startswith("spec error: model.dtype bfloat16") and "Tesla V100" in line and "float16" in line
    assert "\n" not in line
    # The same refusal through the whole pre-Ray check, with the driver's GPU handed in.
    with pytest.raises(SpecError, match="model.dtype bfloat16"):
        check_gpu_spec(bf16_spec(), probe=lambda: DriverGPU("Tesla T4", bf16=False))


def test_bf16_check_passes_or_skips_where_it_should():
    check_bf16(bf16_spec(), DriverGPU("NVIDIA H100 80GB HBM3", bf16=True))
    check_bf16(bf16_spec(), None)  # no GPU visible on the driver: nothing to check against
    float32 = load_spec(REPO / "configs/gpu-1x.yaml", ["model.dtype=float32"])
    check_bf16(float32, DriverGPU("Tesla V100-SXM2-16GB", bf16=False))
    on_cpu = load_spec(REPO / "configs/gpu-1x.yaml", ["rollout.gpus_per_worker=0", "learner.gpus_per_rank=0"])
    check_bf16(on_cpu, DriverGPU("Tesla V100-SXM2-16GB", bf16=False))  # the model is not on the GPU
    assert "bf16 check: skipped, no GPU visible here" in " ".join(check_gpu_spec(bf16_spec(), probe=lambda: None))


def test_engine_defaults_follow_the_device():
    cpu = validate_spec({}).rollout.engine
    assert (cpu.enforce_eager, cpu.gpu_memory_utilization) == (True, 0.5)
    gpu = validate_spec({"rollout": {"gpus_per_worker": 1}}).rollout.engine
    assert (gpu.enforce_eager, gpu.gpu_memory_utilization) == (False, 0.75)
    shared = validate_spec({"rollout": {"gpus_per_worker": 0.4}}).rollout.engine
    assert (shared.enforce_eager, shared.gpu_memory_utilization) == (False, 0.3)
    chosen = validate_spec({"rollout": {"gpus_per_worker": 1, "engine": {"enforce_eager": True,
                                                                         "gpu_memory_utilization": 0.9}}})
    assert (chosen.rollout.engine.enforce_eager, chosen.rollout.engine.gpu_memory_utilization) == (True, 0.9)


def test_cpu_configs_resolve_to_the_old_engine_settings():
    cpu_configs = [p for p in sorted((REPO / "configs").glob("*.yaml")) if not p.name.startswith("gpu-")]
    assert cpu_configs
    for path in cpu_configs:
        spec = load_spec(path)
        assert spec.rollout.gpus_per_worker == 0, path.name
        engine = spec.rollout.engine
        assert (engine.enforce_eager, engine.gpu_memory_utilization) == (True, 0.5), path.name


@pytest.mark.parametrize("config", ["configs/onpolicy_idft.yaml", "configs/gpu-1x.yaml"])
def test_check_imports_no_ray_vllm_or_deepspeed(config):
    script = (
        "import sys\n"
        "from jobs.run import main\n"
        f"assert main([{config!r}, '--check']) == 0\n"
        "loaded = [m for m in ('ray', 'vllm', 'deepspeed') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "print('NO-RAY-OK')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "NO-RAY-OK"
    assert "Started a local Ray instance" not in result.stdout + result.stderr
