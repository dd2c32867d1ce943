"""The output projection in float32 (`model.lm_head_dtype: float32`), for the CLL replica and the learner.

In bf16 the rounded logits of the output projection are the main source of the log-prob gap
between the engine that samples and the model that trains (0.6-1.5 nats at the worst token on
an H100). vLLM runs its head in float32 when asked (`hf_overrides={"head_dtype": "float32"}`:
an fp32-accumulating GEMM on CUDA, elsewhere the same cast as here). Peers found that doing it
on one side only makes the gap grow, so every model that produces log-probs compared against
the engine's gets the same head: the replica, the policy and the frozen reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def use_float32_head(model: torch.nn.Module) -> None:
    """Make the model's output projection compute float32 logits from float32 casts of its input and weight.

    The weight stays as it is (a tied embedding keeps its dtype); the cast is made per call, so an
    in-place weight update or a ZeRO-3 gather (the module's hooks still run) is always seen.
    """
    head = model.get_output_embeddings()

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        bias = None if head.bias is None else head.bias.float()
        return F.linear(hidden_states.float(), head.weight.float(), bias)

    head.forward = forward


def engine_head_options(lm_head_dtype: str) -> dict:
    """vLLM engine arguments for the head dtype (both vLLM 0.26 and 0.32 read head_dtype from hf_overrides)."""
    return {"hf_overrides": {"head_dtype": "float32"}} if lm_head_dtype == "float32" else {}
