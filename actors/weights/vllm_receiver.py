"""vLLM worker extension: takes new weights as bytes (actors/weights/payload.py) or from the
weight broadcast group (actors/weights/broadcast.py), and hands back the entropies the engine
recorded while sampling (actors/decoding/engine_entropy.py) and the pairs it decoded with
Hinted Decoding (actors/decoding/engine_hinted.py).

vLLM mixes this class into its worker (`LLM(worker_extension_cls=...)`), so
`self` is the vLLM worker. Bytes rather than tensors because when the engine
core runs in its own process, `collective_rpc` arguments are serialised, and
tensors do not survive that; bytes do, in both engine modes.

The reload goes through the worker's own `reload_weights` entry point: on CPU,
`model.load_weights()` alone silently keeps the pre-packed copy of the old
linear weights.
"""

from __future__ import annotations

WORKER_EXTENSION = "actors.weights.vllm_receiver.WeightReceiver"


class WeightReceiver:
    def hintflow_load_weights(self, payload: bytes) -> int:
        from actors.weights.payload import decode_weights

        state_dict = decode_weights(payload)
        self.reload_weights(weights_iterator=iter(state_dict.items()), is_checkpoint_format=True)
        return len(state_dict)

    def hintflow_join_weight_group(self, address: str, port: int, rank: int, world_size: int) -> None:
        from actors.weights.broadcast import open_group

        self.hintflow_weight_group = open_group(address, port, rank, world_size, self.device)

    def hintflow_receive_weights(self) -> int:
        from actors.weights.broadcast import receive_payload
        from actors.weights.payload import decode_weights_buffer

        buffer = receive_payload(self.hintflow_weight_group, self.device)
        self.reload_weights(weights_iterator=iter(decode_weights_buffer(buffer).items()), is_checkpoint_format=True)
        return buffer.numel()  # the payload's bytes

    def hintflow_take_entropies(self, keys: list[str]) -> dict[str, dict[int, float]]:
        from actors.decoding.engine_entropy import EntropyRecorder

        return EntropyRecorder.take(keys)

    def hintflow_take_hinted(self, pairs: list[str]) -> dict[str, dict]:
        from actors.decoding.engine_hinted import HintedMixer

        return HintedMixer.take(pairs)
