"""The throughput benchmark compares the same work: rl/'s rows against SB3 PPO's defaults."""

from __future__ import annotations

import inspect

import pytest

from benchmarks.rl.throughput_one import N_ENVS, N_STEPS, SB3_EPOCHS, SB3_MINIBATCH, rl_config


@pytest.mark.parametrize("algo", ["ppo", "vppo"])
def test_rl_rows_do_sb3_ppos_work_critic_included(algo):
    cfg = rl_config("Pendulum-v1", algo, steps=20_480, seed=0)
    assert (cfg.num_envs, cfg.rollout_steps) == (N_ENVS, N_STEPS)
    # SB3's joint loss steps its value network on every policy minibatch.
    assert cfg.epochs == cfg.value_epochs == SB3_EPOCHS
    assert cfg.minibatch_size == cfg.value_minibatch_size == SB3_MINIBATCH
    assert (tuple(cfg.hidden), cfg.activation) == ((64, 64), "tanh")


def test_the_epochs_are_sb3_ppos_default():
    sb3 = pytest.importorskip("stable_baselines3")
    assert inspect.signature(sb3.PPO.__init__).parameters["n_epochs"].default == SB3_EPOCHS
