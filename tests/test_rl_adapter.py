"""The adapter's surrogate against a Gaussian bandit whose R(θ) and ∂R/∂θ are known in closed form.

Bandit: one step, observation s = 1, action a ~ N(m, σ²) with m = w + b (a linear policy with no
hidden layer, θ = (w, b)), reward r(a) = −(a − c)². Then R(θ) = −((m − c)² + σ²) and
∂R/∂w = ∂R/∂b = −2(m − c).
"""

from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl.adapter import (
    clipped_objective,
    policy_log_density,
    ratio_objective,
    reinforce_objective,
)
from rl.buffer import Batch
from rl.policies import BNNPolicy
from vi_flows.objectives import kl_loss

C, SIGMA, ALPHA = 0.7, 0.5, 0.05
SPACE = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)


def _bandit(posterior: str, k: int = 3, per_theta: int = 40_000, seed: int = 0):
    torch.manual_seed(seed)
    policy = BNNPolicy(
        1,
        SPACE,
        hidden=(),
        posterior=posterior,
        init_log_std=math.log(SIGMA),
        learn_log_std=False,
        posterior_options={"init_scale": 0.5},
    )
    xi = torch.randn(k, policy.noise_dim)
    with torch.no_grad():
        theta = policy.q(xi)[0]
        means = (policy.theta0 + theta).sum(-1)  # m_k = w_k + b_k (s = 1)
    session = torch.arange(k).repeat_interleave(per_theta)
    actions = means[session, None] + SIGMA * torch.randn(k * per_theta, 1)
    rewards = -(actions[:, 0] - C).square()
    logp = policy.distribution(theta[session], torch.ones(k * per_theta, 1)).log_prob(actions)
    batch = Batch(
        obs=torch.ones(k * per_theta, 1),
        actions=actions,
        logp=logp.detach(),
        advantages=rewards,
        returns=rewards,
        values=torch.zeros_like(rewards),
        session=session,
        xi=xi,
    )
    return policy, batch, means


def _theta_grad(policy, batch, objective):
    q, xi, log_p = policy_log_density(policy, batch, objective, ALPHA)
    theta = q(xi)[0].detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_p(theta).sum(), theta)
    return grad


def _standard_error(batch, means):
    # Per-sample REINFORCE gradient wrt m: (a − m)/σ² · r; its std / sqrt(M_k) is the MC error.
    m = means[batch.session]
    g = (batch.actions[:, 0] - m) / SIGMA**2 * batch.advantages
    k = means.shape[0]
    return torch.stack([g[batch.session == i].std() for i in range(k)]) / math.sqrt(len(batch) / k)


@pytest.mark.parametrize("make", ["reinforce", "ratio", "clip"])
def test_surrogate_gradient_is_policy_gradient_over_alpha(make):
    policy, batch, means = _bandit("gaussian")
    objective = {
        "reinforce": reinforce_objective(batch.advantages),
        "ratio": ratio_objective(batch.logp, batch.advantages),
        "clip": clipped_objective(batch.logp, batch.advantages, 0.2),
    }[make]
    grad = _theta_grad(policy, batch, objective)  # (K, 2): ∂/∂w, ∂/∂b
    true = -2.0 * (means - C)
    se = _standard_error(batch, means)
    assert means.std() > 0.1  # the K θ really differ, so a mixed-up row would show
    for col in range(2):
        assert torch.all((ALPHA * grad[:, col] - true).abs() < 4.5 * se), (grad * ALPHA, true)


def test_clipped_objective_is_torch_minimum_to_the_bit():
    """The mask form of PPO-clip gives min(r Â, clip(r) Â)'s values and gradients exactly, on
    ratios inside and outside the range, both signs of Â, and Â = 0."""
    torch.manual_seed(0)
    logp_old, adv = torch.randn(512), torch.randn(512)
    adv[:16] = 0.0
    logp = (logp_old + 0.4 * torch.randn(512)).requires_grad_()
    weights = torch.randn(512)
    ratio = torch.exp(logp - logp_old)
    reference = torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv)
    got = clipped_objective(logp_old, adv, 0.2)(logp)
    outside = ((ratio < 0.8) | (ratio > 1.2)).float().mean()
    assert 0.2 < outside < 0.8  # both regimes are exercised
    assert torch.equal(got, reference)
    (want,) = torch.autograd.grad(reference @ weights, logp)
    (grad,) = torch.autograd.grad(got @ weights, logp)
    assert torch.equal(grad, want)


