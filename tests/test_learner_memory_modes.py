"""ZeRO stages, offload and gradient checkpointing change memory, not what is computed.

Real Ray and DeepSpeed on CPU (gloo, 2 ranks): the same samples, trained for 3 iterations
under each setting, give the same losses and gradient norms; a ZeRO-3 learner's gathered
weights equal its checkpoint, which transformers and vLLM load with the learner's log-probs.
Gradient checkpointing is also compared gradient by gradient, without DeepSpeed.
"""

from __future__ import annotations

import random

import pytest
import ray
import torch
from safetensors.torch import load_file

from actors.training.batching import teacher_forced_logprobs

from jobs.core.records import Sample
from actors.learner_group import LearnerGroup
from actors.weights.payload import decode_weights
from jobs.run import actor_env_vars
from jobs.core.spec import validate_spec
from tests.conftest import vllm_prompt_logprobs

ITERATIONS = 3  # the ZeRO-3 resume check trains 2 more
# fp32 throughout; ZeRO reduces gradients in other orders and chunks than plain DDP, and
# recomputed activations go through the same kernels: differences stay near 1e-6.
LOSS_TOLERANCE = 1e-5


def job_spec(**learner_and_train) -> "JobSpec":  # noqa: F821
    # Every tiny-model tensor is below DeepSpeed's default persistence threshold: 0 makes ZeRO-3 shard them all.
    learner = {"ranks": 2, "zero_options": {"stage3_param_persistence_threshold": 0}, **{k: v for k, v in learner_and_train.items() if k != "gradient_checkpointing"}}
    train = {"lr": 1e-3, "micro_batch_size": 2, "gradient_accumulation_steps": 2, "warmup_ratio": 0.0,
             "lr_schedule": "constant", "gradient_checkpointing": learner_and_train.get("gradient_checkpointing", False)}
    return validate_spec({"algorithm": "sft", "iterations": ITERATIONS + 2, "learner": learner, "train": train,
                          "rollout": {"prompts_per_iteration": 8, "samples_per_prompt": 1}})


def fixed_samples(iteration: int) -> list[Sample]:
    rng = random.Random(iteration)
    return [
        Sample(iteration=iteration, prompt_index=i, prompt="", response="", finish_reason="stop",
               prompt_token_ids=[rng.randrange(3, 200) for _ in range(rng.randrange(3, 9))],
               response_token_ids=[rng.randrange(3, 200) for _ in range(rng.randrange(2, 12))])
        for i in range(8)
    ]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


SETTINGS = {
    "zero0": {"zero_stage": 0},
    "zero2": {"zero_stage": 2},
    "zero3": {"zero_stage": 3},
    "zero0+gradient_checkpointing": {"zero_stage": 0, "gradient_checkpointing": True},
    "zero2+gradient_checkpointing": {"zero_stage": 2, "gradient_checkpointing": True},
    "zero3+gradient_checkpointing": {"zero_stage": 3, "gradient_checkpointing": True},
    "zero2+offload_optimizer": {"zero_stage": 2, "offload": "optimizer"},
    "zero3+offload_optimizer_and_params": {"zero_stage": 3, "offload": "optimizer_and_params"},
}


