"""Hinted Decoding inside the vLLM engine: the two streams of a pair as two requests, one token for both.

The replica path (actors/decoding/hinted_decoding.py) decodes both streams on a transformers copy of
the policy. Here each pair is two engine requests, the hint row and the student row, whose
`extra_args[PAIR_KEY]` names the pair, the row's role, beta, top-p, temperature, the marker and
the pair's seed. `HintedMixer`, a vLLM V1 logits processor, sees the whole batch's logits before
vLLM's own penalties, temperature and top-p. At every step, for every pair with both rows present
and with as many output tokens as the pair has drawn, it does what one replica step does:

- lambda from the hint row's entropy (0 at the first token, 1 once the marker is in the text);
- the renormalised geometric mixture of the two rows' log-probs;
- top-p at temperature 1, then temperature, then one draw with the pair's own torch generator,
  seeded as the replica seeds it;
- both rows' logits set to -inf except that token, so vLLM's sampler can only take it.

The stopping rules (end of sequence, length, repeated n-grams, the switch at the marker) are the
replica's own (`RowState`). After the switch the student row goes on alone, still drawn here
with lambda = 1 (exactly the replica's distribution), and the hint row is made to end.

A pair whose rows are not both present with equal lengths (one was preempted, or a discarded
sample of a chunked prefill added a token to one) has come apart: both rows are made to end and
the pair is reported broken; the rollout worker decodes it again on the replica and counts it
(`hinted_engine_fallbacks`). The mixer lives in vLLM's worker process; the rollout worker takes
its results through the worker extension (actors/weights/vllm_receiver.py, `hintflow_take_hinted`).
"""

from __future__ import annotations

import math

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor

from actors.decoding.engine_entropy import follow_batch
from actors.decoding.hinted_decoding import (
    HintedRequest,
    HintedResult,
    HintedSampling,
    RowState,
    entropy_lambda,
    hinted_decode,
    mix_logprobs,
    top_p_temperature_probs,
)

PAIR_KEY = "hintflow_hinted_pair"
PROCESSOR = "actors.decoding.engine_hinted:HintedMixer"  # vLLM wants <module>:<class>
HINT, STUDENT = "hint", "student"


def pair_args(pair: str, role: str, seed: int, sampling: HintedSampling, eos_ids: list[int]) -> dict:
    """The `extra_args` of one row of a pair: everything the mixer needs to decode the pair as the replica would."""
    return {PAIR_KEY: {"pair": pair, "role": role, "seed": seed, "beta": sampling.beta, "top_p": sampling.top_p,
                       "temperature": sampling.temperature, "max_new_tokens": sampling.max_new_tokens,
                       "marker": sampling.marker, "repeat_ngram": sampling.repeat_ngram,
                       "repeat_times": sampling.repeat_times, "eos_ids": list(eos_ids)}}


class PairState:
    """One pair's draws: the replica's per-request bookkeeping, plus what the engine path records."""

    def __init__(self, args: dict, tokenizer):
        sampling = HintedSampling(beta=args["beta"], top_p=args["top_p"], temperature=args["temperature"],
                                  max_new_tokens=args["max_new_tokens"], marker=args["marker"],
                                  repeat_ngram=args["repeat_ngram"], repeat_times=args["repeat_times"])
        self.row = RowState(HintedRequest([], [], args["seed"]), torch.device("cpu"), sampling, record=False)
        self.eos_ids = set(args["eos_ids"])
        self.tokenizer = tokenizer
        self.broken: str | None = None

    @property
    def done(self) -> bool:
        return self.row.finish_reason is not None or self.broken is not None

    def result(self) -> dict:
        return {"token_ids": list(self.row.tokens), "lambdas": list(self.row.lambdas),
                "switched_at": self.row.switched_at, "finish_reason": self.row.finish_reason,
                "chosen_logprobs": list(self.row.chosen), "broken": self.broken}


def end_token(state: PairState) -> int:
    """What a row to be ended must take: the end of sequence; without one, the pair's last draw (the row then
    runs on to its max_tokens)."""
    if state.eos_ids:
        return min(state.eos_ids)
    return state.row.tokens[-1] if state.row.tokens else 0


