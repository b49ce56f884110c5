r"""Environments where exploration, not optimisation, is the bottleneck (issue 14's suite).

* :class:`DeepSea` — Osband et al.'s "deep sea" chain (Osband, Van Roy, Russo & Wen 2019,
  arXiv:1703.07608; bsuite, Osband et al. 2020), written here as a gymnasium env with the
  definition of bsuite's ``bsuite/environments/deep_sea.py``:

  - states: an N × N grid; the agent starts at (row 0, column 0) and every step moves down one
    row, so an episode lasts exactly N steps (terminated, never truncated);
  - actions {0, 1} mean "left" or "right" through a per-*cell* map: at (r, c) the action
    ``mapping[r, c]`` is right, the other left, with ``mapping`` ~ Bernoulli(½)^{N×N} drawn once
    from ``mapping_seed`` exactly as bsuite draws it (fixed for the env's life, independent of
    the reset seed; with ``randomize_actions=False`` action 1 is right everywhere, bsuite's
    debug mode);
  - right: column + 1 (clipped to N − 1) and reward −``unscaled_move_cost``/N; left: column − 1
    (clipped to 0) and no cost;
  - treasure: +1 when the agent takes "right" in the last column, which it can only reach on
    the last row by going right at every step;
  - ``deterministic=False`` (bsuite's deep_sea_stochastic): a right move only succeeds with
    probability 1 − 1/N (the cost is paid anyway), and N(0, 1) noise is added to the reward
    when leaving the last row from column 0 or N − 1.

  The optimal return is therefore 1 − ``unscaled_move_cost`` = 0.99 for every N (N right moves
  cost N·0.01/N), and (1 − 1/N)^{N−1} − 0.01 in expectation for the stochastic version
  (:attr:`DeepSea.optimal_return`); of the 2^N action sequences exactly one earns the treasure,
  and every other policy returns ≤ 0, so a dithering learner needs ~2^N episodes.
  Observations are the one-hot N × N grid flattened to N² floats (rl/ needs a flat Box); the
  observation after the last step is all zeros, as in bsuite.

* :class:`SparseGoalReward` — reward only at the goal: ``goal_reward`` on the step that
  *terminates* the episode and 0 on every other step (no action cost). Valid for environments
  whose termination means success (MountainCar, MountainCarContinuous, Acrobot); a time-limit
  truncation earns nothing. The original reward is kept in ``info["dense_reward"]``.

Registered ids (gymnasium's registry, at import of this module — there are no package entry
points, so import ``rl.explore_envs`` first, or name the module in the id for ``gym.make``,
``gym.make("rl.explore_envs:vi-flows/DeepSea20-v0")``; ``gym.spec`` does not accept that form):

* ``vi-flows/DeepSea-v0`` (size 10; pass ``size=`` etc. to ``gym.make``) and
  ``vi-flows/DeepSea{10,20,30}-v0``;
* ``vi-flows/SparseMountainCarContinuous-v0``: MountainCarContinuous-v0 (999-step limit) with
  :class:`SparseGoalReward`, +1 at the goal.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.continuous_mountain_car import Continuous_MountainCarEnv

__all__ = [
    "DeepSea",
    "SparseGoalReward",
    "sparse_mountain_car_continuous",
    "DEEP_SEA_SIZES",
    "register",
]

#: The DeepSea sizes registered as ``vi-flows/DeepSea{N}-v0``.
DEEP_SEA_SIZES = (10, 20, 30)


class DeepSea(gym.Env):
    """bsuite's DeepSea of size N as a gymnasium env (see the module docstring for the rules).

    Args:
        size: N ≥ 2.
        deterministic: False for the stochastic ("windy") version.
        unscaled_move_cost: the total cost of N right moves (each costs this / N).
        randomize_actions: draw the per-cell action map (False: action 1 is right everywhere).
        mapping_seed: seed of the action map.

    >>> env = DeepSea(3, randomize_actions=False)
    >>> obs, _ = env.reset(seed=0)
    >>> [env.step(1)[1] for _ in range(3)] == [-0.01 / 3, -0.01 / 3, 1 - 0.01 / 3]
    True
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        size: int = 10,
        deterministic: bool = True,
        unscaled_move_cost: float = 0.01,
        randomize_actions: bool = True,
        mapping_seed: int = 0,
    ) -> None:
        if int(size) < 2:
            raise ValueError(f"size must be an integer >= 2, got {size}")
        if not unscaled_move_cost >= 0:
            raise ValueError(f"unscaled_move_cost must be >= 0, got {unscaled_move_cost}")
        self.size = int(size)
        self.deterministic = bool(deterministic)
        self.unscaled_move_cost = float(unscaled_move_cost)
        if randomize_actions:
            # bsuite's draw, so a mapping_seed gives bsuite's map for that seed bit for bit.
            rng = np.random.RandomState(mapping_seed)
            self.action_mapping = rng.binomial(1, 0.5, (self.size, self.size))
        else:
            self.action_mapping = np.ones((self.size, self.size), dtype=np.int64)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.size * self.size,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.row, self.column = 0, 0

    @property
    def optimal_return(self) -> float:
        """The (expected) return of the optimal policy, as bsuite defines it."""
        n = self.size
        no_cost = 1.0 if self.deterministic else (1.0 - 1.0 / n) ** (n - 1)
        return no_cost - self.unscaled_move_cost

    def right_action(self, row: int, column: int) -> int:
        """The action that means "right" in cell (row, column)."""
        return int(self.action_mapping[row, column])

    def _observation(self) -> np.ndarray:
        obs = np.zeros(self.size * self.size, dtype=np.float32)
        if self.row < self.size:  # after the last step: the all-zero observation
            obs[self.row * self.size + self.column] = 1.0
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.row, self.column = 0, 0
        return self._observation(), {}

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        if self.row >= self.size:
            raise RuntimeError("DeepSea.step called after the episode ended; call reset()")
        n = self.size
        right = int(action) == self.action_mapping[self.row, self.column]
        reward = 0.0
        treasure = bool(right and self.column == n - 1)
        if treasure:
            reward += 1.0
        if not self.deterministic and self.row == n - 1 and self.column in (0, n - 1):
            reward += float(self.np_random.standard_normal())
        if right:
            if self.deterministic or self.np_random.random() > 1.0 / n:
                self.column = min(self.column + 1, n - 1)
            reward -= self.unscaled_move_cost / n
        else:
            self.column = max(self.column - 1, 0)
        self.row += 1
        terminated = self.row == n
        return self._observation(), reward, terminated, False, {"treasure": treasure}