@pytest.fixture(scope="module")
def trained(local_ray, tiny_model, tmp_path_factory):
    """Per setting: losses and grad norms of 3 iterations, peak memory, the exported weights, and for ZeRO-3
    a checkpoint and the learner's log-probs of a probe."""
    probe = fixed_samples(99)[0]
    probe_ids = probe.prompt_token_ids + probe.response_token_ids
    results = {}
    for name, setting in SETTINGS.items():
        spec = job_spec(**setting)
        learners = LearnerGroup(spec, str(tiny_model), actor_env_vars(spec))
        try:
            ray.get([ref for _, ref in learners.ready_refs()], timeout=300)
            metrics = [learners.train(fixed_samples(i), iteration=i) for i in range(ITERATIONS)]
            result = {
                "loss": [m["loss"] for m in metrics],
                "grad_norm": [m["grad_norm"] for m in metrics],
                "peak_mb": [m[f"learner_peak_memory_mb_rank{r}"] for r in range(2) for m in metrics[-1:]],
                "weights": decode_weights(ray.get(learners.export_weights(), timeout=300)),
                "probe_logprobs": learners.sequence_logprobs(probe_ids),
                "elements_on_rank0": ray.get(learners.ranks[0].__ray_call__.remote(
                    lambda learner: sum(p.numel() + (p.ds_tensor.numel() if hasattr(p, "ds_tensor") else 0)
                                        for p in learner.engine.module.parameters()))),
            }
            if name == "zero3":
                checkpoint = tmp_path_factory.mktemp("zero3-checkpoint")
                learners.save_checkpoint(str(checkpoint))
                result["checkpoint"] = checkpoint
                # two more: the second loss is taken after a step made with the restored Adam moments
                result["next_losses"] = [learners.train(fixed_samples(i), iteration=i)["loss"]
                                         for i in (ITERATIONS, ITERATIONS + 1)]
            results[name] = result
        finally:
            learners.shutdown()
    # A ZeRO-3 run resumed from its checkpoint (weights from the HF folder, each rank's optimizer
    # partition from training_state/) trains the next iteration exactly as the run that went on.
    spec = job_spec(**SETTINGS["zero3"])
    resumed = LearnerGroup(spec, str(tiny_model), actor_env_vars(spec), resume_from=str(results["zero3"]["checkpoint"]))
    try:
        ray.get([ref for _, ref in resumed.ready_refs()], timeout=300)
        results["zero3"]["resumed_next_losses"] = [resumed.train(fixed_samples(i), iteration=i)["loss"]
                                                   for i in (ITERATIONS, ITERATIONS + 1)]
    finally:
        resumed.shutdown()
    return results, probe_ids


@pytest.mark.integration
@pytest.mark.parametrize("setting", [s for s in SETTINGS if s != "zero0"])
def test_every_stage_offload_and_checkpointing_trains_like_zero0(trained, setting):
    results, _ = trained
    baseline, other = results["zero0"], results[setting]
    assert max(abs(a - b) for a, b in zip(baseline["loss"], other["loss"])) < LOSS_TOLERANCE, (baseline["loss"], other["loss"])
    assert max(abs(a - b) for a, b in zip(baseline["grad_norm"], other["grad_norm"])) < 1e-4
    assert baseline["loss"][0] != baseline["loss"][-1]  # it trained: the weights moved between iterations
    weights = other["weights"]
    assert weights.keys() == baseline["weights"].keys()
    assert max(float((weights[k] - baseline["weights"][k]).abs().max()) for k in weights) < 1e-4
    assert all(mb > 0 for mb in other["peak_mb"])
    full = sum(t.numel() for t in weights.values())
    # Elements held whole plus ZeRO-3 slices, after the export and the probe: with ZeRO-3 each rank
    # keeps its half of every parameter and nothing gathered stays behind.
    if "zero3" in setting:
        assert other["elements_on_rank0"] <= full / 2 + 1000
    else:
        assert other["elements_on_rank0"] == full


