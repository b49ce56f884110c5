"""``rl.written_out``: PPO-clip's minibatch gradients by hand against autograd on the same loss.

The written-out step replaces autograd for the configuration most PPO / V-PPO runs use, so it must
give the gradients of exactly the loss the adapter and ``vi_flows.objectives.kl_loss`` build
(float64 here, so a disagreement is a wrong formula, not rounding), over the shapes that loss
takes (several action dimensions, one or two hidden layers, both activations, uneven sessions, a
session of one sample), and a whole update must land where autograd's lands.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl.adapter import clipped_objective
from rl.algorithms import default_config
from rl.algorithms.ppo import PPO
from rl.buffer import Batch
from rl.networks import mlp
from rl.policies import BNNPolicy
from rl.value import value_loss
from rl.written_out import clip_step, policy_parameters, unsupported


def _setup(posterior, act_dim, hidden, activation, obs_dim=4, seed=0):
    """A float64 BNN policy (moved off its initial point), critic, PPO and a minibatch cut from a
    batch of 7 sessions by ``Batch.subset``: it holds 5 of them, renumbered, of very different
    sizes (20, 12, 6, 1 and 1 samples)."""
    torch.manual_seed(seed)
    space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
    policy = BNNPolicy(obs_dim, space, hidden, posterior=posterior, activation=activation)
    critic = mlp(obs_dim, 1, hidden, activation)
    policy.double(), critic.double()
    with torch.no_grad():  # ratios ≠ 1, so some samples are clipped
        for p in [*policy.parameters(), *critic.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    algo = "vppo" if posterior != "point" else "ppo"
    cfg = default_config(algo, env_id="Pendulum-v1", hidden=hidden, activation=activation)
    ppo = PPO(cfg, policy, critic)
    # sessions 1 and 4 of the batch are absent from the minibatch (rows of 0, 2, 3, 5, 6)
    sizes = torch.tensor([20, 7, 12, 6, 9, 1, 1])
    session = torch.repeat_interleave(torch.arange(7), sizes)
    m = len(session)
    batch = Batch(
        obs=torch.randn(m, obs_dim, dtype=torch.float64),
        actions=torch.randn(m, act_dim, dtype=torch.float64),
        logp=torch.zeros(m, dtype=torch.float64),
        advantages=torch.randn(m, dtype=torch.float64),
        returns=torch.randn(m, dtype=torch.float64),
        values=torch.zeros(m, dtype=torch.float64),
        session=session,
        xi=torch.randn(7, policy.noise_dim, dtype=torch.float64),
    )
    kept = torch.nonzero((session != 1) & (session != 4)).squeeze(1)
    mb = batch.subset(kept[torch.randperm(len(kept))])
    assert mb.xi.shape[0] == (7 if posterior == "point" else 5)  # a point mass keeps its table
    with torch.no_grad():  # behaviour log-probs near the current ones: ratios around 1
        q, xi, _ = policy.variational(mb)
        mb.logp = policy.log_prob(mb, q(xi)[0]) + 0.2 * torch.randn(len(mb), dtype=torch.float64)
    return policy, critic, ppo, mb


def _autograd(policy, critic, ppo, mb, alpha, clip):
    """The library's loss through the adapter and autograd: its value, the gradients of
    ``policy_parameters`` and the critic's, the value loss."""
    loss = ppo.loss(mb, clipped_objective(mb.logp, mb.advantages, clip), alpha)
    value = value_loss(critic, mb.obs, mb.returns)
    params = policy_parameters(policy) + list(critic.parameters())
    return loss.detach(), list(torch.autograd.grad(loss + value, params)), value.detach()


