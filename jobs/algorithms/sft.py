"""sft: token-mean NLL on the samples the loop hands it (losses/sft.py)."""

from __future__ import annotations

from jobs.algorithms.base import Algorithm
from losses.sft import sft_loss


def loss(spec, stats, samples, progress, token_weights):
    return sft_loss(stats.logprobs, stats.mask, token_weights)


ALGORITHM = Algorithm(name="sft", trains_on="samples", loss=loss, token_loss=True)
