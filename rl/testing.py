"""Tiny environments with known returns (used by the tests and handy for debugging)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class CountEnv(gym.Env):
    """Observation [t], reward 1 per step; terminates after ``length`` steps unless ``endless``."""

    def __init__(self, length: int = 3, endless: bool = False, nan_at: int = -1):
        self.length, self.endless, self.nan_at = length, endless, nan_at
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        reward = float("nan") if self.t == self.nan_at else 1.0
        term = (not self.endless) and self.t >= self.length
        return np.array([self.t], np.float32), reward, term, False, {}


class MultiBinaryEnv(CountEnv):
    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.MultiBinary(2)


def register() -> None:
    if "CountTerm-v0" in gym.registry:
        return
    gym.register("CountTerm-v0", entry_point=CountEnv, kwargs={"length": 3})
    gym.register(
        "CountTrunc-v0", entry_point=CountEnv, kwargs={"endless": True}, max_episode_steps=3
    )
    gym.register("CountNaN-v0", entry_point=CountEnv, kwargs={"endless": True, "nan_at": 2})
    gym.register("MultiBinary-v0", entry_point=MultiBinaryEnv)
