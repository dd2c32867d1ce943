"""CLL of given responses from the engine alone, by forced decoding (`rollout.cll_check: engine`).

CLL needs, at every response position, log p of the token and the entropy of the full next-token
distribution (docs/algorithms.md section 1). For what the engine samples, the entropy recorder
(actors/decoding/engine_entropy.py) and vLLM's raw log-probs give both. Responses the engine did not
sample (the dataset's references, Hinted Decoding's rewrites scored under the plain prompt) were scored
on the worker's transformers replica. Without a replica, the engine decodes each response again with
its tokens forced: `ForcedTokens`, a V1 logits processor placed after the entropy recorder, leaves one
finite logit per row, the response's next token, so vLLM's sampler must take it. The recorder has
seen the model's own logits by then, and vLLM computes raw log-probs before any processor, so each
step yields log p of the forced token and the entropy of the unmodified distribution: the same
numbers a teacher-forced pass gives (tests/test_engine_scoring.py checks them against the replica).

It costs one decode step per response token (batched over responses) where the replica needs one
forward pass per batch: the price of not holding a second copy of the model.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor

from actors.decoding.cll_scorer import engine_token_stats, record_cll
from actors.decoding.engine_entropy import REQUEST_KEY, entropies_in_order, follow_batch
from jobs.core.records import Sample

FORCE_KEY = "hintflow_forced_tokens"
PROCESSOR = "actors.decoding.engine_scoring:ForcedTokens"  # vLLM wants <module>:<class>
SEED = 0  # forced tokens draw nothing; one seed keeps the recorder's keys predictable


class ForcedTokens(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.rows: dict[int, tuple[list[int], list[int]]] = {}  # batch row -> (forced tokens, its output so far)

    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token wins

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        def entry(params, output):
            forced = (params.extra_args or {}).get(FORCE_KEY)
            return None if forced is None else (forced, output)

        follow_batch(self.rows, batch_update, entry)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        for row, (forced, output) in self.rows.items():
            if row < logits.shape[0]:
                token = forced[min(len(output), len(forced) - 1)]
                logits[row].fill_(float("-inf"))
                logits[row, token] = 0.0
        return logits


class EngineScorer:
    """What CLLScorer gives (token_cll, cll, sequence_logp of each sample), from the engine: no weights of its own,
    so nothing to load on a sync, and no engine-vs-replica gaps to report."""

    def __init__(self, llm, name: str):
        self.llm = llm
        self.name = name  # keeps this worker's recorder keys apart from its sampling's
        self.calls = 0
        self.padding = {"real": 0, "computed": 0}  # no padding: each response decodes at its own length

    def score(self, samples: list[Sample], on_batch: Callable[[int, int], None] | None = None) -> list[float]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        todo = [s for s in samples if s.response_token_ids]
        self.calls += 1
        keys = [f"score-{self.name}-{self.calls}-{i}" for i in range(len(todo))]
        params = [
            SamplingParams(
                # ignore_eos, not min_tokens: vLLM's min-tokens processor masks EOS before the entropy recorder
                # sees the logits (builtin processors run first), which would change the entropy.
                max_tokens=len(s.response_token_ids), ignore_eos=True,
                temperature=1.0, seed=SEED, logprobs=0, detokenize=False,
                extra_args={REQUEST_KEY: key, FORCE_KEY: list(s.response_token_ids)},
            )
            for s, key in zip(todo, keys)
        ]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(s.prompt_token_ids)) for s in todo], params,
                                    use_tqdm=False)
        recorded: dict = {}
        for per_worker in self.llm.collective_rpc("hintflow_take_entropies", args=([f"{k}/{SEED}" for k in keys],)):
            recorded.update(per_worker)
        logprobs, entropies = [], []
        for sample, key, output in zip(todo, keys, outputs):
            completion = output.outputs[0]
            if list(completion.token_ids) != list(sample.response_token_ids):
                raise RuntimeError(f"forced decoding of prompt {sample.prompt_index}'s response stopped after "
                                   f"{len(completion.token_ids)} of its {len(sample.response_token_ids)} tokens: "
                                   "prompt and response must fit model.max_model_len")
            values = entropies_in_order(recorded.get(f"{key}/{SEED}"), len(sample.response_token_ids))
            if values is None:
                raise RuntimeError(f"the engine did not record an entropy for every token of prompt "
                                   f"{sample.prompt_index}'s response")
            logprobs.append([step[t].logprob for t, step in zip(completion.token_ids, completion.logprobs)])
            entropies.append(values)
        # record_cll reads log p from engine_logprobs; a sample the engine sampled keeps its own.
        forced = [dataclasses.replace(s, engine_logprobs=lp) for s, lp in zip(todo, logprobs)]
        if forced:
            record_cll(forced, engine_token_stats(forced, entropies))
        for sample, scored in zip(todo, forced):
            sample.token_cll, sample.cll, sample.sequence_logp = scored.token_cll, scored.cll, scored.sequence_logp
        tokens = sum(len(s.response_token_ids) for s in todo)
        self.padding["real"] += tokens
        self.padding["computed"] += tokens
        if on_batch:
            on_batch(len(todo), tokens)
        return []
