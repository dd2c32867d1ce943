"""The rollout section of the spec: how the workers generate, their vLLM engine settings, and Hinted
Decoding with the answer-first pipeline around it (rollout.hinted). Part of jobs/core/spec.py's schema."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from jobs.core.spec_base import Section


class EngineSpec(Section):
    """vLLM engine settings that differ between a laptop CPU and a GPU node."""

    gpu_memory_utilization: Optional[float] = Field(
        None,
        gt=0,
        le=1,
        description="Share of the whole GPU's memory the vLLM engine takes. null: 3/4 of the worker's own share "
        "(0.75 x min(rollout.gpus_per_worker, 1); 0.3 at 0.4 GPU), so the engine stays inside its share: the "
        "rest of that share holds the CLL replica and the CUDA context, and the device's other shares stay free "
        "for a colocated learner rank or another worker. 0.5 on CPU, where vLLM ignores it.",
    )
    cpu_kv_cache_gib: float = Field(1.0, gt=0, description="VLLM_CPU_KVCACHE_SPACE on CPU workers.")
    enforce_eager: Optional[bool] = Field(
        None,
        description="true: no CUDA graphs. null: false on a GPU engine (rollout.gpus_per_worker > 0; graphs made "
        "generation 2.5-3x faster on an H100) and true on CPU.",
    )
    multiprocessing: bool = Field(
        False, description="Run the vLLM engine core in its own process (vLLM's default); False keeps it in the actor."
    )


DEFAULT_HINT_SYSTEM_PROMPT = (
    "You will be given a question and its correct reference solution. Rewrite the solution as your own "
    "reasoning. First analyse the question and the reference briefly. Then write the line "
    "'### Solution' and, after it, solve the question step by step in your own words, as if you had "
    "never seen the reference; never mention that a solution was given. End with the final answer in \\boxed{}."
)


class HintedSpec(Section):
    """docs/algorithms.md section 3: Hinted Decoding, and the answer-first pipeline around it."""

    beta: float = Field(0.7, ge=0, description="lambda = clamp(beta * H(p) / log|V|, 0, 1); the authors' demo uses 3.")
    top_p: float = Field(0.95, gt=0, le=1)
    temperature: float = Field(0.3, ge=0, description="Applied after top-p; 0 is greedy.")
    marker: Optional[str] = Field(
        "\\boxed{", description="Once this appears, decode from the plain (student) stream alone; null: never switch."
    )
    system_prompt: str = Field(DEFAULT_HINT_SYSTEM_PROMPT, min_length=1, description="The hint stream's instructions.")
    header: str = Field(
        "### Solution", min_length=1, description="Ends the hint stream's analysis; the rewritten reasoning starts after it."
    )
    analysis_max_tokens: int = Field(
        256, ge=0, description="Tokens the hint stream may spend on its analysis; 0 skips the analysis (and the header)."
    )
    repeat_ngram: int = Field(30, ge=1, description="Stop a rewrite whose last repeat_ngram tokens occurred repeat_times times.")
    repeat_times: int = Field(5, ge=2)
    verifier: str = Field(
        "math_answer", min_length=1, description="The reward source (by name) that decides whether an answer is right."
    )
    pass_threshold: float = Field(1.0, description="A sample is right when its verifier reward is at least this.")
    cll_threshold: Optional[float] = Field(
        None, description="Keep a sample only if its plain-prompt avg CLL is at least this (e.g. -0.1); null keeps all."
    )
    batch_size: int = Field(16, ge=1, description="Requests decoded together (each is two streams).")
    backend: Literal["replica", "engine"] = Field(
        "replica",
        description="replica: both streams decode on the rollout worker's transformers copy of the policy. engine: "
        "each pair is two vLLM requests and a logits processor mixes and draws their one token "
        "(actors/decoding/engine_hinted.py); a pair the scheduler splits is decoded again on the replica "
        "(hinted_engine_fallbacks).",
    )


class RolloutSpec(Section):
    mode: Literal["on_policy", "verified", "hinted", "rewrite", "reference"] = Field(
        "on_policy",
        description="on_policy: train on every sample. verified: train only on the samples the verifier "
        "(rollout.hinted.verifier) passes, i.e. rejection sampling; no hints. hinted: the answer-first pipeline (attempt, verify, Hinted "
        "Decoding for the wrong ones, verify, CLL filter). rewrite: the same with beta = 0 (the hint stream alone). "
        "reference: no generation; train on the dataset's reference solutions as written (data.solution_column), "
        "CLL-scored under the current weights: plain SFT data, the baseline the others are measured against.",
    )
    workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(0.25, ge=0)
    gpus_per_worker: float = Field(0, ge=0)
    threads_per_worker: Optional[int] = Field(
        None, ge=1, description="CPU threads of each engine and CLL replica; null: the node's cores shared by the "
        "actors that run in the same phase on it (actors/placement.py, phase_threads).",
    )
    max_policy_lag: int = Field(
        0, ge=0, description="0: synchronous (generate, then train). N > 0: generation of iteration k+1 overlaps "
        "training on k, from weights at most N updates old; each sample records its lag.",
    )
    prompts_per_iteration: int = Field(8, ge=1)
    samples_per_prompt: int = Field(2, ge=1, description="k responses sampled per prompt.")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(64, ge=1)
    cll_batch_size: int = Field(16, ge=1, description="Sequences per teacher-forced CLL forward pass.")
    cll_from: Literal["engine", "replica"] = Field(
        "engine", description="engine: vLLM records each sampled position's entropy while it samples "
        "(actors/decoding/engine_entropy.py), and one sample per worker and iteration is re-scored on the replica as a check. "
        "replica: every sample is scored teacher-forced on the transformers replica.",
    )
    cll_check: Literal["replica", "engine"] = Field(
        "replica", description="replica: each worker keeps a transformers copy of the policy, re-scores one sample "
        "per iteration on it as the check of the engine's CLL, and scores there what the engine did not sample. "
        "engine: no copy; CLL of given responses (references, hinted rewrites) comes from the engine by forced "
        "decoding (actors/decoding/engine_scoring.py). Needs cll_from: engine, and hinted.backend: engine in the "
        "hinted and rewrite modes; a Hinted Decoding pair that comes apart is then dropped, not redone.",
    )
    engine: EngineSpec = Field(default_factory=EngineSpec)
    hinted: HintedSpec = Field(default_factory=HintedSpec)

    @model_validator(mode="after")
    def _engine_check_needs_the_engine_everywhere(self) -> "RolloutSpec":
        if self.cll_check == "engine":
            if self.cll_from != "engine":
                raise ValueError("rollout.cll_check engine needs rollout.cll_from: engine (there is no replica to "
                                 "score on)")
            if self.mode in ("hinted", "rewrite") and self.hinted.backend != "engine":
                raise ValueError(f"rollout.cll_check engine needs rollout.hinted.backend: engine in mode {self.mode} "
                                 "(the replica backend decodes on the replica)")
        return self

    @model_validator(mode="after")
    def _engine_defaults_follow_the_device(self) -> "RolloutSpec":
        # The one place the device-aware defaults are resolved: the engine, --check and the
        # saved spec all see the same values (rules in the EngineSpec field descriptions).
        engine, gpus = self.engine, self.gpus_per_worker
        if engine.enforce_eager is None:
            engine.enforce_eager = gpus == 0
        if engine.gpu_memory_utilization is None:
            engine.gpu_memory_utilization = max(0.01, round(0.75 * min(gpus, 1), 3)) if gpus > 0 else 0.5
        return self
