"""The learner -> rollout weights payload: every name restored, tied storage sent once."""

from __future__ import annotations

import torch

from actors.weights_payload import decode_weights, encode_weights


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
