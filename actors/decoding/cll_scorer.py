"""Exact CLL of generated samples under the rollout worker's current weights.

vLLM hands back top-k log-probs only, and CLL needs the entropy of the FULL
next-token distribution (docs/algorithms.md section 1). So each rollout worker keeps
a transformers replica of the policy. The same weight sync that updates the
engine updates the replica, and the replica scores every sample teacher-forced.
The replica is also where Hinted Decoding (roadmap 2) gets the full
distributions of its two streams.

Since rollout.cll_from: engine (the default) the engine records the entropies while it samples
(actors/decoding/engine_entropy.py) and `record_cll` turns them into CLL; this replica then scores
only one sample per worker and iteration, as the check, plus anything the engine could not
record. Cost: one extra copy of the policy weights per rollout worker; rollout.cll_check: engine
keeps none and scores on the engine instead (actors/decoding/engine_scoring.py). Each sample's
`engine_logprobs` (vLLM's own log p of the sampled tokens) is checked against
the replica's, token by token: the mean, p99 and largest absolute difference over an
iteration's checked tokens are `engine_scorer_logprob_{mean,p99,max}_diff`
(`logprob_gap_metrics`), so drift between the two shows up in the metrics. On CPU in
float32 they agree to ~1e-6; in bf16 on a GPU the largest gap was 0.6-1.5 nats, and the
mean and p99 say whether that is one token or many.
"""

from __future__ import annotations

from typing import Callable

import torch

from actors.training.batching import collate_samples, response_stats

from jobs.core.records import Sample
from actors.decoding.float32_head import use_float32_head
from losses.cll import centered_log_likelihood, sequence_cll
from losses.token_stats import TokenStats, sequence_logps


def logprob_gap_metrics(gaps: list[float]) -> dict[str, float]:
    """Mean, p99 and max of per-token |engine − replica| log-prob gaps (all 0 when nothing was checked)."""
    if not gaps:
        return {f"engine_scorer_logprob_{name}_diff": 0.0 for name in ("mean", "p99", "max")}
    values = torch.tensor(gaps, dtype=torch.float64)
    return {
        "engine_scorer_logprob_mean_diff": float(values.mean()),
        "engine_scorer_logprob_p99_diff": float(torch.quantile(values, 0.99)),
        "engine_scorer_logprob_max_diff": float(values.max()),
    }


def record_cll(samples: list[Sample], stats: TokenStats) -> None:
    """Fill `token_cll`, `cll` and `sequence_logp` of each sample from its row of `stats`."""
    phi = centered_log_likelihood(stats)
    per_sequence = sequence_cll(phi, stats.mask)
    logps, _ = sequence_logps(stats)
    for row, sample in enumerate(samples):
        sample.sequence_logp = float(logps[row])
        sample.token_cll = phi[row][stats.mask[row]].tolist()
        sample.cll = {key: float(values[row]) for key, values in per_sequence.items() if key != "num_tokens"}


def engine_token_stats(samples: list[Sample], entropies: list[list[float]]) -> TokenStats:
    """TokenStats of generated samples from what the engine recorded: its log p and entropy per token."""
    length = max((len(s.response_token_ids) for s in samples), default=0)
    logprobs = torch.zeros(len(samples), length)
    entropy = torch.zeros(len(samples), length)
    mask = torch.zeros(len(samples), length, dtype=torch.bool)
    for row, (sample, values) in enumerate(zip(samples, entropies)):
        n = len(sample.response_token_ids)
        logprobs[row, :n] = torch.tensor(sample.engine_logprobs, dtype=torch.float32)
        entropy[row, :n] = torch.tensor(values, dtype=torch.float32)
        mask[row, :n] = True
    return TokenStats(logprobs=logprobs, entropy=entropy, mask=mask)


class CLLScorer:
    def __init__(
        self, model_path: str, dtype: torch.dtype, device: str, batch_size: int, pad_id: int,
        trust_remote_code: bool = False, float32_head: bool = False,
    ):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=dtype, trust_remote_code=trust_remote_code
        ).to(device).eval()
        if float32_head:
            use_float32_head(self.model)
        self.device = device
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.padding = {"real": 0, "computed": 0}  # token positions over this replica's life

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        # Same architecture, every name restored by decode_weights: a strict
        # load is right, and any mismatch means the sync is broken.
        self.model.load_state_dict(state_dict, strict=True)

    @torch.no_grad()
    def score(self, samples: list[Sample], on_batch: Callable[[int, int], None] | None = None) -> list[float]:
        """Fill `token_cll`, `cll` and `sequence_logp` of each sample; return the per-token |engine − replica|
        log-prob gaps of the samples that carry the engine's log-probs. `on_batch(samples, tokens)` hears of
        each scored batch (the job's progress lines)."""
        gaps: list[float] = []
        # Length-sorted batches waste less compute on padding.
        order = sorted(range(len(samples)), key=lambda i: samples[i].num_tokens)
        for start in range(0, len(order), self.batch_size):
            batch_samples = [samples[i] for i in order[start : start + self.batch_size]]
            batch = collate_samples(batch_samples, self.pad_id).to(self.device)
            self.padding["real"] += batch.real_tokens
            self.padding["computed"] += batch.padded_tokens
            stats = response_stats(self.model, batch)
            record_cll(batch_samples, stats)
            for row, sample in enumerate(batch_samples):
                valid = stats.mask[row]
                if sample.engine_logprobs:
                    replica = stats.logprobs[row][valid]
                    engine = torch.tensor(sample.engine_logprobs, dtype=replica.dtype, device=replica.device)
                    gaps.extend((engine - replica).abs().tolist())
            if on_batch:
                on_batch(len(batch_samples), batch.real_tokens)
        return gaps
