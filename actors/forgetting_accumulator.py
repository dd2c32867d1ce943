"""Forgetting over any number of batches, and from two models: the measures of actors/forgetting.py
summed and counted batch by batch (Chan's merge for the hidden-state moments), so that many batches give
the numbers of one big batch and accumulators from several workers can be merged.
"""

from __future__ import annotations

import torch

from actors.forgetting import HiddenMoments, check_pair, counted_positions, token_kl, token_rank_shift
from losses.token_stats import response_token_stats


class ForgettingAccumulator:
    """Sums and counts of every forgetting quantity over any number of batches.

    ``add`` takes the two models' outputs, ``add_models`` runs the models itself,
    ``merge`` combines accumulators (e.g. from several workers), ``result`` gives
    the numbers to log. Batch by batch is exact: the same as one big batch up to
    float64 rounding (ranks are integer sums). Holds O(H^2) float64 on the CPU,
    never the hidden states themselves; picklable, so it can cross Ray.
    """

    def __init__(self) -> None:
        self.positions = 0
        self.kl_sum = 0.0
        self.rank_sum = 0
        self.rank_gt1 = 0
        self.hidden: HiddenMoments | None = None
        # The NLL of the text's own tokens; only add_models sees the token ids.
        self.nll_positions = 0
        self.nll_base_sum = 0.0
        self.nll_current_sum = 0.0

    def add(
        self,
        base_logits: torch.Tensor,
        current_logits: torch.Tensor,
        base_hidden: torch.Tensor,
        current_hidden: torch.Tensor,
        mask: torch.Tensor,
    ) -> None:
        """Add one batch.

        Args:
            base_logits, current_logits: [B, T, V].
            base_hidden, current_hidden: [B, T, H] final-layer hidden states.
            mask: [B, T] bool/0-1, True at the positions that count.
        """
        kl = token_kl(base_logits, current_logits, mask)
        rank = token_rank_shift(base_logits, current_logits, mask)
        hidden_mask = check_pair(base_hidden, current_hidden, mask, "hidden states")
        moments = HiddenMoments.from_states(
            base_hidden[hidden_mask], current_hidden[hidden_mask.to(current_hidden.device)].to(base_hidden.device)
        )
        self.positions += int(kl["positions"])
        self.kl_sum += float(kl["kl_sum"])
        self.rank_sum += int(rank["rank_sum"])
        self.rank_gt1 += int(rank["rank_gt1"])
        self.hidden = moments if self.hidden is None else self.hidden.merge(moments)

    @torch.no_grad()
    def add_models(self, base_model, current_model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """Run both HF causal LMs on one right-padded batch and add it.

        Args:
            base_model, current_model: HF causal LMs with the same vocabulary and
                hidden size, on any devices (inputs follow each model). Run in eval
                mode without grad; each model's train/eval mode is restored after.
            input_ids: [B, L] long.
            attention_mask: [B, L] 0/1, right padded; positions counted as
                `counted_positions` says.
        """
        mask = counted_positions(attention_mask)
        base = _run(base_model, input_ids, attention_mask)
        current = _run(current_model, input_ids, attention_mask)
        self.add(base.logits, current.logits, base.hidden_states[-1], current.hidden_states[-1], mask)
        # Every real token but the first is a target: the positions `counted_positions` keeps.
        for logits, total in ((base.logits, "nll_base_sum"), (current.logits, "nll_current_sum")):
            stats = response_token_stats(logits, input_ids.to(logits.device), attention_mask.to(logits.device))
            setattr(self, total, getattr(self, total) - float(stats.logprobs[stats.mask].double().sum()))
        self.nll_positions += int(mask.sum())

    def merge(self, other: "ForgettingAccumulator") -> "ForgettingAccumulator":
        """Add another accumulator's batches into this one; returns self."""
        self.positions += other.positions
        self.kl_sum += other.kl_sum
        self.rank_sum += other.rank_sum
        self.rank_gt1 += other.rank_gt1
        self.nll_positions += other.nll_positions
        self.nll_base_sum += other.nll_base_sum
        self.nll_current_sum += other.nll_current_sum
        if other.hidden is not None:
            self.hidden = other.hidden if self.hidden is None else self.hidden.merge(other.hidden)
        return self

    def result(self, details: bool = False) -> dict:
        """The numbers to log, over every batch added.

        Returns:
            "forget_kl": mean per-token KL(base || current), nats,
            "forget_rank_mean": mean base rank of the current model's top token (1 = no shift),
            "forget_rank_gt1": fraction of positions where that rank is > 1,
            "forget_centroid_shift": distance of the hidden-state centroids in the
                base model's top-2 PC plane,
            "positions": number of positions counted (int),
            "forget_ood_nll", "forget_ood_nll_base": mean NLL of the text's next tokens under the
                current and the base model, nats per token (only when add_models added batches).
            With details=True also "forget_current_centroid" ([2]; the base centroid
            is (0, 0)) and "forget_pc_explained_variance" ([2]), as lists.

        Raises:
            ValueError: fewer than 3 positions were added.
        """
        if self.hidden is None or self.positions < 3:
            raise ValueError(f"forgetting needs at least 3 counted positions, got {self.positions}")
        centroid = self.hidden.centroid_shift()
        out = {
            "forget_kl": self.kl_sum / self.positions,
            "forget_rank_mean": self.rank_sum / self.positions,
            "forget_rank_gt1": self.rank_gt1 / self.positions,
            "forget_centroid_shift": float(centroid["centroid_shift"]),
            "positions": self.positions,
        }
        if self.nll_positions:
            out["forget_ood_nll"] = self.nll_current_sum / self.nll_positions
            out["forget_ood_nll_base"] = self.nll_base_sum / self.nll_positions
        if details:
            out["forget_current_centroid"] = centroid["current_centroid"].tolist()
            out["forget_pc_explained_variance"] = centroid["explained_variance_ratio"].tolist()
        return out


def _run(model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return model(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            output_hidden_states=True,
            use_cache=False,
        )
    finally:
        model.train(was_training)


def forgetting_stats(base_model, current_model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    """Forgetting of `current_model` relative to `base_model` on one right-padded batch.

    For several batches use ``ForgettingAccumulator`` (``add_models`` per batch, then
    ``result``): the same numbers as one big batch.

    Args:
        base_model: the frozen base HF causal LM.
        current_model: the current policy, same tokenizer and architecture.
        input_ids: [B, L] long, other-domain text (jobs/core/ood_text.py).
        attention_mask: [B, L] 0/1, right padded. Counted: every real position but
            each sequence's last (`counted_positions`).

    Returns:
        {"forget_kl", "forget_rank_mean", "forget_rank_gt1", "forget_centroid_shift":
        floats, "positions": int}; see ``ForgettingAccumulator.result``.
    """
    accumulator = ForgettingAccumulator()
    accumulator.add_models(base_model, current_model, input_ids, attention_mask)
    return accumulator.result()
