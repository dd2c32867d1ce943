"""The bytes that carry a full set of weights from the learner to the rollout workers.

safetensors, with each tensor storage sent once. Tied weights (lm_head =
embed_tokens in SmolLM2, Qwen2.5-0.5B, Gemma) appear under two names in a
state_dict; the second name travels as an alias in the header metadata, not
as a second vocabulary-sized matrix. `decode_weights` restores every name,
because vLLM's in-place reload must see the alias too: a layer that gets no
weights is restored from its old tensors, and with tied weights that reverts
the shared matrix.
"""

from __future__ import annotations

import json

import torch

ALIASES_KEY = "hintflow.aliases"


def encode_weights(state_dict: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    owner_of_storage: dict[int, str] = {}
    for name, tensor in state_dict.items():
        owner = owner_of_storage.setdefault(tensor.data_ptr(), name)
        if owner != name:
            aliases[name] = owner
            continue
        tensors[name] = tensor.detach().to("cpu", copy=True).contiguous()
    return save(tensors, metadata={ALIASES_KEY: json.dumps(aliases)})


def decode_weights(payload: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    state_dict = load(payload)
    header_length = int.from_bytes(payload[:8], "little")
    metadata = json.loads(payload[8 : 8 + header_length]).get("__metadata__") or {}
    for alias, owner in json.loads(metadata.get(ALIASES_KEY, "{}")).items():
        state_dict[alias] = state_dict[owner]
    return state_dict