def test_kl_loss_gradient_is_example_1():
    """−∂KL/∂μ_i = mean_k (1/α) ∂R/∂θ_ki and −∂KL/∂σ_i = mean_k ξ_ki (1/α) ∂R/∂θ_ki + 1/σ_i."""
    policy, batch, means = _bandit("gaussian", k=4, per_theta=20_000)
    objective = reinforce_objective(batch.advantages)
    grad_theta = _theta_grad(policy, batch, objective)
    q, xi, log_p = policy_log_density(policy, batch, objective, ALPHA)
    affine = policy.q.transform
    sigma = affine.scale()
    loss = kl_loss(policy.q, log_p, xi=xi)
    loss.backward()
    expected_loc = -grad_theta.mean(0)
    assert torch.allclose(affine.loc.grad, expected_loc, rtol=1e-4, atol=1e-4)
    # Chain rule through σ = softplus(ρ): ∂KL/∂ρ = ∂KL/∂σ · sigmoid(ρ).
    expected_sigma = -(xi * grad_theta).mean(0) - 1.0 / sigma.detach()
    expected_raw = expected_sigma * torch.sigmoid(affine.raw_scale.detach())
    assert torch.allclose(affine.raw_scale.grad, expected_raw, rtol=1e-4, atol=1e-4)
    # And the fitted gradient agrees with the closed form within Monte Carlo error.
    se = _standard_error(batch, means)
    assert (ALPHA * expected_loc + (-2.0 * (means - C)).mean()).abs().max() < 4.5 * se.max()


@pytest.mark.parametrize("posterior", ["lowrank-gaussian", "planar", "realnvp", "full-gaussian"])
def test_kl_loss_reaches_every_flow_parameter(posterior):
    policy, batch, _ = _bandit(posterior, k=3, per_theta=50)
    with torch.no_grad():  # move off the zero-initialised layers, whose zeros block gradients
        for p in policy.q.parameters():
            p.add_(0.1 * torch.randn_like(p))
    q, xi, log_p = policy_log_density(policy, batch, reinforce_objective(batch.advantages), ALPHA)
    kl_loss(q, log_p, xi=xi).backward()
    named = list(policy.q.named_parameters())
    assert named
    for name, p in named:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_surrogate_rejects_bad_alpha_and_shapes():
    policy, batch, _ = _bandit("gaussian", k=2, per_theta=10)
    with pytest.raises(ValueError, match="alpha"):
        policy_log_density(policy, batch, reinforce_objective(batch.advantages), 0.0)
    _, _, log_p = policy_log_density(policy, batch, reinforce_objective(batch.advantages), 1.0)
    with pytest.raises(ValueError, match="θ rows"):
        log_p(torch.zeros(5, policy.noise_dim))


@pytest.mark.parametrize("posterior", ["gaussian", "lowrank-gaussian"])
def test_a_minibatch_cut_to_its_sessions_has_the_whole_tables_gradient(posterior):
    """Batch.subset drops the sessions a minibatch does not hold. The surrogate is a per-sample
    mean either way, and an affine flow's log q has the same φ-gradient at every ξ, so the loss
    gradient is the one the whole session table gives."""
    policy, batch, _ = _bandit(posterior, k=6, per_theta=5)
    rows = torch.tensor([0, 3, 12, 14, 27])  # sessions 0, 0, 2, 2, 5: 1, 3 and 4 absent
    cut = batch.subset(rows)
    whole = dataclasses.replace(cut, session=batch.session[rows], xi=batch.xi)
    assert cut.xi.shape[0] == 3 and whole.xi.shape[0] == 6
    grads = []
    for mb in (cut, whole):
        policy.zero_grad()
        objective = clipped_objective(mb.logp, mb.advantages, 0.2)
        q, xi, log_p = policy_log_density(policy, mb, objective, ALPHA)
        kl_loss(q, log_p, xi=xi).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in policy.q.parameters()]))
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6)
