"""f-divergence SFT (losses/fsft.py) on fixed tensors: tv is SFT, pearson and hellinger match a
hand computation, the gradient is the exact gradient of the expectation under the policy, and it
pulls the policy back towards the reference where SFT's does not."""

import math

import pytest
import torch

from losses.fsft import HELLINGER_T_MAX, fsft_loss
from losses.sft import sft_loss

BETA = 0.1


def test_tv_is_the_sft_loss_on_the_same_batch():
    torch.manual_seed(0)
    token_logps = (-torch.rand(3, 5) * 3).requires_grad_()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    own = (-torch.rand(3) * 10).requires_grad_()

    sft, _ = sft_loss(token_logps, mask)
    (sft_grad,) = torch.autograd.grad(sft, token_logps)
    demo = torch.where(mask, token_logps, torch.zeros_like(token_logps)).sum(dim=1)
    tv, metrics = fsft_loss(demo, own, own.detach() - 3.0, mask.sum(dim=1).float(), torch.tensor([4.0, 2.0, 6.0]),
                            divergence="tv", beta=BETA)
    tv_grad, own_grad = torch.autograd.grad(tv, [token_logps, own])

    assert tv.item() == sft.item()
    assert torch.equal(tv_grad, sft_grad)
    assert torch.count_nonzero(own_grad) == 0
    assert metrics["fsft_penalty"].item() == 0.0


@pytest.mark.parametrize("divergence", ["pearson", "hellinger"])
def test_value_and_gradient_match_a_hand_computation(divergence):
    policy_demo = torch.tensor([-4.0, -9.0, -2.0], requires_grad=True)
    policy_own = torch.tensor([-3.0, -6.0, -2.5], requires_grad=True)
    reference_own = [-5.0, -5.0, -2.0]
    demo_tokens, own_tokens = [4.0, 6.0, 1.0], [3.0, 5.0, 2.0]

    loss, metrics = fsft_loss(policy_demo, policy_own, torch.tensor(reference_own), torch.tensor(demo_tokens),
                              torch.tensor(own_tokens), divergence=divergence, beta=BETA)
    loss.backward()

    # By hand: T = beta (log pi - log pi_ref); g = f*(T) - T; the gradient of (1/beta) E_pi[g(T)] per
    # sample is (g/beta - mean of the others' g/beta + g'(T)), over the own token count.
    if divergence == "pearson":
        g = lambda t: t * t / 4  # noqa: E731
        g_slope = lambda t: t / 2  # noqa: E731
    else:
        g = lambda t: t * t / (1 - t)  # noqa: E731
        g_slope = lambda t: (2 * t - t * t) / (1 - t) ** 2  # noqa: E731
    rewards = [BETA * (p - r) for p, r in zip([-3.0, -6.0, -2.5], reference_own)]
    penalties = [g(t) / BETA for t in rewards]
    own_count = sum(own_tokens)
    nll = (4.0 + 9.0 + 2.0) / sum(demo_tokens)
    expected_loss = nll + sum(penalties) / own_count
    expected_own_grad = [
        (penalties[i] - (sum(penalties) - penalties[i]) / 2 + g_slope(rewards[i])) / own_count for i in range(3)
    ]

    assert loss.item() == pytest.approx(expected_loss, rel=1e-6)
    assert metrics["nll"].item() == pytest.approx(nll, rel=1e-6)
    assert policy_own.grad.tolist() == pytest.approx(expected_own_grad, rel=1e-5)
    assert policy_demo.grad.tolist() == pytest.approx([-1 / sum(demo_tokens)] * 3, rel=1e-6)


def test_hellinger_weighs_samples_past_its_domain_at_the_edge():
    policy_own = torch.tensor([0.0, -1.0], requires_grad=True)
    reference_own = torch.tensor([-10.0, -1.0])  # T = 2.0 (past 1, where f* is infinite) and 0
    loss, metrics = fsft_loss(torch.tensor([-1.0, -1.0]), policy_own, reference_own, torch.ones(2), torch.ones(2),
                              divergence="hellinger", beta=BETA)
    loss.backward()
    t = HELLINGER_T_MAX
    assert math.isfinite(loss.item())
    assert metrics["fsft_clipped"].item() == 0.5
    edge_penalty = t * t / (1 - t) / BETA
    assert policy_own.grad[0].item() == pytest.approx((edge_penalty + (2 * t - t * t) / (1 - t) ** 2) / 2, rel=1e-5)


