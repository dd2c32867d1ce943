"""The reward actor with a tiny sequence-classification model built in code, on real Ray.

Its scores must equal a direct transformers call on each conversation alone, whether the
actor batches them (padding, length sorting) or not.
"""

from __future__ import annotations

import pytest
import torch

from actors.rewards.sources import ScoringRequest
from jobs.core.spec import validate_spec

pytestmark = pytest.mark.integration

RESPONSES = ["The answer is 4.", "4", "Let us compute: 2 + 2 = 4, so the answer is 4.", "five", "The answer is 12345."]


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def direct_scores(path, requests) -> list[float]:
    """One conversation at a time, no padding: the reward model as its authors would call it."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    scores = []
    for r in requests:
        text = tokenizer.apply_chat_template(r.messages + [{"role": "assistant", "content": r.response}], tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            scores.append(float(model(input_ids=ids).logits[0, 0]))
    return scores


@pytest.mark.parametrize("batch_size", [1, 3])
def test_reward_model_scores_equal_a_direct_transformers_call(ray_session, tiny_reward_model, batch_size):
    import ray

    from actors.reward_actor import RewardActor

    spec = validate_spec({"reward": {"sources": [
        {"kind": "reward_model", "name": "rm", "path": str(tiny_reward_model), "batch_size": batch_size, "weight": 2.0},
        {"kind": "format", "weight": 1.0},
    ]}})
    requests = [
        ScoringRequest(label=f"sample {i}", prompt="unused: the reward model applies its own template",
                       messages=[{"role": "user", "content": "What is 2 + 2?"}], response=text,
                       response_tokens=len(text), row={})
        for i, text in enumerate(RESPONSES)
    ]
    actor = ray.remote(RewardActor).options(num_cpus=0).remote(spec, {"rm": str(tiny_reward_model)})
    rewards = ray.get(actor.score.remote(requests), timeout=300)
    expected = direct_scores(tiny_reward_model, requests)

    assert max(expected) - min(expected) > 0.1  # the scores differ, so a mix-up of rows would show
    for entry, direct, text in zip(rewards, expected, RESPONSES):
        assert entry["rm"] == pytest.approx(direct, abs=1e-5)
        assert entry["format"] == (1.0 if "answer is" in text else 0.0)
        assert entry["total"] == pytest.approx(2.0 * entry["rm"] + entry["format"])
    ray.kill(actor)
