"""rl.envs.SameStepSyncVectorEnv: gymnasium's SAME_STEP SyncVectorEnv, step for step."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from rl.envs import SameStepSyncVectorEnv, make_envs


def _assert_same(ours: Any, ref: Any, where: str) -> None:
    """Equal values, types and dtypes, through tuples, dicts and object arrays (gymnasium's
    infos)."""
    assert type(ours) is type(ref), where
    if isinstance(ref, tuple):
        assert len(ours) == len(ref), where
        for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
            _assert_same(a, b, f"{where}[{i}]")
    elif isinstance(ref, dict):
        assert sorted(ours) == sorted(ref), where
        for key in ref:
            _assert_same(ours[key], ref[key], f"{where}[{key!r}]")
    elif isinstance(ref, np.ndarray):
        assert ours.dtype == ref.dtype and ours.shape == ref.shape, where
        if ref.dtype == object:
            for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
                _assert_same(a, b, f"{where}[{i}]")
        else:
            np.testing.assert_array_equal(ours, ref, err_msg=where)
    else:
        assert ours == ref, where


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("CartPole-v1", {}),  # Discrete actions, endings by termination at random times
        ("Pendulum-v1", {"max_episode_steps": 7}),  # Box actions, endings by truncation
        ("vi-flows/SparseMountainCarContinuous-v0", {"max_episode_steps": 5}),  # env infos
        ("vi-flows/DeepSea-v0", {}),  # Discrete, fixed-length episodes, a one-hot state
    ],
)
def test_same_step_sync_vector_env_equals_gymnasiums(env_id, kwargs):
    """Same seeds, same actions: observations, rewards, endings and the whole info dicts
    (final observations and infos, the envs' own keys, the masks) agree with gymnasium's
    SAME_STEP SyncVectorEnv, with the same types and dtypes, and every returned array is the
    caller's own (later steps and a reset leave it as it was)."""
    n, seed = 3, 5
    fns = [lambda: gym.make(env_id, **kwargs)] * n
    mode = gym.vector.AutoresetMode.SAME_STEP
    ours = SameStepSyncVectorEnv(fns, autoreset_mode=mode)
    ref = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
    _assert_same(ours.reset(seed=seed), ref.reset(seed=seed), "reset")
    ref.action_space.seed(0)
    ends, kept = np.zeros(n, dtype=int), []
    for t in range(150):
        action = ref.action_space.sample()
        got, want = ours.step(action), ref.step(action)
        _assert_same(got, want, f"step {t}")
        ends += want[2] | want[3]
        kept.append((got[:4], [x.copy() for x in want[:4]]))
    assert ends.min() >= 2  # every slot ended, and was reset, at least twice
    _assert_same(ours.reset(seed=seed + 1), ref.reset(seed=seed + 1), "second reset")
    for t, (arrays, wanted) in enumerate(kept):  # what the caller got stays what it was
        for array, want in zip(arrays, wanted, strict=True):
            np.testing.assert_array_equal(array, want, err_msg=f"step {t}")
    ours.close()
    ref.close()


def test_make_envs_builds_the_lean_vector_env_whose_other_modes_are_gymnasiums():
    envs = make_envs("CartPole-v1", 2, seed=0)
    assert type(envs) is SameStepSyncVectorEnv
    envs.close()
    # another autoreset mode takes gymnasium's own step (NEXT_STEP: a reset step after an end)
    fns = [lambda: gym.make("CartPole-v1")] * 2
    ours = SameStepSyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    ref = gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    _assert_same(ours.reset(seed=1), ref.reset(seed=1), "reset")
    for t in range(40):
        _assert_same(ours.step(np.array([1, 1])), ref.step(np.array([1, 1])), f"step {t}")
    ours.close()
    ref.close()
