"""The model a learner rank trains, as the spec asks for it: loaded partitioned under ZeRO-3,
wrapped with LoRA adapters, with gradient checkpointing; and the check of those settings
against the model, run by the driver before any actor starts.
"""

from __future__ import annotations

import torch

from actors.decoding.float32_head import use_float32_head
from jobs.core.errors import SpecError
from jobs.core.spec import JobSpec

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_options(spec: JobSpec) -> dict:
    return {"dtype": TORCH_DTYPES[spec.model.dtype], "trust_remote_code": spec.model.trust_remote_code}


def check_trainable_model(spec: JobSpec, model_path: str) -> None:
    """One line naming the field when the model cannot do what the spec asks (no weights are loaded)."""
    lora = spec.model.lora
    if not (spec.train.gradient_checkpointing or lora):
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=spec.model.trust_remote_code)
    with torch.device("meta"):  # the architecture without its weights
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=spec.model.trust_remote_code)
    if spec.train.gradient_checkpointing and not model.supports_gradient_checkpointing:
        raise SpecError(f"train.gradient_checkpointing: {type(model).__name__} ({config.model_type}) has no gradient "
                        f"checkpointing in transformers; set it to false")
    if lora and lora.target_modules != "all-linear":
        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = [target for target in lora.target_modules if target not in names]
        if missing:
            linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
            raise SpecError(f"model.lora.target_modules: {missing} are not modules of {type(model).__name__}; "
                            f"its linear layers are {linear} (or use all-linear)")


def load_trainable_model(spec: JobSpec, model_path: str, resume_from: str | None, deepspeed_config: dict):
    """(model, keep-alive). Under ZeRO-3 each rank loads only its slice; keep the second value as long as the model.

    A LoRA model is the frozen base from `model_path` with adapters, new or (resuming) from the checkpoint.
    """
    from transformers import AutoModelForCausalLM

    zero3_marker = None
    if spec.learner.zero_stage == 3:
        # transformers partitions every weight as it loads while this object is alive (it keeps only a weak
        # reference), so no rank materialises the whole model.
        from transformers.integrations import HfDeepSpeedConfig

        zero3_marker = HfDeepSpeedConfig(deepspeed_config)
    lora = spec.model.lora
    weights = model_path if lora or not resume_from else resume_from
    model = AutoModelForCausalLM.from_pretrained(weights, **load_options(spec))
    if spec.model.lm_head_dtype == "float32":
        use_float32_head(model)
    if spec.train.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad, so it works under frozen LoRA bases too.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora:
        from peft import LoraConfig, PeftModel, get_peft_model

        if resume_from:
            model = PeftModel.from_pretrained(model, resume_from, is_trainable=True)
        else:
            model = get_peft_model(model, LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, task_type="CAUSAL_LM",
                target_modules=lora.target_modules,
            ))
    return model, zero3_marker
