"""A LoRA job end to end: the quickstart (configs/hinted_idft.yaml) with model.lora, on real Ray,
vLLM and DeepSpeed. Only the adapters train and sit in the optimizer; the engines get the merged
weights; the checkpoint is a peft adapter folder plus merged/, a full model both engines load."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from actors.training.batching import teacher_forced_logprobs
from tests.conftest import independent_token_stats, read_jsonl, run_cli, vllm_prompt_logprobs

pytestmark = pytest.mark.integration
TARGETS = ("q_proj", "v_proj")
LORA = json.dumps({"r": 4, "alpha": 8, "target_modules": list(TARGETS), "save_merged": True})
LORA_ARGS = ("configs/hinted_idft.yaml", "--set", "iterations=2", "--set", "eval.every=0", "--set", "checkpoint.every=1",
             "--set", f"model.lora={LORA}")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lora")
    result = run_cli(*LORA_ARGS, "--output-dir", str(out))
    assert result.returncode == 0, f"job failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return out


def base_model_path(out):
    config = json.loads((out / "checkpoints" / "iter-1" / "adapter_config.json").read_text())
    return config["base_model_name_or_path"]


def test_only_the_adapters_changed_and_only_they_were_optimized(lora_run):
    checkpoint = lora_run / "checkpoints" / "iter-1"
    adapter = load_file(str(checkpoint / "adapter_model.safetensors"))
    assert adapter and all("lora_A" in name or "lora_B" in name for name in adapter)
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in adapter} == set(TARGETS)

    base = load_file(str(__import__("pathlib").Path(base_model_path(lora_run)) / "model.safetensors"))
    merged = load_file(str(checkpoint / "merged" / "model.safetensors"))
    assert merged.keys() == base.keys()
    changed = {name for name in base if not torch.equal(base[name], merged[name])}
    assert changed == {name for name in base if name.rsplit(".", 2)[-2] in TARGETS}  # every target, nothing else

    # Every rank's optimizer partition together holds exactly the adapters' elements, not the model's.
    partitions = sorted((checkpoint / "training_state" / "deepspeed").glob("*optim_states.pt"))
    assert partitions
    optimized = 0
    for path in partitions:
        state = torch.load(path, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        optimized += sum(t.numel() for t in state["single_partition_of_fp32_groups"])
    adapter_elements = sum(t.numel() for t in adapter.values())
    assert adapter_elements <= optimized < adapter_elements + 64 * len(partitions)  # ZeRO pads each partition a little
    assert optimized < sum(t.numel() for t in base.values()) / 10


def test_the_adapter_folder_is_what_peft_loads_and_merges_into_the_merged_model(lora_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    checkpoint = lora_run / "checkpoints" / "iter-1"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model_path(lora_run), dtype=torch.float32),
                                      checkpoint)
    merged_by_peft = model.merge_and_unload().state_dict()
    merged = load_file(str(checkpoint / "merged" / "model.safetensors"))
    assert max(float((merged_by_peft[k] - merged[k]).abs().max()) for k in merged) < 1e-6


def test_the_merged_checkpoint_loads_in_transformers_and_vllm_with_the_engines_logprobs(lora_run):
    from transformers import AutoModelForCausalLM

    merged = lora_run / "checkpoints" / "iter-1" / "merged"
    sample = read_jsonl(lora_run / "samples" / "iter-1.jsonl")[0]
    probe = sample["prompt_token_ids"] + sample["response_token_ids"]
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    hf = torch.tensor(teacher_forced_logprobs(model, probe, 0))
    vllm = torch.tensor(vllm_prompt_logprobs(merged, probe))
    assert float((hf - vllm).abs().max()) < 1e-4
    metrics = [m for m in read_jsonl(lora_run / "metrics.jsonl") if m.get("kind") != "eval"]
    assert [m["iteration"] for m in metrics] == [0, 1]
    # The engines and their CLL replicas held the same weights in both iterations ...
    assert all(m["engine_scorer_logprob_max_diff"] < 1e-4 for m in metrics), metrics
    # ... and in iteration 1 those were the merged weights pushed after iteration 0: each sample's
    # log-prob under the weights that drew it is that of checkpoints/iter-0/merged, not the base model's.
    samples = [s for s in read_jsonl(lora_run / "samples" / "iter-1.jsonl") if s["source"] == "on_policy"][:4]

    def gap(model_dir) -> float:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        return max(abs(s["sequence_logp"] - sum(logp for logp, _ in independent_token_stats(
            model, s["prompt_token_ids"], s["response_token_ids"]))) for s in samples)

    assert gap(lora_run / "checkpoints" / "iter-0" / "merged") < 1e-3
    assert gap(base_model_path(lora_run)) > 1e-2


def test_a_resumed_lora_run_continues_exactly(lora_run, tmp_path):
    """A LoRA checkpoint is an adapter folder: the engines start on the base model and get the merged
    weights pushed before the first resumed iteration. Resumed from checkpoints/iter-0 of a copy of the
    run, iteration 1 comes out as in the uninterrupted run, token for token and loss for loss."""
    copy = tmp_path / "run"
    shutil.copytree(lora_run, copy)
    result = run_cli(*LORA_ARGS, "--resume", str(copy / "checkpoints" / "iter-0"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ours = read_jsonl(copy / "samples" / "iter-1.jsonl")
    theirs = read_jsonl(lora_run / "samples" / "iter-1.jsonl")
    assert [s["response_token_ids"] for s in ours] == [s["response_token_ids"] for s in theirs]
    assert [s["token_cll"] for s in ours] == [s["token_cll"] for s in theirs]
    resumed = [m for m in read_jsonl(copy / "metrics.jsonl") if m.get("kind") != "eval"]
    original = [m for m in read_jsonl(lora_run / "metrics.jsonl") if m.get("kind") != "eval"]
    assert [m["iteration"] for m in resumed] == [0, 1]
    for key in ("loss", "grad_norm", "kept_samples"):
        assert resumed[1][key] == original[1][key], key
