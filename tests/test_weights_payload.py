"""The learner -> rollout weights payload: every name restored, tied storage sent once."""

from __future__ import annotations

import torch

from actors.weights.payload import decode_weights, encode_weights


def test_tied_weights_travel_once_and_come_back_under_both_names():
    embedding = torch.randn(300, 16)
    state_dict = {"embed.weight": embedding, "layer.weight": torch.randn(16, 16), "lm_head.weight": embedding}
    untied = {name: t.clone() for name, t in state_dict.items()}

    payload = encode_weights(state_dict)
    assert len(payload) < len(encode_weights(untied)) - embedding.numel() * 4 * 0.9  # one matrix fewer

    decoded = decode_weights(payload)
    assert decoded.keys() == state_dict.keys()
    for name, tensor in state_dict.items():
        assert torch.equal(decoded[name], tensor)
    assert decoded["lm_head.weight"].data_ptr() == decoded["embed.weight"].data_ptr()


def test_payload_is_a_copy_not_a_view_of_the_live_weights():
    weight = torch.zeros(4)
    payload = encode_weights({"w": weight})
    weight += 1  # the learner keeps training after exporting
    assert torch.equal(decode_weights(payload)["w"], torch.zeros(4))


def test_a_payload_decodes_in_place_from_a_tensor_even_where_dtypes_misalign():
    """The broadcast path decodes the received uint8 tensor into views; a float32 tensor laid out after
    an odd-length bfloat16 one starts off its alignment and must still come back exact."""
    from actors.weights.payload import decode_weights_buffer

    odd = torch.randn(3, dtype=torch.float32).to(torch.bfloat16)  # 6 bytes: what follows starts at offset 6
    weights = {"a.odd": odd, "b.float": torch.randn(2, 5), "c.ints": torch.arange(7, dtype=torch.int64)}
    weights["d.tied"] = weights["b.float"]
    buffer = torch.frombuffer(encode_weights(weights), dtype=torch.uint8)
    decoded = decode_weights_buffer(buffer)
    assert set(decoded) == set(weights)
    for name, tensor in weights.items():
        assert decoded[name].dtype == tensor.dtype and torch.equal(decoded[name], tensor), name
    assert decoded["d.tied"].data_ptr() == decoded["b.float"].data_ptr()
    # Aligned tensors are views into the received buffer, not copies.
    assert decoded["a.odd"].data_ptr() - buffer.data_ptr() < buffer.numel()
