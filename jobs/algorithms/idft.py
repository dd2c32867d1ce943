"""idft: SFT with each token's NLL weighted by sg(p^gamma), gamma from its CLL (losses/idft.py,
docs/algorithms.md section 2)."""

from __future__ import annotations

from jobs.algorithms.base import Algorithm
from losses.cll import centered_log_likelihood
from losses.idft import idft_lambda, idft_loss


def loss(spec, stats, samples, progress, token_weights):
    idft = spec.train.idft
    return idft_loss(
        stats.logprobs,
        centered_log_likelihood(stats),
        stats.mask,
        beta=idft.beta,
        gamma_min=idft.gamma_min,
        gamma_max=idft.gamma_max,
        lam=idft_lambda(progress, idft.warmup_ratio, idft.transition_ratio),
        token_weights=token_weights,
    )


ALGORITHM = Algorithm(name="idft", trains_on="samples", loss=loss, token_loss=True)
