"""f-divergence SFT: supervised fine-tuning that keeps a pull towards the reference model.

Wang, Cheng, Peng, et al., "Implicit Reward as the Bridge: A Unified View of SFT and DPO
Connections" (arXiv:2507.00018). Read as implicit-reward learning, SFT matches the demonstrations
π_E through the variational form of an f-divergence, with the policy's implicit reward
T(y) = β (log π(y|x) − log π_ref(y|x)) as the critic. SFT is the total-variation member, whose
conjugate f*(t) = t makes the policy's term E_π[f*(T)] equal β KL(π‖π_ref) and cancel the KL
term of the underlying KL-regularised problem: nothing holds the policy near the reference.
Other conjugates leave a non-negative remainder E_π[f*(T) − T] that does.

The formulas (f*, T) are those of docs/algorithms.md section 8. The paper's own text could not be
read here; docs/design.md ("f-divergence SFT") gives the derivation, what was confirmed and the
choices made where the source is silent. In summed sequence log-probs, per demonstration y_E and
per sample y ~ π of the same prompt:

    loss = NLL(y_E) + (1/β) · E_{y~π}[ g(T(y)) ],     g(t) = f*(t) − t ≥ 0,  g(0) = 0
    tv:        f*(t) = t              g(t) = 0                 (plain SFT, to the bit)
    pearson:   f*(t) = t + t²/4       g(t) = t²/4
    hellinger: f*(t) = t / (1 − t)    g(t) = t² / (1 − t)      (t < 1)

Each term is divided by its own token count, as hintflow's SFT divides its NLL sum, so `tv` is the
existing token-mean SFT loss. The expectation is under the policy, so its gradient has a score
term: ∇E_π[g(T)] = E_π[(g(T) + β g′(T)) ∇ log π(y)]. The loss carries exactly that gradient
(g(T)/β centred on a leave-one-out mean of the other samples, the usual unbiased baseline) and
reports the penalty's value.
"""

from __future__ import annotations

from typing import Callable

import torch

# Hellinger's conjugate is infinite at t ≥ 1. Samples whose implicit reward gets there are weighted
# as if they sat at this value: the strongest finite push back towards the reference.
HELLINGER_T_MAX = 0.9

# g(t) = f*(t) − t and its derivative g′(t), per divergence.
PENALTY: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "tv": (torch.zeros_like, torch.zeros_like),
    "pearson": (lambda t: t**2 / 4, lambda t: t / 2),
    "hellinger": (lambda t: t**2 / (1 - t), lambda t: t * (2 - t) / (1 - t) ** 2),
}


def leave_one_out_mean(values: torch.Tensor) -> torch.Tensor:
    """[B] mean of the other B − 1 values (0 for a single value: no baseline rather than itself)."""
    count = values.numel()
    if count < 2:
        return torch.zeros_like(values)
    return (values.sum() - values) / (count - 1)


def fsft_loss(
    policy_demo: torch.Tensor,
    policy_own: torch.Tensor,
    reference_own: torch.Tensor,
    demo_tokens: torch.Tensor,
    own_tokens: torch.Tensor,
    *,
    divergence: str,
    beta: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """f-divergence SFT on a batch of (demonstration, own sample) pairs.

    Args:
        policy_demo: [B] summed log π of the demonstrations, with grad.
        policy_own: [B] summed log π of the policy's own samples (same prompts), with grad.
        reference_own: [B] summed log π_ref of the own samples.
        demo_tokens, own_tokens: [B] response token counts.
        divergence: "tv", "pearson" or "hellinger".
        beta: scale of the implicit reward T = β log(π/π_ref).

    Returns:
        loss: 0-dim; its value is the token-mean NLL of the demonstrations plus the penalty, its
            gradient the NLL's plus the penalty's under the policy (module docstring).
        metrics: "nll" (the SFT part), "fsft_penalty" (the penalty part), "kl_own_samples" (mean
            log(π/π_ref) of the own samples: a k1 estimate of KL(π‖π_ref) per sequence), "fsft_clipped" (fraction of own samples past
            HELLINGER_T_MAX; 0 for the others), detached; "per_pair_loss" [B]: each pair's
            demonstration NLL and penalty, per token of its own response.
    """
    if divergence not in PENALTY:
        raise ValueError(f"unknown f-SFT divergence {divergence!r}; expected one of {sorted(PENALTY)}")
    nll = -policy_demo.sum() / demo_tokens.sum().clamp(min=1)

    penalty_of, slope_of = PENALTY[divergence]
    with torch.no_grad():
        implicit_reward = beta * (policy_own - reference_own)
        t = implicit_reward.clamp(max=HELLINGER_T_MAX) if divergence == "hellinger" else implicit_reward
        penalty = penalty_of(t) / beta
        score_weight = penalty - leave_one_out_mean(penalty) + slope_of(t)
    own_token_count = own_tokens.sum().clamp(min=1)
    # Value: the penalty; gradient: the score-function form, whose value is not meaningful.
    score_term = (score_weight * policy_own).sum() / own_token_count
    penalty_term = penalty.sum() / own_token_count + score_term - score_term.detach()
    loss = nll + penalty_term
    per_pair = (-policy_demo.detach() / demo_tokens.clamp(min=1)) + penalty / own_tokens.clamp(min=1)
    return loss, {
        "per_pair_loss": per_pair,
        "nll": nll.detach(),
        "fsft_penalty": penalty_term.detach(),
        "kl_own_samples": implicit_reward.mean() / beta,
        "fsft_clipped": (implicit_reward > HELLINGER_T_MAX).float().mean()
        if divergence == "hellinger" else torch.zeros(()),
    }