class HintedMixer(LogitsProcessor):
    # The instances in this process (one per engine); the worker extension reads them.
    instances: list["HintedMixer"] = []

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.rows: dict[int, tuple[str, str, dict, list[int]]] = {}  # batch row -> (pair, role, args, output tokens)
        self.pairs: dict[str, PairState] = {}
        self._tokenizer_name = vllm_config.model_config.tokenizer
        self._trust_remote_code = vllm_config.model_config.trust_remote_code
        self._tokenizer = None
        HintedMixer.instances.append(self)

    def is_argmax_invariant(self) -> bool:
        return False  # it chooses the token: it must run for greedy batches too

    @property
    def tokenizer(self):
        if self._tokenizer is None:  # for the marker: the replica decodes the tail of the text the same way
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer_name,
                                                            trust_remote_code=self._trust_remote_code)
        return self._tokenizer

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        def entry(params, output):
            args = (params.extra_args or {}).get(PAIR_KEY)
            return None if args is None else (args["pair"], args["role"], args, output)

        for pair, _, args, output in follow_batch(self.rows, batch_update, entry):
            if pair not in self.pairs:
                self.pairs[pair] = PairState(args, self.tokenizer)
            elif output:  # a row coming back with tokens was preempted and is resumed: its pair came apart
                self.pairs[pair].broken = self.pairs[pair].broken or "a row was preempted"

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        present: dict[str, dict[str, int]] = {}
        for index, (pair, role, _, _) in self.rows.items():
            if index < logits.shape[0]:
                present.setdefault(pair, {})[role] = index
        mixing, alone, ending = [], [], []  # (state, hint row or None, student row); rows to end
        for pair, roles in present.items():
            state = self.pairs[pair]
            drawn = len(state.row.tokens)
            lengths = {role: len(self.rows[index][3]) for role, index in roles.items()}
            if state.done:
                ending += [(state, index) for index in roles.values()]
            elif state.row.switched_at is not None and STUDENT in roles and lengths[STUDENT] == drawn:
                # After the marker the student row decodes alone; the hint row, if still here, ends.
                alone.append((state, None, roles[STUDENT]))
                ending += [(state, roles[HINT])] if HINT in roles else []
            elif set(roles) == {HINT, STUDENT} and lengths[HINT] == lengths[STUDENT] == drawn:
                mixing.append((state, roles[HINT], roles[STUDENT]))
            else:
                state.broken = state.broken or f"rows {sorted(roles)} present with {lengths} tokens after {drawn} draws"
                ending += [(state, index) for index in roles.values()]
        forced: dict[int, int] = {}  # batch row -> the one token it may take
        for group in (mixing, alone):
            if group:
                forced.update(self._draw(logits, group))
        forced.update((index, end_token(state)) for state, index in ending)
        if forced:
            rows, tokens = torch.tensor(list(forced)), torch.tensor(list(forced.values()))
            logits[rows] = -math.inf
            logits[rows, tokens] = 0.0
        return logits

    def _draw(self, logits: torch.Tensor, group: list[tuple[PairState, int | None, int]]) -> dict[int, int]:
        """One replica step for each pair of the group, batched as the replica batches it: lambda, the mixture,
        top-p then temperature; then each pair's own draw. Returns the token each of the group's rows must take."""
        states = [state for state, _, _ in group]
        student = torch.log_softmax(logits[[s for _, _, s in group]].float(), dim=-1)
        if group[0][1] is None:  # switched: the student stream alone (the replica's mixture at lambda = 1)
            lam, mixed = torch.ones(len(group)), torch.log_softmax(student, dim=-1)
        else:
            hint = torch.log_softmax(logits[[h for _, h, _ in group]].float(), dim=-1)
            lam = entropy_lambda(hint, states[0].row.sampling.beta)
            lam = torch.where(torch.tensor([not s.row.tokens for s in states]), torch.zeros_like(lam), lam)
            mixed = mix_logprobs(hint, student, lam)
        sampling = states[0].row.sampling  # one call's pairs share their sampling settings
        probs = None if sampling.temperature == 0 else top_p_temperature_probs(mixed, sampling.top_p,
                                                                               sampling.temperature)
        forced = {}
        for j, (state, hint_row, student_row) in enumerate(group):
            if probs is None:
                token = int(torch.argmax(mixed[j]))
            else:
                token = int(torch.multinomial(probs[j], 1, generator=state.row.generator))
            state.row.lambdas.append(float(lam[j]))
            state.row.chosen.append(float(mixed[j, token]))
            state.row.append(token, state.eos_ids, state.tokenizer)
            forced.update({row: token for row in (hint_row, student_row) if row is not None})
        return forced

    @classmethod
    def take(cls, pairs: list[str]) -> dict[str, dict]:
        """The results of these pairs, removed from the mixers; a pair no mixer saw is missing."""
        taken = {}
        for mixer in cls.instances:
            for pair in pairs:
                if pair in mixer.pairs:
                    taken[pair] = mixer.pairs.pop(pair).result()
        return taken


