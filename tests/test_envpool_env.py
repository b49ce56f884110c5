"""The EnvPool backend: SAME_STEP autoreset over a NEXT_STEP pool, and EnvPool's dynamics.

The autoreset translation is tested against gymnasium's own SAME_STEP vector env with a
stand-in pool (pure gymnasium, so it runs where envpool is not installed); the tests that need
envpool itself are skipped without it.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl.algorithms import default_config
from rl.envpool_env import SameStepPool, envpool_envs
from rl.envs import make_envs
from rl.trainer import train


class NextStepPool:
    """EnvPool's gymnasium interface over gymnasium envs: NEXT_STEP autoreset (the step after an
    ending resets that slot, ignoring its action, reward 0), partial ``reset(env_id)`` and rows
    tagged by ``info["env_id"]``, here returned in reverse slot order to test the reordering."""

    def __init__(self, make, num_envs: int, seed: int) -> None:
        self.envs = [make() for _ in range(num_envs)]
        self.seed, self.seeded = seed, False
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space
        self.pending = np.zeros(num_envs, dtype=bool)

    def _reset(self, j: int) -> np.ndarray:
        seed = None if self.seeded else self.seed + j  # as gymnasium's vector env seeds slot j
        self.pending[j] = False
        return self.envs[j].reset(seed=seed)[0]

    def reset(self, env_id=None):
        ids = np.arange(len(self.envs)) if env_id is None else np.asarray(env_id)
        obs = np.stack([self._reset(int(j)) for j in ids])
        self.seeded = True
        return obs[::-1], {"env_id": ids[::-1]}

    def step(self, action):
        rows = []
        for j, env in enumerate(self.envs):
            if self.pending[j]:
                rows.append((self._reset(j), 0.0, False, False))
            else:
                obs, r, term, trunc, _ = env.step(action[j])
                self.pending[j] = term or trunc
                rows.append((obs, r, term, trunc))
        obs, r, term, trunc = (np.array(x)[::-1] for x in zip(*rows, strict=True))
        return obs, r, term, trunc, {"env_id": np.arange(len(self.envs))[::-1]}

    def close(self) -> None:
        for env in self.envs:
            env.close()


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_same_step_pool_equals_gymnasium_same_step(env_id):
    """Same seeds, same actions: observations, rewards, endings and final observations agree
    step for step with gymnasium's SAME_STEP vector env (CartPole ends by termination at random
    times, the 7-step Pendulum by truncation)."""
    n, seed = 3, 5

    def make():
        return gym.make(env_id, max_episode_steps=7)

    ours = SameStepPool(NextStepPool(make, n, seed), n)
    ref = gym.vector.SyncVectorEnv([make] * n, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs, _ = ours.reset(seed=seed)
    ref_obs, _ = ref.reset(seed=seed)
    np.testing.assert_array_equal(obs, ref_obs)
    ref.action_space.seed(0)
    ends = 0
    for _ in range(40):
        action = ref.action_space.sample()
        obs, r, term, trunc, info = ours.step(action)
        ref_obs, ref_r, ref_term, ref_trunc, ref_info = ref.step(action)
        np.testing.assert_array_equal(obs, ref_obs)
        np.testing.assert_array_equal(r, ref_r)
        np.testing.assert_array_equal(term, ref_term)
        np.testing.assert_array_equal(trunc, ref_trunc)
        ended = term | trunc
        ends += int(ended.sum())
        for j in np.nonzero(ended)[0]:
            np.testing.assert_array_equal(info["final_obs"][j], ref_info["final_obs"][j])
        assert ("final_obs" in info) == bool(ended.any())
    assert ends >= 3 * n  # both kinds of ending were exercised several times per slot
    ours.close()
    ref.close()


def test_unknown_backend_and_missing_envpool_are_one_line_errors(monkeypatch):
    with pytest.raises(ValueError, match="env_backend must be envpool or gymnasium, got .jax."):
        default_config("ppo", env_backend="jax")
    monkeypatch.setitem(__import__("sys").modules, "envpool", None)  # import envpool fails
    with pytest.raises(ValueError, match="pip install envpool"):
        envpool_envs("Pendulum-v1", 2, 0)


def test_envpool_pendulum_follows_gymnasium_dynamics():
    """From a shared state and the same actions, EnvPool's Pendulum-v1 and gymnasium's agree to
    float32 rounding for a whole episode, including its truncation at 200 steps."""
    pytest.importorskip("envpool")
    pool = make_envs("Pendulum-v1", 1, seed=3, backend="envpool")
    obs, _ = pool.reset(seed=3)
    env = gym.make("Pendulum-v1")
    env.reset(seed=0)
    env.unwrapped.state = np.array([np.arctan2(obs[0, 1], obs[0, 0]), obs[0, 2]], np.float64)
    rng = np.random.default_rng(0)
    for t in range(200):
        action = rng.uniform(-2, 2, (1, 1)).astype(np.float32)
        obs, r, term, trunc, info = pool.step(action)
        ref_obs, ref_r, ref_term, ref_trunc, _ = env.step(action[0])
        assert (bool(term[0]), bool(trunc[0])) == (ref_term, ref_trunc) == (False, t == 199)
        final = info["final_obs"][0] if trunc[0] else obs[0]
        np.testing.assert_allclose(final, ref_obs, atol=1e-5)
        assert r[0] == pytest.approx(ref_r, abs=1e-4)
    pool.close()


def test_training_on_envpool_runs_and_resumes_with_a_warning(tmp_path):
    """A run on the envpool backend trains, records the backend, and (its C++ env state not being
    checkpointable) resumes by restarting the in-flight episodes, with the warning that says so."""
    pytest.importorskip("envpool")
    cfg = default_config(
        "ppo",
        env_id="Pendulum-v1",
        num_envs=2,
        rollout_steps=64,
        total_steps=256,
        seed=0,
        env_backend="envpool",
        epochs=1,
        checkpoint_every=1,
        tensorboard=False,
    )
    torch.manual_seed(0)
    train(dataclasses.replace(cfg, total_steps=128), tmp_path, progress=False)
    assert '"env_backend": "envpool"' in (tmp_path / "config.json").read_text()
    with pytest.warns(UserWarning, match="restarts the in-flight episodes"):
        train(cfg, tmp_path, progress=False, resume=True)
    rows = (tmp_path / "progress.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2  # header + two updates of 2 × 64 steps


def test_an_id_envpool_lacks_names_the_close_ones():
    pytest.importorskip("envpool")
    with pytest.raises(ValueError, match="not an EnvPool task.*close: CartPole-v1"):
        make_envs("CartPole-v2", 2, 0, backend="envpool")
    with pytest.raises(ValueError, match="not an EnvPool task"):
        make_envs("vi-flows/DeepSea10-v0", 2, 0, backend="envpool")
