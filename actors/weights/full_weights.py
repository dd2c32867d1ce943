"""The full weights of the model a learner trains, as one safetensors payload, however it is held.

Under ZeRO-3 every rank holds a slice of each parameter; under LoRA the weights the engines
need are base + B·A·(alpha/r), not any tensor the model has. Both are handled in one walk:
the model is cut into units (a LoRA layer with its base layer, which merge into one weight;
any other module with its own parameters), each unit's parameters are gathered on every rank
(a ZeRO-3 collective: every rank must call `full_weights`), its tensors are written into the
payload on the rank that keeps it, and the gathered copy is released before the next unit.
No rank ever holds more than one unit beyond its own slice, plus the payload where it is kept.

Names are the plain model's (no peft prefixes, no `.base_layer`), so the payload loads into
vLLM and into transformers as if no adapter had been there.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from actors.weights.payload import SafetensorsWriter


def _is_lora_layer(module: torch.nn.Module) -> bool:
    return hasattr(module, "get_delta_weight") and hasattr(module, "get_base_layer")


def plain_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft wrapper (whose LoRA layers are still in place), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _units(module: torch.nn.Module, prefix: str = "") -> Iterator[tuple[str, torch.nn.Module]]:
    yield prefix, module
    if not _is_lora_layer(module):  # a LoRA layer's children (base, adapters) belong to its unit
        for name, child in module.named_children():
            yield from _units(child, f"{prefix}{name}.")


def _own_tensors(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """What `module.state_dict()` would hold of the module itself: its parameters and persistent buffers."""
    yield from module.named_parameters(recurse=False)
    for name, buffer in module.named_buffers(recurse=False):
        if name not in module._non_persistent_buffers_set:
            yield name, buffer


def _unit_tensors(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name within the unit, tensor whose identity tells tied weights apart). A LoRA layer yields its base's names."""
    return _own_tensors(module.get_base_layer() if _is_lora_layer(module) else module)


def _full_shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(getattr(tensor, "ds_shape", tensor.shape))  # a ZeRO-3 parameter's own shape is its empty slice


def _merged(module: torch.nn.Module, name: str, tensor: torch.Tensor) -> torch.Tensor:
    if not (_is_lora_layer(module) and name == "weight"):
        return tensor
    merged = tensor.detach().clone()
    for adapter in module.active_adapters:
        merged += module.get_delta_weight(adapter).to(merged.dtype)
    return merged


def full_weights(model: torch.nn.Module, zero3: bool, keep: bool) -> bytearray | None:
    """The full (LoRA-merged) weights as safetensors bytes where `keep`, else None; collective when `zero3`."""
    import deepspeed

    units = list(_units(plain_model(model)))
    layout, aliases, owner_of = [], {}, {}
    for prefix, module in units:
        for name, tensor in _unit_tensors(module):
            full_name = prefix + name
            owner = owner_of.setdefault(id(tensor), full_name)
            if owner != full_name:
                aliases[full_name] = owner  # tied weights: one tensor, two names
            else:
                layout.append((full_name, _full_shape(tensor), tensor.dtype))
    writer = SafetensorsWriter(layout, aliases) if keep else None
    with torch.no_grad():
        for prefix, module in units:
            # units do not overlap, so each owned tensor comes up exactly once
            entries = [(name, tensor) for name, tensor in _unit_tensors(module) if owner_of[id(tensor)] == prefix + name]
            if not entries:
                continue
            gathered = list(module.parameters()) if _is_lora_layer(module) else [t for _, t in entries]
            with deepspeed.zero.GatheredParameters(gathered, modifier_rank=None, enabled=zero3):
                for name, tensor in entries:
                    if writer:
                        writer.put(prefix + name, _merged(module, name, tensor))
    return writer.finish() if writer else None
