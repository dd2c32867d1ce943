"""A rollout worker: one vLLM engine plus the CLL scorer, as a Ray actor.

It samples k responses per prompt from the current policy, scores every sample
with CLL under the same weights, and takes new weights in place (no engine
restart) when the learner has updated.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

from jobs.core.records import Prompt, Sample
from actors.decoding.cll_scorer import CLLScorer, engine_token_stats, record_cll
from actors.decoding.float32_head import engine_head_options
from actors.progress_board import PhaseCounter, engine_bar
from actors.training.trainable_model import TORCH_DTYPES
from actors.weights.vllm_receiver import WORKER_EXTENSION
from actors.weights.broadcast import open_group, receive_payload
from actors.weights.payload import decode_weights, decode_weights_buffer
from jobs.core.spec import JobSpec


def vllm_env_vars(spec: JobSpec) -> dict[str, str]:
    """Environment a rollout actor needs before vLLM is imported."""
    engine = spec.rollout.engine
    env = {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "1" if engine.multiprocessing else "0",
        "VLLM_LOGGING_LEVEL": "ERROR",
        "TORCH_CPP_LOG_LEVEL": "ERROR",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if spec.rollout.gpus_per_worker == 0:
        # vLLM's CPU backend refuses to start without an explicit KV-cache
        # budget, and pinning OpenMP threads to cores would make several
        # workers on one machine fight over the same cores.
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{engine.cpu_kv_cache_gib:g}"
        env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
    return env


def cpu_engine_workarounds(spec: JobSpec) -> dict:
    """Engine arguments the CPU build needs.

    vLLM 0.32 on CPU crashes ("CPU Generator does not use offset") when a request with a
    per-request seed has its prompt prefilled in chunks: it rewinds the seeded generator
    with an offset only CUDA generators have. A batch whose prompts exceed one step's token
    budget (e.g. 40 gsm_symbolic hint prompts) gets chunked. Without chunked prefill the
    scheduler runs whole prompts only, one step's budget at a time.
    """
    if spec.rollout.gpus_per_worker > 0:
        return {}
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(4096, spec.model.max_model_len)}


SEED_STRIDE = 4096  # more than any samples_per_prompt


def sampling_seed(base_seed: int, iteration: int, prompt_index: int) -> int:
    # Per-request seeds make a sample independent of how prompts were batched
    # or spread over workers. vLLM seeds the n samples of a request with
    # consecutive seeds, so neighbouring prompts' seeds are spaced apart:
    # otherwise prompt i's 2nd sample would replay prompt i+1's 1st draw.
    return (base_seed * 1_000_003 + iteration * 10_007 + prompt_index) * SEED_STRIDE % (2**31)


def engine_logits_processors(spec: JobSpec) -> dict:
    processors = []
    if spec.rollout.cll_from == "engine":
        from actors.decoding.engine_entropy import PROCESSOR

        processors.append(PROCESSOR)
    if spec.rollout.mode in ("hinted", "rewrite") and spec.rollout.hinted.backend == "engine":
        # After the entropy recorder: that one must see the model's own logits, before the mixer masks them.
        from actors.decoding.engine_hinted import PROCESSOR

        processors.append(PROCESSOR)
    if spec.rollout.cll_check == "engine":
        # After the entropy recorder too: it forces the token whose entropy the recorder has just taken.
        from actors.decoding.engine_scoring import PROCESSOR

        processors.append(PROCESSOR)
    return {"logits_processors": processors} if processors else {}


def entropy_keys(request_key: str, seed: int, samples_per_prompt: int) -> list[str]:
    """The recorder's keys of one request's samples: vLLM gives sample i the seed seed + i."""
    return [f"{request_key}/{seed + i}" for i in range(samples_per_prompt)]


def analysis_until_header(text: str, stop_reason, header: str) -> str | None:
    """The analysis cut right after the header, or None when the engine stopped for another reason."""
    if stop_reason != header or not text.endswith(header):
        return None
    return text


class RolloutWorker:
    def __init__(self, spec: JobSpec, model_path: str, worker_index: int):
        from vllm import LLM

        self.spec = spec
        self.worker_index = worker_index
        engine = spec.rollout.engine
        self.llm = LLM(
            model=model_path,
            dtype=spec.model.dtype,
            seed=spec.seed + worker_index,
            max_model_len=spec.model.max_model_len,
            enforce_eager=engine.enforce_eager,
            gpu_memory_utilization=engine.gpu_memory_utilization,
            worker_extension_cls=WORKER_EXTENSION,
            trust_remote_code=spec.model.trust_remote_code,
            **engine_logits_processors(spec),
            **cpu_engine_workarounds(spec),
            **engine_head_options(spec.model.lm_head_dtype),
        )
        tokenizer = self.llm.get_tokenizer()
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad_id
        self.scorer_device = "cuda" if spec.rollout.gpus_per_worker > 0 else "cpu"
        # The transformers replica: the check of the engine's CLL, and where CLL of responses the engine did not
        # sample comes from. rollout.cll_check: engine keeps no replica and scores those on the engine.
        self.replica = CLLScorer(
            model_path, TORCH_DTYPES[spec.model.dtype], self.scorer_device, spec.rollout.cll_batch_size, pad_id,
            trust_remote_code=spec.model.trust_remote_code, float32_head=spec.model.lm_head_dtype == "float32",
        ) if spec.rollout.cll_check == "replica" else None
        # What the replica holds (its parameters and buffers), reported with every generation: 0 without one.
        self.replica_mb = 0.0 if self.replica is None else sum(
            t.numel() * t.element_size() for t in [*self.replica.model.parameters(), *self.replica.model.buffers()]
        ) / 2**20
        if self.replica is None:
            from actors.decoding.engine_scoring import EngineScorer  # imports vLLM: only where the engine runs

            self.scorer = EngineScorer(self.llm, name=str(worker_index))
        else:
            self.scorer = self.replica
        # vLLM's first request pays one-time set-up; keep it out of iteration 0's gen_tokens_per_s.
        self.prompt_logprobs([pad_id, pad_id])

    def generate(self, prompts: list[Prompt], iteration: int) -> tuple[list[Sample], dict]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from actors.decoding.engine_entropy import REQUEST_KEY  # imports vLLM: only where the engine runs

        rollout = self.spec.rollout
        from_engine = rollout.cll_from == "engine"
        params = [
            SamplingParams(
                n=rollout.samples_per_prompt,
                temperature=rollout.temperature,
                top_p=rollout.top_p,
                max_tokens=rollout.max_new_tokens,
                logprobs=0,  # the sampled token's log p: half of its CLL, and the check of the replica
                seed=sampling_seed(self.spec.seed, iteration, p.index),
                extra_args={REQUEST_KEY: f"{iteration}-{p.index}"} if from_engine else None,
            )
            for p in prompts
        ]
        started = time.perf_counter()
        counter = PhaseCounter("rollout", len(prompts) * rollout.samples_per_prompt)
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p.token_ids)) for p in prompts], params, use_tqdm=engine_bar(counter)
        )
        generate_seconds = time.perf_counter() - started

        samples = []
        for prompt, output in zip(prompts, outputs):
            for completion in output.outputs:
                token_ids = list(completion.token_ids)
                samples.append(
                    Sample(
                        iteration=iteration,
                        prompt_index=prompt.index,
                        prompt=prompt.text,
                        prompt_token_ids=list(prompt.token_ids),
                        response=completion.text,
                        response_token_ids=token_ids,
                        finish_reason=str(completion.finish_reason),
                        engine_logprobs=[step[token].logprob for token, step in zip(token_ids, completion.logprobs)],
                    )
                )

        started = time.perf_counter()
        padding_before = dict(self.scorer.padding)
        on_replica, engine_check = samples, {}
        if from_engine:
            keys = [key for p, param in zip(prompts, params) for key in entropy_keys(
                param.extra_args[REQUEST_KEY], param.seed, rollout.samples_per_prompt)]
            on_replica, engine_check = self._cll_from_engine(samples, keys)
        gaps = self.scorer.score(on_replica) if on_replica else []
        return samples, {
            "cll_real_tokens": self.scorer.padding["real"] - padding_before["real"],
            "cll_computed_positions": self.scorer.padding["computed"] - padding_before["computed"],
            "generate_seconds": generate_seconds,
            "generated_tokens": sum(len(s.response_token_ids) for s in samples),
            "cll_seconds": time.perf_counter() - started,
            "replica_mb": self.replica_mb,
            "logprob_gaps": gaps + engine_check.pop("logprob_gaps", []),  # the pool summarises them
            **engine_check,
        }

    def _cll_from_engine(self, samples: list[Sample], keys: list[str]) -> tuple[list[Sample], dict]:
        """CLL from the entropies the engine recorded while sampling; returns the samples left for the replica.

        The first sample is also scored on the replica, apart, as the check that engine and replica agree.
        """
        from actors.decoding.engine_entropy import entropies_in_order

        recorded: dict = {}
        for per_worker in self.llm.collective_rpc("hintflow_take_entropies", args=(keys,)):
            recorded.update(per_worker)  # tensor-parallel workers record the same distributions
        scored, entropies, left = [], [], []
        for sample, key in zip(samples, keys):
            values = entropies_in_order(recorded.get(key), len(sample.response_token_ids))
            if values is None:
                left.append(sample)
            else:
                scored.append(sample)
                entropies.append(values)
        check = {"cll_replica_fallbacks": len(left), "engine_replica_cll_max_diff": 0.0}
        if scored:
            record_cll(scored, engine_token_stats(scored, entropies))
        if scored and self.replica:
            probe = dataclasses.replace(scored[0], token_cll=[], cll={}, sequence_logp=None)
            check["logprob_gaps"] = self.replica.score([probe])
            check["engine_replica_cll_max_diff"] = max(
                (abs(a - b) for a, b in zip(probe.token_cll, scored[0].token_cll)), default=0.0
            )
        return left, check

    def hinted(self, jobs: list, iteration: int) -> tuple[list[Sample], dict]:
        """Rewrite each job's reference solution in the model's own words (docs/algorithms.md section 3).

        The hint stream first writes its analysis with the engine, cut right after the header;
        then both streams decode together on the scorer replica (actors/decoding/hinted_decoding.py),
        which holds the same weights as the engine. Results are CLL-scored under the plain prompt.
        """
        from actors.decoding.hinted_decoding import HintedRequest, HintedSampling, hinted_decode

        hinted = self.spec.rollout.hinted
        source = self.spec.rollout.mode  # "hinted", or "rewrite" for the beta = 0 baseline
        tokenizer = self.llm.get_tokenizer()
        started = time.perf_counter()
        analyses = self._analyses(jobs, iteration) if hinted.analysis_max_tokens else [""] * len(jobs)
        analysis_seconds = time.perf_counter() - started

        samples, requests = [], []
        for job, analysis in zip(jobs, analyses):
            sample = Sample(
                iteration=iteration,
                prompt_index=job.prompt_index,
                prompt=job.prompt_text,
                prompt_token_ids=list(job.prompt_token_ids),
                response="",
                response_token_ids=[],
                finish_reason="",
                source=source,
                reference_solution=job.reference_solution,
            )
            samples.append(sample)
            if analysis is None:
                sample.dropped = "no_header"
                continue
            requests.append(
                HintedRequest(
                    hint_ids=list(job.hint_prompt_ids) + tokenizer(analysis, add_special_tokens=False).input_ids,
                    student_ids=list(job.prompt_token_ids),
                    seed=sampling_seed(self.spec.seed, iteration, job.prompt_index) + 1,
                )
            )
        sampling = HintedSampling(
            beta=0.0 if source == "rewrite" else hinted.beta,
            top_p=hinted.top_p,
            temperature=hinted.temperature,
            max_new_tokens=self.spec.rollout.max_new_tokens,
            marker=hinted.marker,
            repeat_ngram=hinted.repeat_ngram,
            repeat_times=hinted.repeat_times,
        )
        started = time.perf_counter()
        counter = PhaseCounter("rollout", len(requests))
        decoding = dict(eos_ids={tokenizer.eos_token_id}, pad_id=self.pad_id, batch_size=hinted.batch_size,
                        on_batch=lambda done, tokens: counter.add(done, tokens))
        fallbacks = []
        if hinted.backend == "engine":
            from actors.decoding.engine_hinted import decode_with_fallback

            replica_model = self.replica.model if self.replica else None  # None: a pair that comes apart is dropped
            results, fallbacks = decode_with_fallback(self.llm, replica_model, tokenizer, requests, sampling,
                                                      name=f"{iteration}-{self.worker_index}", **decoding)
        else:
            results = hinted_decode(self.replica.model, tokenizer, requests, sampling, **decoding)
        counter.finish()
        decode_seconds = time.perf_counter() - started
        decoded = [s for s in samples if s.dropped is None]
        for sample, result in zip(decoded, results):
            if result is None:  # came apart on the engine, and no replica to redo it on
                sample.dropped = "pair_apart"
                continue
            sample.response_token_ids = result.token_ids
            sample.response = tokenizer.decode(result.token_ids, skip_special_tokens=True)
            sample.finish_reason = result.finish_reason
            if result.finish_reason == "repetition":
                sample.dropped = "repetition"
        self.scorer.score([s for s in decoded if s.response_token_ids])
        results = [r for r in results if r is not None]
        tokens = sum(len(r.token_ids) for r in results)
        return samples, {
            "hinted_analysis_seconds": analysis_seconds,
            "hinted_seconds": decode_seconds,
            "hinted_tokens": tokens,
            "hinted_lambda_mean": sum(sum(r.lambdas) for r in results) / max(1, tokens),
            **({"hinted_engine_fallbacks": len(fallbacks)} if hinted.backend == "engine" else {}),
        }

    def _analyses(self, jobs: list, iteration: int) -> list[str | None]:
        """The hint stream's analysis of each job, ending with the header; None where no header came."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        hinted = self.spec.rollout.hinted
        params = [
            SamplingParams(
                temperature=hinted.temperature,
                top_p=hinted.top_p,
                max_tokens=hinted.analysis_max_tokens,
                stop=[hinted.header],
                include_stop_str_in_output=True,
                seed=sampling_seed(self.spec.seed, iteration, job.prompt_index) + 2,
            )
            for job in jobs
        ]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(job.hint_prompt_ids)) for job in jobs], params, use_tqdm=False
        )
        return [analysis_until_header(o.outputs[0].text, o.outputs[0].stop_reason, hinted.header) for o in outputs]

    def score(self, samples: list[Sample]) -> list[Sample]:
        """CLL and summed log-prob of responses the engine did not generate (demonstrations), under these weights."""
        counter = PhaseCounter("rollout", len(samples))
        self.scorer.score(samples, on_batch=lambda done, tokens: counter.add(done, tokens))
        counter.finish()
        return samples

    def load_weights(self, payload: bytes) -> int:
        """Take these weights into the engine and the CLL replica; returns the payload's size in bytes."""
        self.llm.collective_rpc("hintflow_load_weights", args=(payload,))
        # Cached prefixes hold KV computed with the old weights.
        self.llm.reset_prefix_cache()
        if self.replica:
            self.replica.load_weights(decode_weights(payload))
        return len(payload)

    def join_weight_group(self, address: str, port: int, first_rank: int, world_size: int) -> None:
        """The engine worker joins the weight broadcast group as `first_rank`, the replica (if any) as the next rank."""
        if not self.replica:
            self.llm.collective_rpc("hintflow_join_weight_group", args=(address, port, first_rank, world_size))
            return
        with ThreadPoolExecutor(1) as replica_side:  # both joins wait for each other: one must run aside
            replica = replica_side.submit(open_group, address, port, first_rank + 1, world_size, self.scorer_device)
            self.llm.collective_rpc("hintflow_join_weight_group", args=(address, port, first_rank, world_size))
            self.weight_group = replica.result()

    def receive_weights(self) -> int:
        """The weights the learner is broadcasting, into the engine and the replica (if any); returns the bytes."""
        if not self.replica:
            received = self.llm.collective_rpc("hintflow_receive_weights")[0]
            self.llm.reset_prefix_cache()
            return received
        with ThreadPoolExecutor(1) as replica_side:
            received = replica_side.submit(receive_payload, self.weight_group, self.scorer_device)
            self.llm.collective_rpc("hintflow_receive_weights")
            buffer = received.result()
        self.llm.reset_prefix_cache()
        self.replica.load_weights(decode_weights_buffer(buffer))
        return buffer.numel()

    def prompt_logprobs(self, token_ids: list[int]) -> list[float]:
        """vLLM's log p of token_ids[1:], teacher-forced: the probe that checks weight sync."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        output = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(token_ids))],
            SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0),
            use_tqdm=False,
        )[0]
        # The first prompt token has no prediction (None).
        return [step[token].logprob for token, step in zip(token_ids[1:], output.prompt_logprobs[1:])]
