"""The bytes that carry a full set of weights from the learner to the rollout workers.

safetensors, with each tensor storage sent once. Tied weights (lm_head =
embed_tokens in SmolLM2, Qwen2.5-0.5B, Gemma) appear under two names in a
state_dict; the second name travels as an alias in the header metadata, not
as a second vocabulary-sized matrix. `decode_weights` restores every name,
because vLLM's in-place reload must see the alias too: a layer that gets no
weights is restored from its old tensors, and with tied weights that reverts
the shared matrix.

`SafetensorsWriter` lays the file out from names, shapes and dtypes alone and is
then filled tensor by tensor, so a sharded learner (ZeRO-3) can gather one layer,
write it and let it go: the payload is the only full copy ever held. The same
bytes are a checkpoint's model.safetensors ("format": "pt" is what transformers
asks of the metadata).
"""

from __future__ import annotations

import json
import math

import torch

ALIASES_KEY = "hintflow.aliases"
SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
TORCH_DTYPES_BY_NAME = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}


class SafetensorsWriter:
    """A safetensors payload laid out up front: `put` each tensor once, then take `payload`."""

    def __init__(self, layout: list[tuple[str, tuple[int, ...], torch.dtype]], aliases: dict[str, str]):
        header: dict = {"__metadata__": {"format": "pt", ALIASES_KEY: json.dumps(aliases)}}
        self._slots: dict[str, tuple[int, int]] = {}
        offset = 0
        for name, shape, dtype in layout:
            size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            self._slots[name] = (offset, size)
            offset += size
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        self._data_start = 8 + len(encoded)
        self.payload = bytearray(self._data_start + offset)
        self.payload[:8] = len(encoded).to_bytes(8, "little")
        self.payload[8 : self._data_start] = encoded
        self._unwritten = set(self._slots)

    def put(self, name: str, tensor: torch.Tensor) -> None:
        offset, size = self._slots[name]
        raw = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        if raw.size != size:
            raise ValueError(f"weight {name}: {raw.size} bytes, but {size} were laid out for it")
        start = self._data_start + offset
        memoryview(self.payload)[start : start + size] = raw
        self._unwritten.discard(name)

    def finish(self) -> bytearray:
        if self._unwritten:
            raise ValueError(f"weights never written: {sorted(self._unwritten)[:5]}")
        return self.payload


def encode_weights(state_dict: dict[str, torch.Tensor]) -> bytearray:
    layout, aliases, owner_of_storage = [], {}, {}
    for name, tensor in state_dict.items():
        owner = owner_of_storage.setdefault(tensor.data_ptr(), name)
        if owner != name:
            aliases[name] = owner
            continue
        layout.append((name, tuple(tensor.shape), tensor.dtype))
    writer = SafetensorsWriter(layout, aliases)
    for name, _, _ in layout:
        writer.put(name, state_dict[name])
    return writer.finish()


def decode_weights(payload: bytes | bytearray) -> dict[str, torch.Tensor]:
    """Every tensor of a payload, aliases included, as views into one writable copy of it."""
    return decode_weights_buffer(torch.frombuffer(bytearray(payload), dtype=torch.uint8))


def decode_weights_buffer(buffer: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every tensor of a payload held as a uint8 tensor on any device, as views into it where aligned.

    Aliases name the same view as their owner, so tied weights stay one tensor.
    """
    header_length = int.from_bytes(buffer[:8].cpu().numpy().tobytes(), "little")
    header = json.loads(buffer[8 : 8 + header_length].cpu().numpy().tobytes())
    metadata = header.pop("__metadata__", None) or {}
    data = buffer[8 + header_length :]
    state_dict = {}
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        dtype = TORCH_DTYPES_BY_NAME[entry["dtype"]]
        raw = data[start:end]
        if start % torch.empty((), dtype=dtype).element_size():
            raw = raw.clone()  # a view of another dtype must start on a multiple of its element size
        state_dict[name] = raw.view(dtype).view(entry["shape"])
    for alias, owner in json.loads(metadata.get(ALIASES_KEY, "{}")).items():
        state_dict[alias] = state_dict[owner]
    return state_dict