@pytest.mark.integration
def test_zero3_checkpoint_holds_the_gathered_weights_and_loads_in_transformers_and_vllm(trained, tiny_model):
    from transformers import AutoModelForCausalLM

    results, probe = trained
    zero3 = results["zero3"]
    checkpoint = zero3["checkpoint"]
    on_disk = load_file(str(checkpoint / "model.safetensors"))
    initial = load_file(str(tiny_model / "model.safetensors"))
    assert on_disk.keys() == initial.keys()  # the plain model's names, nothing sharded or prefixed
    for name, tensor in on_disk.items():
        assert tensor.shape == initial[name].shape
        assert torch.equal(tensor, zero3["weights"][name])
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    hf = torch.tensor(teacher_forced_logprobs(model, probe, 0))
    learner = torch.tensor(zero3["probe_logprobs"])
    vllm = torch.tensor(vllm_prompt_logprobs(checkpoint, probe))
    assert float((hf - learner).abs().max()) < 1e-5
    assert float((vllm - learner).abs().max()) < 1e-4
    assert (checkpoint / "training_state").is_dir()
    assert zero3["resumed_next_losses"] == pytest.approx(zero3["next_losses"], abs=1e-6)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_model):
    """Without DeepSpeed: the model as load_trainable_model builds it, with and without recomputation."""
    from actors.training.trainable_model import load_trainable_model

    batch = torch.tensor([fixed_samples(0)[0].prompt_token_ids * 3])
    grads = {}
    for checkpointing in (False, True):
        model, _ = load_trainable_model(job_spec(zero_stage=2, gradient_checkpointing=checkpointing), str(tiny_model), None, {})
        model.train()
        assert model.is_gradient_checkpointing == checkpointing
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        grads[checkpointing] = (float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[True][0] == pytest.approx(grads[False][0], abs=1e-6)
    assert max(float((grads[True][1][n] - grads[False][1][n]).abs().max()) for n in grads[False][1]) < 1e-6


@pytest.mark.integration
@pytest.mark.parametrize("lora, zero_stage", [(True, 2), (True, 3), (False, 3)],
                         ids=["lora-zero2", "lora-zero3", "full-zero3"])
def test_the_dpo_reference_is_the_base_model_and_costs_no_whole_copy(local_ray, tiny_model, lora, zero_stage):
    """With LoRA the reference is the learner's own model with its adapters switched off; without it, under
    ZeRO-3, a frozen model sharded like the policy. After training moved the policy, the reference's
    log-probs are still the base model's. Five pairs on two ranks, one per forward: under ZeRO-3 the
    rank with two runs a stand-in forward to match the rank with three (forwards gather together)."""
    from transformers import AutoModelForCausalLM

    from jobs.core.records import Pair
    from actors.learner import pair_logps

    spec = validate_spec({
        "algorithm": "dpo", "iterations": 2,
        "model": {"lora": {"r": 4, "target_modules": ["q_proj", "v_proj"]} if lora else None},
        "reward": {"sources": [{"kind": "format"}]},
        "learner": {"ranks": 2, "zero_stage": zero_stage, "zero_options": {"stage3_param_persistence_threshold": 0}},
        "train": {"lr": 1e-2, "micro_batch_size": 1, "warmup_ratio": 0.0, "lr_schedule": "constant"},
    })
    samples = fixed_samples(5)
    pairs = [Pair(iteration=0, prompt_index=i, prompt="", prompt_token_ids=a.prompt_token_ids, chosen="",
                  chosen_token_ids=a.response_token_ids, rejected="", rejected_token_ids=b.response_token_ids)
             for i, (a, b) in enumerate(zip(samples, samples[1:] + samples[:1]))]
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.no_grad():
        expected, _ = pair_logps(base, pairs, 0, torch.device("cpu"))
    learners = LearnerGroup(spec, str(tiny_model), actor_env_vars(spec))
    try:
        ray.get([ref for _, ref in learners.ready_refs()], timeout=300)
        for iteration in range(2):
            for pair in pairs:
                pair.reference_logp_chosen = pair.reference_logp_rejected = None
            learners.fill_reference_logps(pairs)
            got = torch.tensor([p.reference_logp_chosen for p in pairs] + [p.reference_logp_rejected for p in pairs])
            assert float((got - expected).abs().max()) < 1e-4, iteration
            learners.train(pairs, iteration=iteration)
        # ... while the policy itself has moved away from the base
        trained = [p for p in pairs if p.policy_logp_chosen is not None]
        policy = torch.tensor([p.policy_logp_chosen for p in trained] + [p.policy_logp_rejected for p in trained])
        base_of_trained = torch.tensor([p.reference_logp_chosen for p in trained] + [p.reference_logp_rejected for p in trained])
        assert trained and float((policy - base_of_trained).abs().max()) > 1e-3
        if not lora:  # the separate reference holds half of every tensor on each rank, nothing gathered left over
            held = ray.get(learners.ranks[0].__ray_call__.remote(
                lambda learner: sum(p.numel() + p.ds_tensor.numel() for p in learner.reference.module.parameters())))
            assert held <= sum(p.numel() for p in base.parameters()) / 2 + 1000
    finally:
        learners.shutdown()
