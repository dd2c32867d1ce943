"""The job spec: the one schema every YAML file in `configs/` is checked against.

Every setting of a run lives here with its default. `load_spec` reads YAML,
applies `--set a.b=value` overrides and validates; any problem comes back as a
`SpecError` whose message is one line naming the field path and what was
expected. The resolved spec (defaults filled in) is saved with every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jobs.errors import SpecError

BUILTIN_PREFIX = "builtin:"


class Section(BaseModel):
    # Unknown keys are almost always typos of a real key; silently ignoring
    # them would run a different job from the one the user wrote.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(Section):
    path: str = Field(
        "builtin:tiny-llama",
        description="Local HF folder, hub id, or builtin:tiny-llama (built on the fly, nothing downloaded).",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_model_len: int = Field(512, gt=8, description="Prompt + response tokens, for vLLM and the learner.")


class DataSpec(Section):
    path: str = Field(
        "builtin:arithmetic",
        description=".jsonl/.json/.parquet file, a datasets.save_to_disk folder, a hub dataset, or builtin:arithmetic.",
    )
    split: str = "train"
    prompt_column: str = Field("prompt", min_length=1)
    system_prompt: Optional[str] = None
    chat_template: str = Field(
        "model",
        description="'model': the tokenizer's own template; 'none': the raw prompt text; otherwise a Jinja template.",
    )
    shuffle: bool = True
    max_prompts: Optional[int] = Field(None, gt=0, description="Use only the first N rows.")


class EngineSpec(Section):
    """vLLM engine settings that differ between a laptop CPU and a GPU node."""

    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)
    cpu_kv_cache_gib: float = Field(1.0, gt=0, description="VLLM_CPU_KVCACHE_SPACE on CPU workers.")
    enforce_eager: bool = True
    multiprocessing: bool = Field(
        False, description="Run the vLLM engine core in its own process (vLLM's default); False keeps it in the actor."
    )


class RolloutSpec(Section):
    workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(0.25, ge=0)
    gpus_per_worker: float = Field(0, ge=0)
    prompts_per_iteration: int = Field(8, ge=1)
    samples_per_prompt: int = Field(2, ge=1, description="k responses sampled per prompt.")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(64, ge=1)
    cll_batch_size: int = Field(16, ge=1, description="Sequences per teacher-forced CLL forward pass.")
    engine: EngineSpec = Field(default_factory=EngineSpec)


class LearnerSpec(Section):
    ranks: int = Field(2, ge=1)
    cpus_per_rank: float = Field(0.25, ge=0)
    gpus_per_rank: float = Field(0, ge=0)
    zero_stage: Literal[0, 1, 2] = 2


class IDFTSpec(Section):
    """ALGORITHMS.md section 2; defaults are the authors' released runs."""

    beta: float = Field(1.0, gt=0)
    gamma_min: float = Field(0.1, ge=0)
    gamma_max: float = Field(2.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    transition_ratio: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _gamma_range(self) -> "IDFTSpec":
        if self.gamma_min > self.gamma_max:
            raise ValueError(f"gamma_min ({self.gamma_min}) must not exceed gamma_max ({self.gamma_max})")
        return self


class TrainSpec(Section):
    lr: float = Field(6e-5, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.01, ge=0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    grad_clip: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(4, ge=1, description="Sequences per rank per forward pass.")
    gradient_accumulation_steps: int = Field(1, ge=1)
    epochs_per_iteration: int = Field(1, ge=1, description="Passes over each iteration's samples.")
    idft: IDFTSpec = Field(default_factory=IDFTSpec)


class SyncSpec(Section):
    method: Literal["object_store"] = Field(
        "object_store",
        description="How learner weights reach the rollout engines. object_store: safetensors bytes "
        "through the Ray object store into a vLLM worker extension (works on CPU and GPU).",
    )


class CheckpointSpec(Section):
    every: int = Field(0, ge=0, description="Save every N iterations; 0 saves only at the end.")


class JobSpec(Section):
    name: str = Field("job", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    iterations: int = Field(3, ge=1)
    algorithm: Literal["sft", "idft"] = Field(
        "idft", description="Selects the loss and the data flow (on-policy samples scored with CLL)."
    )
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    learner: LearnerSpec = Field(default_factory=LearnerSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    sync: SyncSpec = Field(default_factory=SyncSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    output_dir: Optional[str] = Field(None, description="Defaults to runs/<name>; --output-dir overrides.")

    @model_validator(mode="after")
    def _batches_tile_the_samples(self) -> "JobSpec":
        # Every rank must run the same number of micro-batches, or the
        # gradient all-reduce of the last step waits forever.
        if self.samples_per_iteration % self.samples_per_optimizer_step:
            raise ValueError(
                f"rollout.prompts_per_iteration x rollout.samples_per_prompt "
                f"(= {self.samples_per_iteration} samples per iteration) must be a multiple of "
                f"train.micro_batch_size x train.gradient_accumulation_steps x learner.ranks "
                f"(= {self.samples_per_optimizer_step})"
            )
        return self

    @model_validator(mode="after")
    def _room_for_a_prompt(self) -> "JobSpec":
        if self.rollout.max_new_tokens >= self.model.max_model_len:
            raise ValueError(
                f"rollout.max_new_tokens ({self.rollout.max_new_tokens}) must be smaller than "
                f"model.max_model_len ({self.model.max_model_len}), which also has to hold the prompt"
            )
        return self

    @property
    def samples_per_iteration(self) -> int:
        return self.rollout.prompts_per_iteration * self.rollout.samples_per_prompt

    @property
    def max_prompt_tokens(self) -> int:
        """Prompt budget: what max_model_len leaves after the response (positive, by the check above)."""
        return self.model.max_model_len - self.rollout.max_new_tokens

    @property
    def samples_per_optimizer_step(self) -> int:
        return self.train.micro_batch_size * self.train.gradient_accumulation_steps * self.learner.ranks

    @property
    def optimizer_steps_per_iteration(self) -> int:
        return self.samples_per_iteration // self.samples_per_optimizer_step * self.train.epochs_per_iteration

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _format_location(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<top level>"


def _allowed_fields(loc: tuple) -> list[str]:
    model: Any = JobSpec
    for item in loc[:-1]:
        field = model.model_fields.get(item) if isinstance(item, str) else None
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _describe(error: dict) -> str:
    where = _format_location(error["loc"])
    if error["type"] == "extra_forbidden":
        allowed = _allowed_fields(error["loc"])
        hint = f" (expected one of: {', '.join(allowed)})" if allowed else ""
        return f"{where}: unknown field{hint}"
    if error["type"] == "missing":
        if error["loc"] and isinstance(error["loc"][-1], int):
            return f"{_format_location(error['loc'][:-1])}: too few items (item [{error['loc'][-1]}] is missing)"
        return f"{where}: required field is missing"
    message = error["msg"].removeprefix("Value error, ")
    if error["loc"] and "input" in error and not isinstance(error["input"], dict):
        return f"{where}: {message} (got {error['input']!r})"
    return f"{where}: {message}"


def validate_spec(raw: dict) -> JobSpec:
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError("; ".join(_describe(e) for e in exc.errors())) from None


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `--set a.b.c=value` in place; the value is parsed as YAML."""
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set {assignment!r}: expected KEY.PATH=VALUE, e.g. --set train.lr=1e-5")
    path = key.strip().split(".")
    node = raw
    for depth, name in enumerate(path[:-1]):
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            where = ".".join(path[: depth + 1])
            raise SpecError(f"--set {assignment!r}: {where} is a value, not a section")
        node = child
    try:
        node[path[-1]] = yaml.safe_load(value)
    except yaml.YAMLError:
        node[path[-1]] = value


def load_spec(path: str | Path, overrides: list[str] = ()) -> JobSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec file ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise SpecError(f"{path}: not valid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of fields at the top level, got {type(raw).__name__}")
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate_spec(raw)


def is_builtin(path: str) -> bool:
    return path.startswith(BUILTIN_PREFIX)
