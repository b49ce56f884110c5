"""EnvPool as an optional vector-env backend, seen through gymnasium's SAME_STEP autoreset.

EnvPool (Weng et al. 2022) steps a batch of environments in C++. Its gymnasium interface resets
an ended episode on the *next* step (gymnasium's NEXT_STEP mode: that step ignores the action and
returns the first observation with reward 0). :class:`SameStepPool` instead resets the ended slots
right away, by EnvPool's partial ``reset(env_ids)``, and returns what :func:`rl.envs.make_envs`'s
vector env returns: the first observation of the new episode in the ended slots and the last
observation of the old one in ``info["final_obs"]``. The collector cannot tell the two apart.

EnvPool's classic-control and MuJoCo tasks follow gymnasium's definitions; on Pendulum-v1 and
Swimmer-v5 the transitions from a shared state agree to float rounding (tests/test_envpool_env.py).
EnvPool seeds its environments when the pool is built (slot i gets ``seed + i``), so ``reset``'s
``seed`` is ignored; it steps on one thread, as the rest of a run does (``torch.set_num_threads``).

EnvPool is optional (``pip install envpool``, an extra of this package): nothing imports it unless
``env_backend="envpool"`` is asked for.
"""

from __future__ import annotations

import difflib
import warnings
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

__all__ = ["NextStepPool", "SameStepPool", "envpool_envs"]


class NextStepPool(Protocol):
    """What :class:`SameStepPool` needs of an EnvPool gymnasium pool (``envpool.make_gymnasium``).

    ``step`` and ``reset`` return rows tagged by ``info["env_id"]``; ``reset(env_ids)`` resets only
    those slots.
    """

    observation_space: gym.Space
    action_space: gym.Space

    def reset(self, env_id: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]: ...

    def step(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]: ...

    def close(self) -> None: ...


def _by_slot(rows: np.ndarray, env_id: np.ndarray) -> np.ndarray:
    """``rows`` reordered so that row j belongs to slot ``env_id``'s j-th smallest id."""
    if np.all(env_id[:-1] < env_id[1:]):  # the common case: already in slot order
        return rows
    return rows[np.argsort(env_id, kind="stable")]


class SameStepPool:
    """A NEXT_STEP pool presented as a gymnasium vector env with SAME_STEP autoreset.

    Args:
        pool: an EnvPool gymnasium pool (or anything that implements :class:`NextStepPool`).
        num_envs: the number of slots of ``pool``.
    """

    metadata: dict[str, Any] = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(self, pool: NextStepPool, num_envs: int) -> None:
        self.pool, self.num_envs = pool, num_envs
        self.single_observation_space = pool.observation_space
        self.single_action_space = pool.action_space
        self.observation_space = gym.vector.utils.batch_space(pool.observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(pool.action_space, num_envs)
        self._dtype = pool.action_space.dtype

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset every slot (the pool was seeded when it was built; ``seed`` is not used)."""
        obs, info = self.pool.reset()
        return _by_slot(obs, np.asarray(info["env_id"])), {}

    def step(self, actions: np.ndarray):
        """One step of every slot; slots whose episode ended start the next one in this step."""
        obs, reward, term, trunc, info = self.pool.step(np.asarray(actions, dtype=self._dtype))
        ids = np.asarray(info["env_id"])
        obs, reward, term, trunc = (
            _by_slot(np.asarray(x), ids) for x in (obs, reward, term, trunc)
        )
        ended = np.logical_or(term, trunc)
        out: dict[str, Any] = {}
        if ended.any():
            done = np.nonzero(ended)[0]
            final = np.empty(self.num_envs, dtype=object)  # gymnasium's layout: None elsewhere
            final[done] = list(obs[done])
            fresh, fresh_info = self.pool.reset(done.astype(np.int32))
            obs = obs.copy()
            obs[np.asarray(fresh_info["env_id"])] = fresh
            out = {"final_obs": final, "_final_obs": ended}
        return obs, reward, term, trunc, out

    def close(self) -> None:
        self.pool.close()


def envpool_envs(env_id: str, num_envs: int, seed: int) -> SameStepPool:
    """``num_envs`` slots of EnvPool's ``env_id`` (one thread), as a SAME_STEP vector env.

    Raises:
        ValueError: when envpool is not installed or has no task ``env_id``.
    """
    try:
        import envpool
    except ImportError:
        raise ValueError(
            "env_backend='envpool' needs the envpool package (pip install envpool); "
            "env_backend='gymnasium' needs nothing extra"
        ) from None
    known = envpool.list_all_envs()
    if env_id not in known:
        near = difflib.get_close_matches(env_id, known, n=5, cutoff=0.5)
        hint = f"; close: {', '.join(near)}" if near else ""
        raise ValueError(
            f"env id {env_id!r} is not an EnvPool task (envpool.list_all_envs() lists all "
            f"{len(known)}{hint}); use env_backend='gymnasium'"
        )
    with warnings.catch_warnings():  # EnvPool declares float64 Box bounds of float32 spaces
        warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32")
        pool = envpool.make_gymnasium(env_id, num_envs=num_envs, seed=seed, num_threads=1)
        return SameStepPool(pool, num_envs)
