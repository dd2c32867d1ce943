"""Embedded defaults, built on the fly so a fresh machine downloads nothing.

`builtin:tiny-llama` is a 2-layer Llama with a byte-level BPE tokenizer trained
here on the arithmetic prompts, saved as an ordinary HF folder (safetensors,
config, tokenizer with a chat template), so every later step -- vLLM, DeepSpeed,
checkpoint reload -- goes through exactly the code path a real model takes.
`builtin:arithmetic` is a small set of "What is a + b?" prompts with answers and
one-line solutions (IRFT's demonstrations).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

TINY_LLAMA = "builtin:tiny-llama"
ARITHMETIC = "builtin:arithmetic"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def arithmetic_rows(count: int = 64, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op = rng.choice(["+", "-", "*"])
        answer = {"+": a + b, "-": a - b, "*": a * b}[op]
        rows.append({"prompt": f"What is {a} {op} {b}?", "answer": str(answer), "solution": f"The answer is {answer}."})
    return rows


def digit_share(prompt: str, response: str, row: dict) -> float:
    """Share of the response's characters that are digits: a dense reward the untrained tiny model can climb.

    The builtin preference configs pair it with the exact-answer verifier, which a random
    model never satisfies: without a reward that varies between samples, every pair ties.
    """
    text = response.strip()
    return sum(c.isdigit() for c in text) / len(text) if text else 0.0


def _tokenizer_corpus() -> list[str]:
    rows = arithmetic_rows(count=400, seed=1234)
    words = (
        "the answer is so we add subtract multiply first then result equals step "
        "let us compute think carefully number sum difference product final"
    )
    return [f"{r['prompt']} The answer is {r['answer']}." for r in rows] + [words] * 20


def build_tiny_llama(directory: str | Path, seed: int = 0, tie_word_embeddings: bool = False) -> Path:
    """Write the tiny model to `directory` (idempotent) and return its path."""
    directory = Path(directory)
    if (directory / "config.json").exists() and (directory / "model.safetensors").exists():
        return directory
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 64: a size every vLLM attention backend supports
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)

    # Build beside the target and rename, so a crash never leaves a folder
    # that looks complete to the idempotence check above.
    staging = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    directory.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(staging, directory)
    return directory
