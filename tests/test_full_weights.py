"""The weights a learner exports: plain names, LoRA merged, tied weights sent once (no DeepSpeed here;
tests/test_learner_memory_modes.py runs the ZeRO-3 gather)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load
from transformers import AutoModelForCausalLM

from actors.weights.full_weights import full_weights
from actors.weights.payload import decode_weights


def lora_model(path, target_modules):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
        LoraConfig(r=4, lora_alpha=8, target_modules=target_modules, task_type="CAUSAL_LM"),
    )
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero (no change); a trained adapter has moved it
            torch.nn.init.normal_(parameter, std=0.1)
    return model


def test_plain_model_exports_its_state_dict(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    exported = decode_weights(full_weights(model, zero3=False, keep=True))
    expected = model.state_dict()
    assert exported.keys() == expected.keys()
    assert all(torch.equal(exported[k], expected[k]) for k in expected)
    assert full_weights(model, zero3=False, keep=False) is None  # a rank that only takes part keeps nothing


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], "all-linear"])
def test_lora_exports_the_merged_weights_under_the_plain_names(tiny_model, targets):
    model = lora_model(tiny_model, targets)
    payload = full_weights(model, zero3=False, keep=True)
    exported = decode_weights(payload)
    merged = model.merge_and_unload().state_dict()  # peft's own merge, for comparison
    assert exported.keys() == merged.keys() == AutoModelForCausalLM.from_pretrained(tiny_model).state_dict().keys()
    assert max(float((exported[k] - merged[k]).abs().max()) for k in merged) < 1e-6
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).state_dict()
    changed = {k for k in merged if not torch.equal(exported[k], base[k])}
    assert changed and all(any(t in k for t in ("q_proj", "v_proj", "k_proj", "o_proj", "mlp")) for k in changed)
    assert load(bytes(payload))  # a plain safetensors file as well


def test_tied_weights_travel_once(tiny_tied_model):
    model = lora_model(tiny_tied_model, ["q_proj"])
    payload = full_weights(model, zero3=False, keep=True)
    stored = load(bytes(payload))
    exported = decode_weights(payload)
    assert "lm_head.weight" not in stored and "lm_head.weight" in exported
    assert exported["lm_head.weight"].data_ptr() == exported["model.embed_tokens.weight"].data_ptr()


def test_settings_the_model_cannot_take_are_refused_in_one_line_naming_the_field(tiny_model, tmp_path):
    from transformers import GPTNeoXJapaneseConfig

    from actors.training.trainable_model import check_trainable_model
    from jobs.core.errors import SpecError
    from jobs.core.spec import validate_spec

    lora = validate_spec({"model": {"lora": {"target_modules": ["q_proj", "query_key_value"]}}})
    with pytest.raises(SpecError, match=r"model.lora.target_modules: \['query_key_value'\] are not modules of LlamaForCausalLM.*q_proj"):
        check_trainable_model(lora, str(tiny_model))
    check_trainable_model(validate_spec({"model": {"lora": {"target_modules": ["q_proj"]}}}), str(tiny_model))

    no_checkpointing = tmp_path / "gpt-neox-japanese"  # a causal LM transformers has no gradient checkpointing for
    GPTNeoXJapaneseConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=100).save_pretrained(no_checkpointing)
    spec = validate_spec({"train": {"gradient_checkpointing": True}})
    with pytest.raises(SpecError, match="train.gradient_checkpointing: GPTNeoXJapaneseForCausalLM"):
        check_trainable_model(spec, str(no_checkpointing))
    check_trainable_model(spec, str(tiny_model))
