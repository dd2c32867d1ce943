"""model.lm_head_dtype: float32 on the trainer side (the CLL replica, the policy, the reference)."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from actors.decoding.float32_head import engine_head_options, use_float32_head


def test_a_bf16_model_gets_float32_logits_from_float32_casts_and_keeps_its_tied_weights(tiny_tied_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_tied_model, dtype=torch.bfloat16)
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state
        bf16_logits = model(input_ids=ids).logits
    use_float32_head(model)
    logits = model(input_ids=ids).logits
    assert logits.dtype == torch.float32
    expected = F.linear(hidden.float(), model.get_output_embeddings().weight.float())
    assert torch.allclose(logits, expected, atol=1e-5)
    # The bf16 head rounds its logits; the float32 one does not (a test that would fail without the patch).
    assert (logits - bf16_logits.float()).abs().max() > 1e-4
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    assert head.weight is embeddings.weight and head.weight.dtype == torch.bfloat16
    logits.logsumexp(-1).sum().backward()  # trains through the cast
    assert head.weight.grad is not None and head.weight.grad.dtype == torch.bfloat16


def test_the_engine_is_asked_for_the_same_head():
    assert engine_head_options("float32") == {"hf_overrides": {"head_dtype": "float32"}}
    assert engine_head_options("model") == {}
