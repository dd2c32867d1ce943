"""dft: Dynamic Fine-Tuning, each token's NLL weighted by its own detached probability (losses/dft.py,
docs/algorithms.md section 2): the baseline the IDFT authors compare against."""

from __future__ import annotations

from jobs.algorithms.base import Algorithm
from losses.dft import dft_loss


def loss(spec, stats, samples, progress, token_weights):
    return dft_loss(stats.logprobs, stats.mask, token_weights)


ALGORITHM = Algorithm(name="dft", trains_on="samples", loss=loss, token_loss=True)
