"""RPO's action-mean perturbation, the trainer callback, per-env presets, vectorised evaluation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl.algorithms import ALGORITHMS, default_config
from rl.buffer import Batch
from rl.checkpoint import from_plain
from rl.config import with_overrides
from rl.evaluate import evaluate_policy, run_episodes
from rl.policies import ActionHead, make_policy
from rl.presets import env_ids, env_preset, sb3_zoo
from rl.trainer import train
from vi_flows import runfiles

SMALL = {"num_envs": 2, "rollout_steps": 16, "hidden": (8,), "tensorboard": False}


def test_rpo_perturbs_the_mean_only_inside_the_context():
    head = ActionHead(gym.spaces.Box(-1, 1, (3,)), init_log_std=0.0)
    out = torch.zeros(5, 3)
    assert torch.equal(head(out).mean, out)
    with head.perturbed(0.5):
        mean = head(out).mean
        assert not torch.equal(mean, out) and mean.abs().max() <= 0.5
    assert torch.equal(head(out).mean, out) and head.mean_noise == 0.0


def test_rpo_perturbs_the_update_only():
    """The same seed collects the same actions with ρ = 0 and 0.5 (RPO leaves rollouts alone),
    and one update on them moves the weights differently (the noise is in the update)."""
    from rl.run import Run

    weights = {}
    actions = {}
    for rho in (0.0, 0.5):
        cfg = default_config("ppo", env_id="Pendulum-v1", rpo_alpha=rho, epochs=2, **SMALL)
        run = Run(cfg)
        try:
            batch, _ = run.collect()
            actions[rho] = batch.actions.clone()
            run.learn(batch)
            weights[rho] = [p.detach().clone() for p in run.policy.parameters()]
        finally:
            run.envs.close()
    assert torch.equal(actions[0.0], actions[0.5])
    assert not all(torch.equal(a, b) for a, b in zip(weights[0.0], weights[0.5], strict=True))


def test_rpo_trains_and_differs_from_ppo(tmp_path):
    rows = {}
    for rho in (0.0, 0.5):
        cfg = default_config(
            "ppo", env_id="Pendulum-v1", total_steps=64, rpo_alpha=rho, epochs=2, **SMALL
        )
        train(cfg, tmp_path / str(rho), progress=False)
        rows[rho] = from_plain(runfiles.load(tmp_path / str(rho) / "checkpoint.pt"))
    a, b = rows[0.0]["policy"], rows[0.5]["policy"]
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_callback_runs_every_update_and_can_stop(tmp_path):
    seen = []

    def callback(run, row):
        seen.append(row["update"])
        return row["update"] == 2

    cfg = default_config("vppo", env_id="CartPole-v1", total_steps=32 * 5, **SMALL)
    row = train(cfg, tmp_path, progress=False, callback=callback)
    assert seen == [1, 2] and row["update"] == 2


@pytest.mark.parametrize("env_id", env_ids())
def test_presets_apply_to_every_algorithm(env_id):
    for algo in ALGORITHMS:
        preset = env_preset(env_id, algo)
        cfg = with_overrides(default_config(algo), preset)
        assert {k: getattr(cfg, k) for k in preset} == preset
    assert env_preset("Pendulum-v1", "vppo")["minibatch_size"] == 64
    assert "epochs" not in env_preset("Pendulum-v1", "trpo")
    assert env_preset("Acrobot-v1", "ppo") == {}
    assert env_preset("HalfCheetah-v5", "vppo")["hidden"] == (256, 256)


def test_sb3_zoo_presets_keep_the_zoo_notation():
    zoo = sb3_zoo("CartPole-v1", "ppo")
    assert zoo["learning_rate"] == "lin_0.001" and zoo["clip_range"] == "lin_0.2"
    assert sb3_zoo("Acrobot-v1", "ppo")["n_envs"] == 16  # a zoo entry without an rl section
    with pytest.raises(KeyError, match="no sb3-zoo preset"):
        sb3_zoo("vi-flows/DeepSea10-v0", "ppo")


def test_vectorised_episodes_match_one_at_a_time():
    def act(obs):
        return np.clip(obs[:, :1], -2, 2).astype(np.float32)

    together = run_episodes("Pendulum-v1", 3, 7, act)
    alone = [run_episodes("Pendulum-v1", 1, 7 + i, act)[0] for i in range(3)]
    np.testing.assert_allclose(together, alone, rtol=1e-6)


def test_evaluate_policy_leaves_the_rng_alone():
    policy = make_policy("bnn", 3, gym.spaces.Box(-2, 2, (1,)), hidden=(8,))
    state = torch.get_rng_state()
    result = evaluate_policy(policy, "Pendulum-v1", episodes=2)
    assert torch.equal(state, torch.get_rng_state())
    assert set(result) == {"mean", "sampled"}


@pytest.mark.parametrize("posterior", ["gaussian", "point"])
@pytest.mark.parametrize("discrete", [False, True])
@pytest.mark.parametrize("uneven", [False, True])
def test_grouped_log_prob_matches_per_sample(posterior, discrete, uneven):
    torch.manual_seed(0)
    space = gym.spaces.Discrete(3) if discrete else gym.spaces.Box(-1, 1, (2,))
    policy = make_policy("bnn", 4, space, hidden=(8, 8), posterior=posterior)
    k, m = 5, 37
    theta = (0.3 * torch.randn(1 if posterior == "point" else k, policy.net.num_params)).expand(
        k, -1
    )
    theta = theta.clone().requires_grad_(True)
    rows = torch.randint(0, k, (m,))
    if uneven:  # one big group, two small ones, θ rows 1 and 3 unused: groups get chunked
        rows = torch.tensor([0] * 30 + [2] * 5 + [4] * 2)[torch.randperm(m)]
    obs = torch.randn(m, 4)
    actions = policy.distribution(theta[rows], obs).sample()
    zeros = torch.zeros(m)
    batch = Batch(obs, actions, zeros, zeros, zeros, zeros, rows, torch.zeros(k, 0))
    fast = policy.log_prob(batch, theta)
    slow = policy.distribution(theta[rows], obs).log_prob(actions)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    (g_fast,) = torch.autograd.grad(fast.sum(), theta)
    (g_slow,) = torch.autograd.grad(slow.sum(), theta)
    if posterior == "point":  # one θ for all rows: compare the total gradient
        g_fast, g_slow = g_fast.sum(0), g_slow.sum(0)
    torch.testing.assert_close(g_fast, g_slow, rtol=1e-4, atol=1e-5)
