"""Weight sync on real Ray, vLLM (CPU) and DeepSpeed: stale before, equal after.

Tolerance: 1e-4 absolute on per-token log-probs, fp32 everywhere. vLLM's CPU
kernels and torch differ by about 1e-6 on the same weights, and one training
step on the tiny model moves the probe's log-probs by far more than 1e-3.
"""

from __future__ import annotations

import pytest
import ray
import torch
from transformers import AutoModelForCausalLM

from actors.training.batching import teacher_forced_logprobs
from actors.learner_group import LearnerGroup
from actors.rollout_pool import RolloutPool
from actors.weights.sync import BroadcastWeightSync, ObjectStoreWeightSync, make_weight_sync
from jobs.core.data import PromptStream, load_prompts
from jobs.core.records import Prompt
from jobs.run import actor_env_vars
from jobs.core.spec import validate_spec

pytestmark = pytest.mark.integration
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def max_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return float((torch.tensor(a) - torch.tensor(b)).abs().max())


@pytest.mark.parametrize(
    "engine_in_own_process, tied, zero_stage, lora, cll_check",
    [(False, False, 2, False, "replica"), (True, False, 3, True, "replica"), (False, True, 3, False, "engine")],
    # ZeRO-3 with tied embeddings: the gather must send the shared matrix once and the engine tie it again; its
    # worker keeps no replica (rollout.cll_check: engine), so the broadcast group has one rank per worker.
    # LoRA on ZeRO-3: the learner trains sharded adapters on a sharded base, the engine must get base + B·A
    # (LoRA on stage 0-2 runs end to end in test_lora_job.py).
    ids=["engine-in-actor", "engine-in-subprocess-lora-zero3", "tied-embeddings-zero3-no-replica"],
)
def test_rollout_logprobs_equal_learner_after_sync_and_differ_before(
    local_ray, request, tmp_path, engine_in_own_process, tied, zero_stage, lora, cll_check
):
    """The object-store path, then the broadcast path (gloo here) twice on the same actors: the second
    broadcast goes through the group the first one formed."""
    from transformers import AutoTokenizer

    tiny_model = request.getfixturevalue("tiny_tied_model" if tied else "tiny_model")

    spec = validate_spec(
        {
            "rollout": {
                "workers": 1,
                "prompts_per_iteration": 4,
                "samples_per_prompt": 2,
                "max_new_tokens": 16,
                "engine": {"multiprocessing": engine_in_own_process},
                "cll_check": cll_check,
            },
            # threshold 0: every tiny-model tensor is sharded under ZeRO-3, none kept whole
            "learner": {"ranks": 2, "zero_stage": zero_stage, "zero_options": {"stage3_param_persistence_threshold": 0}},
            "model": {"lora": {"r": 4, "target_modules": ["q_proj", "v_proj"]} if lora else None},
            "train": {"lr": 1e-2, "micro_batch_size": 4, "warmup_ratio": 0.0, "lr_schedule": "constant"},
        }
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prompts, _ = load_prompts(spec.data, tokenizer, max_prompt_tokens=200)
    rollout = RolloutPool(spec, str(tiny_model), actor_env_vars(spec))
    learners = LearnerGroup(spec, str(tiny_model), actor_env_vars(spec))
    worker = rollout.workers[0]
    try:
        # The probe is a fixed sequence; asking the engine twice for it also
        # exercises the prefix cache, which must not serve the old weights' KV.
        probe = list(prompts[0].token_ids) + tokenizer("The answer is 42.", add_special_tokens=False).input_ids

        engine_before = ray.get(worker.prompt_logprobs.remote(probe), timeout=120)
        assert max_diff(engine_before, learners.sequence_logprobs(probe)) < TOLERANCE  # same initial weights

        samples, _ = rollout.generate(PromptStream(prompts, shuffle=False, seed=0).next_batch(4), iteration=0)
        learners.train(samples, iteration=0)
        learner_after = learners.sequence_logprobs(probe)
        engine_stale = ray.get(worker.prompt_logprobs.remote(probe), timeout=120)
        assert max_diff(engine_stale, engine_before) < TOLERANCE  # nothing reached the engine yet
        assert max_diff(engine_stale, learner_after) > 1e-3  # ... so it differs from the learner

        # vLLM caches prefixes in full 128-token blocks, and prompt-logprob
        # requests bypass the cache: only generation from a long prompt seen
        # before the sync shows whether stale KV is served afterwards.
        long_prompt = Prompt(index=0, text="", token_ids=tuple((probe * 20)[:300]), row={})
        rollout.generate([long_prompt], iteration=0)

        pushed = ObjectStoreWeightSync().push(learners, rollout)
        engine_synced = ray.get(worker.prompt_logprobs.remote(probe), timeout=120)
        assert max_diff(engine_synced, learner_after) < TOLERANCE
        assert pushed["sync_seconds"] > 0
        # every worker received the whole payload: at least 4 bytes per float32 parameter
        parameters = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model).parameters())
        assert pushed["sync_bytes"] >= len(rollout.workers) * 4 * parameters
        _, generation = rollout.generate([long_prompt], iteration=0)
        # The CLL replica never caches; it agrees with the engine only if the engine's cache was reset.
        assert generation["engine_scorer_logprob_max_diff"] < TOLERANCE
        assert (generation["rollout_replica_mb"] > 0) == (cll_check == "replica")

        broadcast = BroadcastWeightSync()
        learner_before = learner_after
        for iteration in (1, 2):
            learners.train(samples, iteration=iteration)
            learner_now = learners.sequence_logprobs(probe)
            assert max_diff(learner_now, learner_before) > 1e-3
            pushed = broadcast.push(learners, rollout)
            assert pushed["sync_broadcast_fallbacks"] == 0, pushed
            assert pushed["sync_bytes"] >= len(rollout.workers) * 4 * parameters
            assert max_diff(ray.get(worker.prompt_logprobs.remote(probe), timeout=120), learner_now) < TOLERANCE
            _, generation = rollout.generate([long_prompt], iteration=iteration)
            assert generation["engine_scorer_logprob_max_diff"] < TOLERANCE  # the replica got them too
            learner_before = learner_now

        if lora:
            # The adapter checkpoint, gathered from its ZeRO-3 shards, is what peft loads: the base plus
            # those adapters give the learner's log-probs.
            from peft import PeftModel

            checkpoint = tmp_path / "checkpoint"
            checkpoint.mkdir()
            learners.save_checkpoint(str(checkpoint))
            base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
            saved = PeftModel.from_pretrained(base, checkpoint).eval()
            assert max_diff(teacher_forced_logprobs(saved, probe, 0), learner_before) < TOLERANCE
    finally:
        rollout.shutdown()
        learners.shutdown()


def test_the_spec_picks_the_transport():
    assert isinstance(make_weight_sync(validate_spec({}).sync), ObjectStoreWeightSync)
    assert isinstance(make_weight_sync(validate_spec({"sync": {"method": "broadcast"}}).sync), BroadcastWeightSync)
