"""The job spec: the one schema every YAML file in `configs/` is checked against.

Every setting of a run lives here with its default (the reward sources in
jobs/core/reward_spec.py). `load_spec` reads YAML (over the spec its `base:` names, if any), applies `--set a.b=value`
overrides and validates; any problem comes back as a `SpecError` whose message
is one line naming the field path and what was expected (jobs/core/spec_errors.py
writes those lines). The resolved spec (defaults filled in) is saved with every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional

import yaml
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from jobs.algorithms import REGISTERED, algorithm_named, names_where
from jobs.core.errors import SpecError
from jobs.core.eval_spec import EvalSpec
from jobs.core.learner_spec import LearnerSpec, LoraSpec
from jobs.core.train_spec import TrainSpec
from jobs.core.operations_spec import CheckpointSpec, FaultSpec, LoggingSpec, PlacementSpec, SyncSpec
from jobs.core.reward_spec import RewardSpec
from jobs.core.rollout_spec import RolloutSpec
from jobs.core.spec_base import Section
from jobs.core.spec_errors import read_spec_file, validation_error_line

if TYPE_CHECKING:
    from jobs.algorithms.base import Algorithm

BUILTIN_PREFIX = "builtin:"
REASONING_GYM_PREFIX = "reasoning-gym:"
CHAMP_PREFIX = "champ:"


class ModelSpec(Section):
    path: str = Field(
        "builtin:tiny-llama",
        description="Local HF folder, hub id, or builtin:tiny-llama (built on the fly, nothing downloaded).",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="bfloat16 on GPUs needs compute capability 8.0 or newer; a driver that sees such a GPU refuses "
        "it before Ray starts (jobs/gpu_checks.py).",
    )
    max_model_len: int = Field(512, gt=8, description="Prompt + response tokens, for vLLM and the learner.")
    trust_remote_code: bool = Field(
        False,
        description="Run the model repo's own Python code (transformers/vLLM trust_remote_code). "
        "Off unless you trust the repo.",
    )
    lora: Optional[LoraSpec] = Field(None, description="Train LoRA adapters instead of every weight; null: full fine-tuning.")
    lm_head_dtype: Literal["model", "float32"] = Field(
        "model",
        description="float32: the output projection runs in float32 in the engine (vLLM's head_dtype), the CLL "
        "replica and the learner, all three: the bf16 head is the main source of engine-vs-trainer log-prob gaps.",
    )


class DataSpec(Section):
    path: str = Field(
        "builtin:arithmetic",
        description=".jsonl/.json/.parquet file, a datasets.save_to_disk folder, a hub dataset, builtin:arithmetic, "
        "builtin:word-problems (one- to three-step word problems with worked solutions), "
        "reasoning-gym:<task>, or champ:v0 (champ-dataset: question, answer, solution, hints columns).",
    )
    split: str = "train"
    prompt_column: str = Field("prompt", min_length=1)
    system_prompt: Optional[str] = None
    chat_template: str = Field(
        "model",
        description="'model': the tokenizer's own template; 'none': the raw prompt text; otherwise a Jinja template.",
    )
    answer_column: str = Field(
        "answer", min_length=1, description="Gold final answers, read by the math_answer reward."
    )
    solution_column: str = Field(
        "solution",
        min_length=1,
        description="Reference solutions (IRFT's demonstrations); a dotted path reaches into a nested "
        "column, e.g. metadata.answer_cot for reasoning-gym.",
    )
    chosen_column: str = Field("chosen", min_length=1, description="Preferred responses (preference.source: dataset).")
    rejected_column: str = Field("rejected", min_length=1, description="Dispreferred responses (preference.source: dataset).")
    shuffle: bool = True
    max_prompts: Optional[int] = Field(
        None, gt=0, description="Use only the first N rows (for reasoning-gym: generate N problems, default 1000)."
    )
    seed: int = Field(0, description="Seed of generated data (reasoning-gym, builtin:word-problems); another seed gives "
                      "held-out problems.")
    task_options: dict = Field(
        default_factory=dict,
        description="reasoning-gym only: the task's own settings, passed to reasoning_gym.create_dataset, e.g. "
        "{min_terms: 2, max_terms: 3, max_digits: 2} for chain_sum.",
    )
    overlong_prompts: Literal["drop", "truncate", "error"] = Field(
        "drop",
        description="What happens to a prompt longer than model.max_model_len - rollout.max_new_tokens: drop it, "
        "truncate it to its last tokens as vLLM's truncate_prompt_tokens does, or fail naming the row.",
    )
    # Not a setting (never in spec.yaml or --set): which part of the source this spec loads when the
    # eval keeps rows back. Set by JobSpec._held_out_rows and jobs/core/data.py heldout_data_spec; read by
    # jobs/core/data.py indexed_rows.
    _part: Optional[dict] = PrivateAttr(None)


class PreferenceSpec(Section):
    """Where pairs and their reference log-probs come from (docs/algorithms.md sections 4-8)."""

    source: Literal["online", "dataset"] = Field(
        "online",
        description="online: k samples per prompt from the current policy, scored by the reward actor; "
        "dataset: prompt/chosen/rejected columns, no rollout (offline DPO).",
    )
    pairs: Literal["best_vs_worst", "all_above_margin"] = "best_vs_worst"
    min_margin: float = Field(
        0.0, ge=0, description="A pair needs chosen reward - rejected reward > min_margin; ties are always dropped."
    )
    reference: Optional[Literal["initial", "sampler"]] = Field(
        None,
        description="initial: the frozen starting model (a copy on each learner rank); sampler: the weights that "
        "generated the samples (scored by the rollout workers' replica at no extra cost). "
        "Default: sampler for irft, initial otherwise.",
    )


class JobSpec(Section):
    name: str = Field("job", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    iterations: int = Field(3, ge=1)
    algorithm: Literal[tuple(REGISTERED)] = Field(
        "idft", description="; ".join(f"{name}: {summary}" for name, summary in REGISTERED.items())
        + " (jobs/algorithms/, one module each).",
    )
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    learner: LearnerSpec = Field(default_factory=LearnerSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    sync: SyncSpec = Field(default_factory=SyncSpec)
    reward: RewardSpec = Field(default_factory=RewardSpec)
    preference: PreferenceSpec = Field(default_factory=PreferenceSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    faults: FaultSpec = Field(default_factory=FaultSpec)
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    logging: LoggingSpec = Field(default_factory=LoggingSpec)
    output_dir: Optional[str] = Field(None, description="Defaults to runs/<name>; --output-dir overrides.")

    @model_validator(mode="after")
    def _batches_tile_the_samples(self) -> "JobSpec":
        # Every rank must run the same number of micro-batches, or the
        # gradient all-reduce of the last step waits forever. Pair counts vary
        # with ties, so the learner group trims pairs instead (LearnerGroup.train).
        if not self.sample_count_varies and self.samples_per_iteration % self.samples_per_optimizer_step:
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

    @model_validator(mode="after")
    def _algorithm_rules(self) -> "JobSpec":
        # What the algorithm's module declares (jobs/algorithms/): its preference reference, the samples
        # its loss can take, then its own checks.
        algorithm = self.registered_algorithm
        if self.preference.reference is None:
            self.preference.reference = algorithm.default_reference
        if self.rollout.mode != "on_policy" and not algorithm.token_loss:
            raise ValueError(
                f"rollout.mode {self.rollout.mode!r} trains on the kept samples with "
                f"{' or '.join(names_where(lambda a: a.token_loss))}, not {self.algorithm!r}"
            )
        if self.train.truncated_is_cap is not None and not algorithm.token_loss:
            raise ValueError(f"train.truncated_is_cap weighs the token losses of "
                             f"{' and '.join(names_where(lambda a: a.token_loss))}; algorithm "
                             f"{self.algorithm} has none: leave it unset")
        algorithm.check(self)
        return self

    @model_validator(mode="after")
    def _answer_first_setup(self) -> "JobSpec":
        if self.rollout.mode in ("on_policy", "reference"):
            return self
        keys = [s.key for s in self.reward.sources]
        if self.rollout.hinted.verifier not in keys:
            raise ValueError(
                f"rollout.hinted.verifier {self.rollout.hinted.verifier!r} must name one of reward.sources "
                f"(configured: {keys or 'none'}); it decides which answers are right"
            )
        return self

    @model_validator(mode="after")
    def _eval_verifier(self) -> "JobSpec":
        if not self.eval.every:
            return self
        keys = [s.key for s in self.reward.sources]
        if not keys:
            raise ValueError("eval.every > 0 checks held-out answers with a reward source; reward.sources is empty")
        if self.eval.verifier is None:
            self.eval.verifier = self.rollout.hinted.verifier if self.rollout.hinted.verifier in keys else keys[0]
        elif self.eval.verifier not in keys:
            raise ValueError(f"eval.verifier {self.eval.verifier!r} must name one of reward.sources (configured: {keys})")
        return self

    @model_validator(mode="after")
    def _held_out_rows(self) -> "JobSpec":
        # A fixed dataset (file, folder, hub, champ) evaluated without eval.data_path keeps
        # eval.holdout_fraction of its rows back from training (jobs/core/data.py); generated sources
        # (builtin:, reasoning-gym:) are evaluated on fresh problems of data.seed + 1 instead.
        generated = is_builtin(self.data.path) or is_reasoning_gym(self.data.path)
        held_out = bool(self.eval.every) and self.eval.data_path is None and not generated
        self.data._part = {"part": "train", "fraction": self.eval.holdout_fraction} if held_out else None
        return self

    @model_validator(mode="after")
    def _offline_pairs_score_nothing(self) -> "JobSpec":
        # preference.source dataset trains on the dataset's own chosen/rejected: no sample is generated or
        # scored, so reward sources would only start an idle reward actor and demand gold answers the
        # pairs file need not have. The eval's verifier is the one use left for them.
        if not self.uses_rollout and not self.eval.every and self.reward.sources:
            self.reward.sources = []
        return self

    @model_validator(mode="after")
    def _asynchronous_generation(self) -> "JobSpec":
        if self.rollout.max_policy_lag == 0:
            return self
        if not self.uses_rollout or self.rollout.mode == "reference":
            raise ValueError("rollout.max_policy_lag > 0 overlaps generation with training; this job generates nothing "
                             "(offline pairs or rollout.mode reference): set it to 0")
        if self.pairs_demonstrations_with_own_samples:
            raise ValueError(f"algorithm {self.algorithm} pairs each demonstration with the current policy's own "
                             "samples; rollout.max_policy_lag must be 0")
        if self.sync.method == "broadcast":
            # A worker replaced while the learners train would have to fetch weights they are changing.
            raise ValueError("sync.method broadcast does not run with rollout.max_policy_lag > 0 yet; "
                             "use sync.method object_store")
        return self

    @property
    def sample_count_varies(self) -> bool:
        """Pairs drop with ties and answer-first keeps only verified samples: the learners trim to an even split."""
        return self.trains_on_pairs or self.rollout.mode != "on_policy"

    @property
    def registered_algorithm(self) -> Algorithm:
        return algorithm_named(self.algorithm)

    @property
    def pairs_demonstrations_with_own_samples(self) -> bool:
        """irft and fsft: every generation is paired with the dataset's demonstration of its prompt."""
        return self.registered_algorithm.demonstrations

    @property
    def trains_on_pairs(self) -> bool:
        return self.registered_algorithm.trains_on == "pairs"

    @property
    def uses_rollout(self) -> bool:
        """False only for offline preference training, which needs no generation and no weight sync."""
        return not (self.trains_on_pairs and self.preference.source == "dataset")

    @property
    def uses_initial_reference(self) -> bool:
        """The learners fill log-probs of the frozen initial model before training (pairs: both responses)."""
        return self.registered_algorithm.initial_reference(self)

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
    def items_per_iteration(self) -> int:
        """Samples, or for pair algorithms the most pairs an iteration can make (ties make fewer)."""
        if not self.trains_on_pairs:
            return self.samples_per_iteration  # answer-first keeps at most these
        if self.preference.source == "dataset":
            return self.rollout.prompts_per_iteration
        if self.pairs_demonstrations_with_own_samples:
            return self.samples_per_iteration
        k = self.rollout.samples_per_prompt
        per_prompt = 1 if self.preference.pairs == "best_vs_worst" else k * (k - 1) // 2
        return self.rollout.prompts_per_iteration * per_prompt

    @property
    def optimizer_steps_per_iteration(self) -> int:
        """Exact for samples; an upper bound for pairs (what the LR schedule is laid out over)."""
        steps = max(1, -(-self.items_per_iteration // self.samples_per_optimizer_step))
        return steps * self.train.epochs_per_iteration

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def validate_spec(raw: dict) -> JobSpec:
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(validation_error_line(exc, JobSpec)) from None


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
    raw = read_spec_file(Path(path))
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate_spec(raw)


def is_builtin(path: str) -> bool:
    return path.startswith(BUILTIN_PREFIX)


def is_reasoning_gym(path: str) -> bool:
    return path.startswith(REASONING_GYM_PREFIX)