@pytest.mark.parametrize("posterior", ["point", "gaussian"])
@pytest.mark.parametrize(
    "act_dim, hidden, activation",
    [(1, (8, 8), "tanh"), (3, (16,), "relu"), (2, (6, 5), "relu"), (2, (), "tanh")],
)
def test_written_out_gradients_are_autograds_on_the_librarys_loss(
    posterior, act_dim, hidden, activation
):
    policy, critic, ppo, mb = _setup(posterior, act_dim, hidden, activation)
    alphas = (1e-3, 0.3)  # the point mass has no KL term: both paths ignore α
    for alpha in alphas:
        loss, want, value = _autograd(policy, critic, ppo, mb, alpha, 0.2)
        step = clip_step(policy, critic, mb, alpha, 0.2)
        for got, ref in zip(step.policy_grads + step.critic_grads, want, strict=True):
            torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(step.policy_loss(), loss, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(step.value_loss(), value, rtol=1e-12, atol=1e-14)
        with torch.no_grad():
            theta = policy.variational(mb)[0](policy.variational(mb)[1])[0]
            torch.testing.assert_close(step.logp, policy.log_prob(mb, theta))
        # without the critic: the same policy gradients, nothing for the critic
        alone = clip_step(policy, critic, mb, alpha, 0.2, with_critic=False)
        assert alone.critic_grads is None and alone.value_loss() is None
        for got, ref in zip(alone.policy_grads, step.policy_grads, strict=True):
            torch.testing.assert_close(got, ref, rtol=0, atol=0)
    # the comparison sees a different loss: another clip ε, and another α where there is a KL term
    off = clip_step(policy, critic, mb, alphas[-1], 0.05).policy_grads
    assert not all(torch.allclose(a, b) for a, b in zip(off, want[:3], strict=False))
    if posterior == "gaussian":
        other = clip_step(policy, critic, mb, 2 * alphas[-1], 0.2).policy_grads
        assert not torch.allclose(other[1], want[1])


@pytest.mark.parametrize("algo", ["ppo", "vppo"])
def test_an_update_lands_where_autograds_lands(algo):
    """Two copies of one run, one update each on the same batch: the written-out path and autograd
    take the same steps (float32, 20 minibatch steps: agreement to rounding), and log the same."""
    from benchmarks.rl.throughput_one import rl_config
    from rl.run import Run

    base = dataclasses.replace(rl_config("Pendulum-v1", algo, 10**6, seed=0), rollout_steps=64)
    runs = {hand: Run(dataclasses.replace(base, hand_gradients=hand)) for hand in (True, False)}
    try:
        assert runs[True].algo.written_out and not runs[False].algo.written_out
        runs[False].policy.load_state_dict(runs[True].policy.state_dict())
        runs[False].critic.load_state_dict(runs[True].critic.state_dict())
        batch, _ = runs[True].collect()
        before = {k: v.clone() for k, v in runs[True].policy.state_dict().items()}
        stats = {hand: run.learn(batch)[1] for hand, run in runs.items()}
    finally:
        for run in runs.values():
            run.envs.close()
    for model in ("policy", "critic"):
        hand, auto = (getattr(runs[h], model).state_dict() for h in (True, False))
        for name in hand:
            torch.testing.assert_close(hand[name], auto[name], rtol=1e-4, atol=1e-5)
    after = runs[True].policy.state_dict()
    moved = max(float((after[k] - before[k]).abs().max()) for k in before)
    assert moved > 1e-3  # the update did move the weights: the agreement above is not vacuous
    for key in ("policy_loss", "value_loss", "clipfrac", "grad_norm", "step_frac"):
        assert stats[True][key] == pytest.approx(stats[False][key], rel=1e-3, abs=1e-5), key


def test_policy_parameters_are_every_trainable_parameter():
    for posterior in ("point", "gaussian"):
        policy = _setup(posterior, 2, (8,), "tanh")[0]
        trainable = {id(p) for p in policy.parameters() if p.requires_grad}
        assert {id(p) for p in policy_parameters(policy)} == trainable


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"posterior": "lowrank-gaussian"}, "posterior"),
        ({"rpo_alpha": 0.5}, "RPO"),
        ({"objective": "kl-penalty"}, "PPO-clip"),
        ({"learn_log_std": False}, "log σ"),
        ({"env_id": "CartPole-v1"}, "Box head"),
        ({"policy": "action-mean"}, "BNNPolicy"),
        ({"posterior_options": '{"base": "student-t", "df": 4.0}'}, "posterior"),
    ],
)
def test_what_it_does_not_write_out_goes_through_autograd(change, reason):
    from rl.run import Run

    fields = {"env_id": "Pendulum-v1", "num_envs": 1, "rollout_steps": 8, **change}
    cfg = default_config("vppo", **fields)
    run = Run(cfg)
    try:
        assert reason in unsupported(run.policy, run.critic, cfg.objective, cfg.rpo_alpha)
        assert not run.algo.written_out
    finally:
        run.envs.close()
    off = Run(default_config("vppo", env_id="Pendulum-v1", num_envs=1, hand_gradients=False))
    try:
        assert not off.algo.written_out
        assert not unsupported(off.policy, off.critic, "clip", 0.0)
    finally:
        off.envs.close()


def test_a_frozen_parameter_or_a_nonpositive_alpha_is_refused():
    policy, critic, ppo, mb = _setup("gaussian", 2, (8,), "tanh")
    assert not unsupported(policy, critic, "clip", 0.0)
    with pytest.raises(ValueError, match="alpha must be positive"):
        clip_step(policy, critic, mb, 0.0, 0.2)
    # autograd would leave a frozen log σ where it is; an assigned gradient would move it
    policy.head.log_std.requires_grad_(False)
    assert "frozen" in unsupported(policy, critic, "clip", 0.0)
    assert not PPO(ppo.cfg, policy, critic).written_out