class SparseGoalReward(gym.Wrapper):
    """Reward ``goal_reward`` on a terminating (goal) step and 0 otherwise; no action cost.

    Args:
        env: an environment whose termination means the goal was reached.
        goal_reward: the reward for reaching the goal.
    """

    def __init__(self, env: gym.Env, goal_reward: float = 1.0) -> None:
        super().__init__(env)
        self.goal_reward = float(goal_reward)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = {**info, "dense_reward": float(reward)}
        return obs, self.goal_reward if terminated else 0.0, terminated, truncated, info


def sparse_mountain_car_continuous(goal_reward: float = 1.0, **kwargs: Any) -> gym.Env:
    """MountainCarContinuous (``kwargs`` go to its constructor) rewarded only at the goal."""
    return SparseGoalReward(Continuous_MountainCarEnv(**kwargs), goal_reward=goal_reward)


def register() -> None:
    """Add this module's ids to gymnasium's registry (idempotent; runs at import)."""
    deep_sea = "rl.explore_envs:DeepSea"
    entries: dict[str, dict[str, Any]] = {
        "vi-flows/DeepSea-v0": {"entry_point": deep_sea, "kwargs": {"size": 10}},
        "vi-flows/SparseMountainCarContinuous-v0": {
            "entry_point": "rl.explore_envs:sparse_mountain_car_continuous",
            "max_episode_steps": 999,
        },
    }
    for n in DEEP_SEA_SIZES:
        entries[f"vi-flows/DeepSea{n}-v0"] = {"entry_point": deep_sea, "kwargs": {"size": n}}
    for env_id, spec in entries.items():
        if env_id not in gym.registry:
            gym.register(env_id, **spec)


register()
