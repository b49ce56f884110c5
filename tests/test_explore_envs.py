"""The exploration suite's environments against their definitions (rl.explore_envs)."""

from __future__ import annotations

import csv
import itertools
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rl.envs import make_envs
from rl.explore_envs import DEEP_SEA_SIZES, DeepSea, SparseGoalReward


def _play(env: DeepSea, actions) -> tuple[float, list[tuple[int, int]], bool]:
    """Total reward, the visited (row, column) cells and whether the last step terminated."""
    obs, _ = env.reset(seed=0)
    total, cells, terminated = 0.0, [], False
    for action in actions:
        index = int(np.argmax(obs))
        cells.append(divmod(index, env.size))
        obs, reward, terminated, truncated, _ = env.step(action)
        assert not truncated
        total += float(reward)
    return total, cells, terminated and not obs.any()


@pytest.mark.parametrize("size", DEEP_SEA_SIZES)
def test_deep_sea_optimal_policy_earns_0_99(size):
    env = gym.make(f"vi-flows/DeepSea{size}-v0").unwrapped
    assert env.size == size and env.optimal_return == pytest.approx(0.99)
    obs, _ = env.reset(seed=3)
    total, steps = 0.0, 0
    terminated = False
    while not terminated:
        row, column = divmod(int(np.argmax(obs)), size)
        assert (row, column) == (steps, steps)  # the optimal path is the diagonal
        obs, reward, terminated, _, info = env.step(env.right_action(row, column))
        total += float(reward)
        steps += 1
    assert steps == size and info["treasure"] and not obs.any()
    assert total == pytest.approx(1.0 - 0.01)


def test_deep_sea_exactly_one_action_sequence_finds_the_treasure():
    env = DeepSea(6, mapping_seed=1)
    returns = [_play(env, seq)[0] for seq in itertools.product([0, 1], repeat=6)]
    assert max(returns) == pytest.approx(0.99)
    assert sum(r > 0.5 for r in returns) == 1
    assert all(r <= 0.0 for r in returns if r < 0.5)


def test_deep_sea_transitions_follow_the_definition():
    n = 5
    env = DeepSea(n, mapping_seed=7)
    rng = np.random.default_rng(0)
    for _ in range(50):
        obs, _ = env.reset()
        row, column = 0, 0
        for t in range(n):
            assert obs.shape == (n * n,) and obs.sum() == 1 and obs[row * n + column] == 1
            action = int(rng.integers(2))
            right = action == env.action_mapping[row, column]
            obs, reward, terminated, truncated, _ = env.step(action)
            expected = (1.0 if right and column == n - 1 else 0.0) - (0.01 / n if right else 0.0)
            assert reward == pytest.approx(expected)
            column = min(column + 1, n - 1) if right else max(column - 1, 0)
            row += 1
            assert terminated == (t == n - 1) and not truncated
        assert not obs.any()


def test_deep_sea_action_map_is_bsuites_and_fixed_by_its_seed():
    env = DeepSea(8, mapping_seed=42)
    expected = np.random.RandomState(42).binomial(1, 0.5, (8, 8))
    np.testing.assert_array_equal(env.action_mapping, expected)
    before = env.action_mapping.copy()
    env.reset(seed=123)
    np.testing.assert_array_equal(env.action_mapping, before)
    assert not np.array_equal(DeepSea(8, mapping_seed=43).action_mapping, before)
    debug = DeepSea(4, randomize_actions=False)
    assert _play(debug, [1, 1, 1, 1])[0] == pytest.approx(0.99)
    assert _play(debug, [0, 0, 0, 0])[0] == 0.0


def test_stochastic_deep_sea_expected_optimal_return():
    n = 5
    env = DeepSea(n, deterministic=False, mapping_seed=0)
    assert env.optimal_return == pytest.approx((1 - 1 / n) ** (n - 1) - 0.01)
    env.reset(seed=0)
    totals = []
    for _ in range(4000):
        obs, _ = env.reset()
        total, terminated = 0.0, False
        while not terminated:
            row, column = divmod(int(np.argmax(obs)), n)
            obs, reward, terminated, _, _ = env.step(env.right_action(row, column))
            total += float(reward)
        totals.append(total)
    # ± 4 standard errors (the return's sd is ≈ 1.1: treasure lottery plus N(0, 1) end noise).
    assert np.mean(totals) == pytest.approx(env.optimal_return, abs=4 * 1.1 / np.sqrt(4000))


def test_deep_sea_rejects_bad_sizes_and_steps_after_the_end():
    with pytest.raises(ValueError, match="size"):
        DeepSea(1)
    env = DeepSea(2)
    env.reset(seed=0)
    env.step(0)
    env.step(0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_deep_sea_runs_in_the_trainers_vector_env():
    envs = make_envs("vi-flows/DeepSea10-v0", 3, seed=0)
    try:
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (3, 100)
        assert isinstance(envs.single_action_space, gym.spaces.Discrete)
    finally:
        envs.close()
    env = gym.make("rl.explore_envs:vi-flows/DeepSea-v0")  # gym.make imports the module itself
    assert env.unwrapped.size == 10


def _pump(obs: np.ndarray) -> np.ndarray:
    """Push in the direction of the velocity: reaches MountainCar's goal in ~100 steps."""
    return np.array([1.0 if obs[1] >= 0 else -1.0], np.float32)


def test_sparse_mountain_car_rewards_only_the_goal():
    env = gym.make("vi-flows/SparseMountainCarContinuous-v0")
    assert env.spec.max_episode_steps == 999
    obs, _ = env.reset(seed=0)
    rewards, dense = [], []
    terminated = truncated = False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(_pump(obs))
        rewards.append(float(reward))
        dense.append(info["dense_reward"])
    assert terminated and not truncated and len(rewards) < 999
    assert rewards[-1] == 1.0 and all(r == 0.0 for r in rewards[:-1])
    # The dense reward it replaced: −0.1 a² per step, +100 at the goal.
    assert dense[-1] == pytest.approx(100.0 - 0.1) and dense[0] == pytest.approx(-0.1)


def test_sparse_mountain_car_without_the_goal_earns_nothing():
    env = gym.make("vi-flows/SparseMountainCarContinuous-v0")
    env.reset(seed=0)
    total, steps, truncated = 0.0, 0, False
    while not truncated:
        _, reward, terminated, truncated, _ = env.step(np.array([0.5], np.float32))
        assert not terminated
        total += float(reward)
        steps += 1
    assert steps == 999 and total == 0.0


def test_sparse_goal_reward_scales_the_goal_reward():
    env = SparseGoalReward(DeepSea(3, randomize_actions=False), goal_reward=5.0)
    env.reset(seed=0)
    rewards = [env.step(1)[1] for _ in range(3)]  # DeepSea terminates after N steps
    assert rewards == [0.0, 0.0, 5.0]


def test_vi_rl_trains_on_deep_sea_by_its_id(tmp_path):
    # A fresh interpreter that imports only rl.cli: the vi-flows/* ids must come with rl.envs.
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    argv = ["train", "--env", "vi-flows/DeepSea10-v0", "--algo", "vppo", "--steps", "40"]
    argv += ["--set", "num_envs=2", "--set", "rollout_steps=10", "--set", "hidden=16"]
    argv += ["--set", "tensorboard=false", "--quiet", "--out", str(out)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "rl.cli", *argv],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with (out / "progress.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row in rows:  # every 10-step episode ends inside its rollout: 2 slots, 2 episodes each
        assert int(row["episodes"]) == 2
        assert -0.01 - 1e-6 <= float(row["return_mean"]) <= 0.99 + 1e-6