def categorical_setup():
    """A policy over 4 whole responses (logits), a fixed reference, and one demonstration (response 0).

    Like a real demonstration, response 0 is a long shot for the reference (log-prob about -10.4);
    the policy has already moved 4 nats towards it.
    """
    reference = torch.log_softmax(torch.tensor([-8.0, 2.0, 1.5, 1.0]), dim=0)
    logits = torch.tensor([-4.0, 2.0, 1.5, 1.0], requires_grad=True)
    return logits, reference


def exact_penalty(logits, reference, divergence):
    """(1/beta) E_pi[g(T)], summed over the 4 responses rather than sampled."""
    logp = torch.log_softmax(logits, dim=0)
    t = BETA * (logp - reference)
    g = t * t / 4 if divergence == "pearson" else t * t / (1 - t)
    return (logp.exp() * g).sum() / BETA


def kl_to_reference(logits, reference):
    logp = torch.log_softmax(logits, dim=0)
    return (logp.exp() * (logp - reference)).sum()


def sampled_loss(logits, reference, divergence, samples):
    logp = torch.log_softmax(logits, dim=0)
    count = samples.numel()
    return fsft_loss(logp[0].expand(count), logp[samples], reference[samples], torch.ones(count), torch.ones(count),
                     divergence=divergence, beta=BETA)[0]


@pytest.mark.parametrize("divergence", ["pearson", "hellinger"])
def test_the_sampled_gradient_is_the_exact_gradient_and_pulls_towards_the_reference(divergence):
    logits, reference = categorical_setup()
    (exact,) = torch.autograd.grad(exact_penalty(logits, reference, divergence), logits)
    (kl_gradient,) = torch.autograd.grad(kl_to_reference(logits, reference), logits)

    generator = torch.Generator().manual_seed(0)
    samples = torch.multinomial(torch.softmax(logits.detach(), 0), 200_000, replacement=True, generator=generator)
    (sampled,) = torch.autograd.grad(sampled_loss(logits, reference, divergence, samples), logits)
    (sft,) = torch.autograd.grad(-torch.log_softmax(logits, dim=0)[0], logits)

    # Per own token = per sample here: the sampled penalty gradient is the total minus SFT's part.
    assert (sampled - sft).tolist() == pytest.approx(exact.tolist(), abs=3e-3)
    # A descent step on the penalty lowers KL(pi || pi_ref) ...
    assert torch.dot(exact, kl_gradient) > 0.1 * exact.norm() * kl_gradient.norm()
    # ... while a descent step on SFT raises it here (the policy already favours the demonstration).
    assert torch.dot(sft, kl_gradient) < 0


@pytest.mark.parametrize("divergence", ["tv", "pearson", "hellinger"])
def test_training_on_samples_keeps_the_policy_near_the_reference_except_for_tv(divergence):
    """300 Adam steps on batches sampled from the policy: SFT (tv) runs off onto the demonstration (the
    KL of a point mass there is 10.4 nats); pearson and hellinger gain on it and stay anchored."""
    logits, reference = categorical_setup()
    logits = logits.detach().clone().requires_grad_()
    optimizer = torch.optim.Adam([logits], lr=0.05)
    generator = torch.Generator().manual_seed(1)
    for _ in range(300):
        samples = torch.multinomial(torch.softmax(logits.detach(), 0), 64, replacement=True, generator=generator)
        optimizer.zero_grad()
        sampled_loss(logits, reference, divergence, samples).backward()
        optimizer.step()
    kl = kl_to_reference(logits, reference).item()
    demo_prob = torch.softmax(logits, 0)[0].item()
    start_prob = torch.softmax(categorical_setup()[0], 0)[0].item()
    if divergence == "tv":
        assert kl > 8.0 and demo_prob > 0.95
    else:
        assert demo_prob > 10 * start_prob and kl < 4.0
