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


class ShiftedDiscreteEnv(CountEnv):
    """Discrete(3, start=-1) actions; an action outside {-1, 0, 1} raises, reward = action."""

    def __init__(self):
        super().__init__(length=5)
        self.action_space = gym.spaces.Discrete(3, start=-1)

    def step(self, action):
        if not self.action_space.contains(np.int64(action)):
            raise ValueError(f"invalid action {action!r} for {self.action_space}")
        obs, _, term, trunc, info = super().step(action)
        return obs, float(action), term, trunc, info


class MatrixBoxEnv(CountEnv):
    """A Box action of shape (2, 2), which the action heads cannot represent."""

    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32)


class OpaqueStateEnv(CountEnv):
    """Keeps its step counter inside an object (as MuJoCo keeps MjData): not plain data."""

    class _Sim:
        def __init__(self) -> None:
            self.t = 0

    def __init__(self):
        super().__init__(length=7)
        self.sim = self._Sim()

    def reset(self, *, seed=None, options=None):
        self.sim.t = 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.sim.t += 1
        obs, reward, _, trunc, info = super().step(action)
        return obs, reward, self.sim.t >= self.length, trunc, info


class ShiftedBoxEnv(CountEnv):
    """A one-step bandit on Box(10, 11) scoring −(a − 10.8)²: 0 lies outside the Box, so an
    unmapped unit-noise start clips every action to 10 and every return is the same."""

    def __init__(self):
        super().__init__(length=1)
        self.action_space = gym.spaces.Box(10.0, 11.0, (1,), np.float32)

    def step(self, action):
        obs, _, term, trunc, info = super().step(action)
        return obs, -float((np.asarray(action)[0] - 10.8) ** 2), term, trunc, info


class EmptyObsEnv(CountEnv):
    """An observation Box with no coordinates."""

    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (0,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(0, np.float32), {}

    def step(self, action):
        _, reward, term, trunc, info = super().step(action)
        return np.zeros(0, np.float32), reward, term, trunc, info


def register() -> None:
    if "CountTerm-v0" in gym.registry:
        return
    gym.register("CountTerm-v0", entry_point=CountEnv, kwargs={"length": 3})
    gym.register(
        "CountTrunc-v0", entry_point=CountEnv, kwargs={"endless": True}, max_episode_steps=3
    )
    gym.register("CountNaN-v0", entry_point=CountEnv, kwargs={"endless": True, "nan_at": 2})
    gym.register("MultiBinary-v0", entry_point=MultiBinaryEnv)
    gym.register("ShiftedDiscrete-v0", entry_point=ShiftedDiscreteEnv)
    gym.register("MatrixBox-v0", entry_point=MatrixBoxEnv)
    gym.register("OpaqueState-v0", entry_point=OpaqueStateEnv)
    gym.register("ShiftedBox-v0", entry_point=ShiftedBoxEnv)
    gym.register("EmptyObs-v0", entry_point=EmptyObsEnv)


# Importing the module registers them, so ``rl.testing:CountTerm-v0`` works as an env id.
register()