def pair_calls(requests: list[HintedRequest], max_rows: int, max_prefill_tokens: int) -> list[list[int]]:
    """Requests grouped into engine calls that keep every pair together: at most max_rows rows (two a pair), and
    prompts short enough together that the scheduler prefills all of them in the call's first step."""
    calls, current, tokens = [], [], 0
    for i, request in enumerate(requests):
        size = len(request.hint_ids) + len(request.student_ids)
        if current and (2 * (len(current) + 1) > max_rows or tokens + size > max_prefill_tokens):
            calls.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += size
    return calls + ([current] if current else [])


def decode_on_engine(llm, requests: list[HintedRequest], sampling: HintedSampling, eos_ids: set[int],
                     name: str) -> tuple[list[HintedResult | None], list[str]]:
    """Hinted Decoding of every request on a vLLM engine whose logits processors include HintedMixer.

    Returns the results in request order, None where the pair came apart, and why each of those did
    (the caller decodes them again on the replica). `name` keeps this call's pair ids apart from others'.
    """
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    scheduler, longest = llm.llm_engine.vllm_config.scheduler_config, llm.llm_engine.vllm_config.model_config.max_model_len
    # A GPU build may leave the token budget unset until the engine sizes it: then the model's length bounds a step.
    budget = scheduler.max_num_batched_tokens or longest
    results: list[HintedResult | None] = [None] * len(requests)
    reasons: list[str] = []
    # The replica has no max_model_len; the engine refuses a row that cannot fit its prompt and every token.
    fits = []
    for i, request in enumerate(requests):
        prompt = max(len(request.hint_ids), len(request.student_ids))
        if prompt + sampling.max_new_tokens + 1 > longest:
            reasons.append(f"a prompt of {prompt} tokens and {sampling.max_new_tokens} new ones do not fit the "
                           f"engine's max_model_len {longest}")
        else:
            fits.append(i)
    for call in pair_calls([requests[i] for i in fits], scheduler.max_num_seqs, budget):
        call = [fits[i] for i in call]
        prompts, params, pairs = [], [], {}
        for i in call:
            request, pair = requests[i], f"{name}/{i}"
            pairs[pair] = i
            for role, ids in ((HINT, request.hint_ids), (STUDENT, request.student_ids)):
                prompts.append(TokensPrompt(prompt_token_ids=list(ids)))
                # vLLM's own sampling must not matter: the mixer leaves one finite logit. One token more than
                # the replica may draw, so that a pair stopped for repetition can be made to end.
                params.append(SamplingParams(temperature=1.0, top_p=1.0, max_tokens=sampling.max_new_tokens + 1,
                                             seed=request.seed, ignore_eos=not eos_ids,
                                             extra_args=pair_args(pair, role, request.seed, sampling, sorted(eos_ids))))
        llm.generate(prompts, params, use_tqdm=False)
        taken = llm.collective_rpc("hintflow_take_hinted", args=(list(pairs),))[0]
        for pair, i in pairs.items():
            got = taken.get(pair)
            if got is None or got["broken"] or got["finish_reason"] is None:
                reasons.append("never scheduled" if got is None else got["broken"] or "ended by the engine")
                continue
            results[i] = HintedResult(got["token_ids"], got["lambdas"], got["switched_at"], got["finish_reason"],
                                      chosen_logprobs=got["chosen_logprobs"])
    return results, reasons


def decode_with_fallback(llm, replica, tokenizer, requests: list[HintedRequest], sampling: HintedSampling, *,
                         eos_ids: set[int], pad_id: int, batch_size: int, name: str,
                         on_batch=None) -> tuple[list[HintedResult], list[str]]:
    """Every request decoded on the engine; the pairs that came apart decoded again on the replica (same seeds:
    what the replica path alone would have given them), or left None when there is no replica (rollout.cll_check:
    engine). Returns the results and why each fallback was needed."""
    results, reasons = decode_on_engine(llm, requests, sampling, eos_ids, name)
    if on_batch:
        done = [r for r in results if r is not None]
        on_batch(len(done), sum(len(r.token_ids) for r in done))
    redo = [i for i, result in enumerate(results) if result is None]
    if redo and replica is not None:
        again = hinted_decode(replica, tokenizer, [requests[i] for i in redo], sampling, eos_ids=eos_ids,
                              pad_id=pad_id, batch_size=batch_size, on_batch=on_batch)
        for i, result in zip(redo, again):
            results[i] = result
    return results, reasons
