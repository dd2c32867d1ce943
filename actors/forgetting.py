"""Forgetting: how far a fine-tuned policy drifted from its base on other-domain text.

From docs/algorithms.md section 10, after the seed paper "Does Math Reasoning Improve
General LLM Capabilities? Understanding Transferability of LLM Reasoning" ("does
math reasoning transfer?"). On held-out text from OTHER domains than the training
data, compare the frozen base model pi_0 with the current policy pi_ft:

- KL(pi_0 || pi_ft) per token: the exact full-vocabulary KL of the two next-token
  distributions at each counted position, averaged over positions (higher = more
  drift).
- Token-rank shift: at each counted position, the rank under pi_0 of the token
  pi_ft ranks first. rank = 1 + the number of tokens whose BASE logit is strictly
  greater than the base logit of that token, so 1 means pi_0 ranks it first too
  and tokens tied with it never push it down. "The token pi_ft ranks first" is
  the lowest token id among pi_ft's maximal logits (torch.argmax's rule).
  Reported as the mean rank and the fraction of positions with rank > 1.
- Out-of-domain NLL: the mean negative log-likelihood of the passages' own next
  tokens under pi_ft (and, beside it, under pi_0): the plainest "did it get worse
  at other text" number. Gathered by losses/token_stats.py, like every log-prob.
- Hidden-state centroid shift: the final-layer hidden states of both models at
  the counted positions are projected onto pi_0's first two principal components
  (fitted on pi_0's states, centred on pi_0's mean); the Euclidean distance
  between the two projected centroids.

Everything here is pure torch on tensors; actors/forgetting_accumulator.py sums these over batches
and runs the two HF causal LMs (`ForgettingAccumulator.add_models`, `forgetting_stats`). Every quantity combines
exactly over batches (sums and counts; Chan's merge for the hidden-state moments),
so an evaluation of many batches gives the same numbers as one big batch, and
accumulators from different workers can be merged.

Which positions count (`counted_positions`): position t of a right-padded batch
counts when tokens t and t+1 are both real, i.e. every real position except each
sequence's last. These are exactly the next-token distributions that
losses/token_stats.py scores (``logits[:, t]`` predicts ``input_ids[:, t + 1]``); a
sequence's last position predicts a token that is not in the text. The hidden
state at position t is the one the LM head turns into that distribution
(``hidden_states[-1]`` of an HF model: after the final norm for Llama-style models).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


# float64 elements per chunk of the KL computation: bounds its memory at about
# 128 MiB per temporary, whatever the vocabulary.
_KL_CHUNK_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------- positions


def counted_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions whose next-token distribution and hidden state are compared.

    Args:
        attention_mask: [B, L] 0/1 (or bool), RIGHT padded: each row is ones then
            zeros.

    Returns:
        [B, L] bool: True at t when tokens t and t+1 are both real (every real
        position but the last of each sequence). A sequence of length n has n - 1.

    Raises:
        ValueError: a row is not right padded (a 1 after a 0).
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be [B, L], got shape {tuple(attention_mask.shape)}")
    real = attention_mask.bool()
    if bool((real[:, 1:] & ~real[:, :-1]).any()):
        raise ValueError("attention_mask must be right padded (ones, then zeros) in every row")
    counted = torch.zeros_like(real)
    counted[:, :-1] = real[:, :-1] & real[:, 1:]
    return counted


def check_pair(base: torch.Tensor, current: torch.Tensor, mask: torch.Tensor, what: str) -> torch.Tensor:
    if base.dim() != 3 or base.shape != current.shape:
        raise ValueError(
            f"{what}: base and current must both be [B, T, D] of one shape, got "
            f"{tuple(base.shape)} and {tuple(current.shape)}"
        )
    if tuple(mask.shape) != tuple(base.shape[:2]):
        raise ValueError(f"{what}: mask must be [B, T] = {tuple(base.shape[:2])}, got {tuple(mask.shape)}")
    return mask.bool().to(base.device)


def _counted_rows(base: torch.Tensor, current: torch.Tensor, mask: torch.Tensor):
    """(flat indices, base rows, current rows) of the counted positions, in chunks of at most
    _KL_CHUNK_ELEMENTS / D rows; the current rows are moved to the base's device."""
    B, T, D = base.shape
    base_flat, current_flat = base.reshape(B * T, D), current.reshape(B * T, D)
    index = mask.reshape(-1).nonzero().squeeze(1)
    rows = max(1, _KL_CHUNK_ELEMENTS // max(1, D))
    for start in range(0, index.numel(), rows):
        chunk = index[start : start + rows]
        current_rows = current_flat.index_select(0, chunk.to(current.device)).to(base.device)
        yield chunk, base_flat.index_select(0, chunk), current_rows


# --------------------------------------------------------------------------- KL


def token_kl(
    base_logits: torch.Tensor, current_logits: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-token KL(base || current) of the full next-token distributions.

    KL_t = sum_v p0(v) (log p0(v) - log p1(v)), p0 = softmax(base_logits[t]),
    p1 = softmax(current_logits[t]), computed in float64 over the whole vocabulary
    (log_softmax in float64, so identical logits give exactly 0 and a small drift is
    not buried in fp32 rounding). Terms with p0(v) = 0 contribute 0 (so -inf base
    logits are fine); p0(v) > 0 with a -inf current logit gives +inf, as it should.
    Not clamped at 0: rounding can leave a value of order -1e-16.

    Args:
        base_logits: [B, T, V] any float dtype, the frozen base model's logits.
        current_logits: [B, T, V] the current policy's logits at the same positions
            (moved to base_logits' device chunk by chunk).
        mask: [B, T] bool/0-1, True where the position counts (see `counted_positions`).

    Returns:
        "kl_mean": 0-dim float64, mean KL over counted positions (nan when none),
        "kl_sum": 0-dim float64, their sum,
        "positions": 0-dim int64, how many counted,
        "per_token": [B, T] float64, KL_t, 0 where mask is False.
    """
    mask = check_pair(base_logits, current_logits, mask, "token_kl")
    B, T, _ = base_logits.shape
    per_token = torch.zeros(B * T, dtype=torch.float64, device=base_logits.device)
    for index, base_rows, current_rows in _counted_rows(base_logits, current_logits, mask):
        log_p0 = torch.log_softmax(base_rows.double(), dim=-1)
        log_p1 = torch.log_softmax(current_rows.double(), dim=-1)
        p0 = log_p0.exp()
        terms = torch.where(p0 > 0, p0 * (log_p0 - log_p1), torch.zeros_like(p0))
        per_token[index] = terms.sum(-1)
    per_token = per_token.reshape(B, T)
    positions = mask.sum()
    kl_sum = per_token.sum()
    return {
        "kl_mean": kl_sum / positions.double(),
        "kl_sum": kl_sum,
        "positions": positions,
        "per_token": per_token,
    }


# --------------------------------------------------------------------------- token rank


def token_rank_shift(
    base_logits: torch.Tensor, current_logits: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Rank under the base model of the token the current model ranks first.

    top_t  = argmax_v current_logits[t, v]  (lowest token id among ties)
    rank_t = 1 + #{v : base_logits[t, v] > base_logits[t, top_t]}  (strictly greater)

    Compared on the raw base logits, which order tokens exactly as the base
    probabilities do, without the ties that rounding in a softmax could add.
    Logits are compared in the dtype the models produced: bf16 logits have more
    ties, and ties count in the token's favour.

    Args:
        base_logits: [B, T, V] any float dtype.
        current_logits: [B, T, V] same shape (any device).
        mask: [B, T] bool/0-1, True where the position counts.

    Returns:
        "rank_mean": 0-dim float64, mean rank over counted positions (nan when none),
        "rank_gt1_frac": 0-dim float64, fraction of counted positions with rank > 1,
        "rank_sum": 0-dim int64, "rank_gt1": 0-dim int64 (count with rank > 1),
        "positions": 0-dim int64,
        "per_token": [B, T] int64 rank, 0 where mask is False.
    """
    mask = check_pair(base_logits, current_logits, mask, "token_rank_shift")
    B, T, _ = base_logits.shape
    per_token = torch.zeros(B * T, dtype=torch.int64, device=base_logits.device)
    for index, base_rows, current_rows in _counted_rows(base_logits, current_logits, mask):
        top = current_rows.argmax(-1)
        top_value = base_rows.gather(-1, top.unsqueeze(-1))
        per_token[index] = 1 + (base_rows > top_value).sum(-1)
    per_token = per_token.reshape(B, T)
    positions = mask.sum()
    rank_sum = per_token.sum()
    rank_gt1 = (per_token > 1).sum()
    return {
        "rank_mean": rank_sum.double() / positions.double(),
        "rank_gt1_frac": rank_gt1.double() / positions.double(),
        "rank_sum": rank_sum,
        "rank_gt1": rank_gt1,
        "positions": positions,
        "per_token": per_token,
    }


# --------------------------------------------------------------------------- hidden-state centroid shift


@dataclass
class HiddenMoments:
    """What the centroid shift needs from a set of paired hidden states, mergeable exactly.

    Attributes (float64, CPU):
        count: number of positions N.
        base_mean: [H] mean of the base model's hidden states.
        base_scatter: [H, H] sum over positions of (x - base_mean)(x - base_mean)^T
            (N times the base covariance).
        current_mean: [H] mean of the current model's hidden states.
    """

    count: int
    base_mean: torch.Tensor
    base_scatter: torch.Tensor
    current_mean: torch.Tensor

    @staticmethod
    def from_states(base_hidden: torch.Tensor, current_hidden: torch.Tensor) -> "HiddenMoments":
        """Moments of [N, H] base and current hidden states (row i of each = the same position)."""
        if base_hidden.dim() != 2 or base_hidden.shape != current_hidden.shape:
            raise ValueError(
                f"hidden states must both be [N, H] of one shape, got {tuple(base_hidden.shape)} "
                f"and {tuple(current_hidden.shape)}"
            )
        count, size = base_hidden.shape
        if count == 0:
            zeros = torch.zeros(size, dtype=torch.float64)
            return HiddenMoments(0, zeros, torch.zeros(size, size, dtype=torch.float64), zeros.clone())
        x = base_hidden.double()
        base_mean = x.mean(0)
        centred = x - base_mean
        return HiddenMoments(
            count=int(count),
            base_mean=base_mean.cpu(),
            base_scatter=(centred.T @ centred).cpu(),
            current_mean=current_hidden.double().mean(0).cpu(),
        )

    def merge(self, other: "HiddenMoments") -> "HiddenMoments":
        """The moments of both sets of positions together (Chan et al.'s pairwise update)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        if other.base_mean.shape != self.base_mean.shape:
            raise ValueError(f"hidden sizes differ: {self.base_mean.numel()} and {other.base_mean.numel()}")
        n_a, n_b = self.count, other.count
        n = n_a + n_b
        delta = other.base_mean - self.base_mean
        return HiddenMoments(
            count=n,
            base_mean=self.base_mean + delta * (n_b / n),
            base_scatter=self.base_scatter + other.base_scatter + torch.outer(delta, delta) * (n_a * n_b / n),
            current_mean=(self.current_mean * n_a + other.current_mean * n_b) / n,
        )

    def centroid_shift(self) -> dict[str, torch.Tensor]:
        """See `centroid_shift`."""
        if self.count < 3:
            raise ValueError(
                f"the centroid shift needs at least 3 positions to fit 2 principal components, got {self.count}"
            )
        # eigh of the symmetric scatter matrix: the right singular vectors of the
        # centred base states, deterministic (LAPACK, float64, CPU), and H x H in
        # memory whatever N is. Eigenvalues come in ascending order.
        eigenvalues, eigenvectors = torch.linalg.eigh(self.base_scatter)
        components = eigenvectors[:, [-1, -2]]
        # Fix each component's sign (largest-magnitude entry positive) so the
        # reported centroids are reproducible; the distance does not depend on it.
        pivot = components.abs().argmax(0)
        signs = torch.sign(components[pivot, torch.arange(2)])
        components = components * torch.where(signs == 0, torch.ones_like(signs), signs)
        top = eigenvalues[[-1, -2]].clamp(min=0.0)
        total = eigenvalues.clamp(min=0.0).sum()
        current_centroid = (self.current_mean - self.base_mean) @ components
        return {
            "centroid_shift": current_centroid.norm(),
            "base_centroid": torch.zeros(2, dtype=torch.float64),
            "current_centroid": current_centroid,
            "components": components,
            "explained_variance_ratio": top / total if total > 0 else torch.zeros(2, dtype=torch.float64),
            "positions": torch.tensor(self.count),
        }


def centroid_shift(base_hidden: torch.Tensor, current_hidden: torch.Tensor) -> dict[str, torch.Tensor]:
    """Distance between the two models' hidden-state centroids in the base model's top-2 PC plane.

    PCA is fitted on the BASE states only: components = the top-2 eigenvectors of
    the base covariance (right singular vectors of the base states centred on the
    base mean). Both sets are centred on the BASE mean and projected, so the base
    centroid is (0, 0) by construction and the current centroid is
    P^T (mean(current) - mean(base)); the shift is its Euclidean norm.

    A principal component is defined only up to sign; flipping either one flips a
    coordinate of the current centroid and leaves the distance unchanged (so does
    any rotation within the plane). The reported components have their
    largest-magnitude entry positive. The plane itself is ill-defined only when the
    2nd and 3rd base eigenvalues are equal, which real hidden states do not produce.

    Args:
        base_hidden: [N, H] the base model's final-layer hidden states at the counted
            positions, any float dtype (computed in float64).
        current_hidden: [N, H] the current model's states at the same positions.

    Returns:
        "centroid_shift": 0-dim float64 distance,
        "base_centroid": [2] float64 (zeros), "current_centroid": [2] float64,
        "components": [H, 2] float64 (columns: PC1, PC2),
        "explained_variance_ratio": [2] float64, share of the base variance on PC1, PC2,
        "positions": 0-dim int64 N.

    Raises:
        ValueError: fewer than 3 positions (two components are not determined).
    """
    return HiddenMoments.from_states(base_hidden, current_hidden).centroid_shift()
