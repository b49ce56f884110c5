"""Checkpoints as tensors and plain data: environments are captured as attributes, not pickled.

A checkpoint must load with ``torch.load(weights_only=True)`` (see :mod:`vi_flows.runfiles`), so it
holds tensors, numbers, strings and containers of them only. Numpy arrays travel as tensors tagged
``{"__numpy__": t}`` (dtype kept; a numpy scalar as ``{"__numpy_scalar__": t}``) and come back as
the same arrays.

Environments are rebuilt from the config and re-seeded, then their state is restored: for each
layer of each env slot (the wrappers and the unwrapped env) every instance attribute that is plain
data (the physics state, time-limit counters, order/checker flags, the episode's constants) and
the bit-generator state of every ``numpy.random.Generator`` attribute. That is the whole state of
environments written in Python and numpy (gymnasium's classic control, the tests'
environments), so their resume is bit-for-bit. Environments whose state lives in other objects
(MuJoCo's ``MjData``, Box2D's ``world``) are *opaque*: :func:`load_env_state` names those
attributes and the trainer restarts the in-flight episodes (reset with a seed derived from the
run's seed and update) instead of continuing them mid-episode.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import EnvSpec

__all__ = ["to_plain", "from_plain", "env_state", "load_env_state"]

_SCALARS = (bool, int, float, str, type(None))
# Objects an env holds that carry no state a step depends on (spaces are only sampled by
# ``action_space.sample()``, which training never calls).
_STATELESS = (gym.Space, EnvSpec, gym.Env)


def _is_plain(value: Any) -> bool:
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biufc"  # torch.from_numpy's dtypes (not str, bytes, object)
    if isinstance(value, np.generic):
        return isinstance(value, np.number | np.bool_)
    if isinstance(value, tuple | list):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str | int) and _is_plain(v) for k, v in value.items())
    return False


def to_plain(obj: Any) -> Any:
    """``obj`` with numpy arrays and scalars replaced by tagged tensors (see the module doc)."""
    if isinstance(obj, np.ndarray):
        return {"__numpy__": torch.from_numpy(np.ascontiguousarray(obj).copy())}
    if isinstance(obj, np.generic):
        return {"__numpy_scalar__": torch.from_numpy(np.asarray(obj).copy())}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def from_plain(obj: Any) -> Any:
    """Inverse of :func:`to_plain`."""
    if isinstance(obj, dict):
        if len(obj) == 1 and "__numpy__" in obj:
            return obj["__numpy__"].numpy().copy()
        if len(obj) == 1 and "__numpy_scalar__" in obj:
            return obj["__numpy_scalar__"].numpy()[()]
        return {k: from_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return type(obj)(from_plain(v) for v in obj)
    return obj


def _layers(env: gym.Env) -> list[gym.Env]:
    """The wrapper chain of ``env``, outermost first, ending with the unwrapped env."""
    chain = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    return chain


def env_state(envs: Any) -> dict[str, Any]:
    """The state of every env slot as plain data (numpy left in; :func:`to_plain` tags it).

    Only gymnasium's SyncVectorEnv exposes its slots; any other vector env (EnvPool's, whose state
    lives in C++) is one opaque whole.
    """
    if not isinstance(envs, gym.vector.SyncVectorEnv):
        return {"slots": [], "vector": {}, "opaque": [f"{type(envs).__name__} (whole)"]}
    slots, opaque = [], set()
    for env in envs.envs:
        layers = []
        for layer in _layers(env):
            attrs, rngs = {}, {}
            for name, value in vars(layer).items():
                if name == "env":
                    continue
                if isinstance(value, np.random.Generator):
                    rngs[name] = value.bit_generator.state
                elif _is_plain(value):
                    attrs[name] = value
                elif not isinstance(value, _STATELESS):
                    opaque.add(f"{type(layer).__name__}.{name}")
            layers.append({"type": type(layer).__name__, "attrs": attrs, "rngs": rngs})
        slots.append(layers)
    vector = {k: v for k, v in vars(envs).items() if _is_plain(v)}
    return {"slots": slots, "vector": vector, "opaque": sorted(opaque)}


def _generator(state: dict[str, Any]) -> np.random.Generator:
    kind = getattr(np.random, str(state.get("bit_generator")), None)
    if not (isinstance(kind, type) and issubclass(kind, np.random.BitGenerator)):
        raise ValueError(f"checkpoint: unknown numpy bit generator {state.get('bit_generator')!r}")
    bit_generator = kind()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def load_env_state(envs: Any, state: dict[str, Any]) -> list[str]:
    """Restore :func:`env_state` into freshly built and reset envs of the same config.

    Returns:
        The opaque attributes (``Layer.name``) whose state could not be saved; empty when the
        restore is exact.

    Raises:
        ValueError: when the checkpoint's env slots or wrapper layers differ from ``envs``.
    """
    slots = state["slots"]
    if not isinstance(envs, gym.vector.SyncVectorEnv):
        if slots:
            raise ValueError("checkpoint has gymnasium env slots, the config another env backend")
        return list(state["opaque"])
    if not slots and state["opaque"]:
        raise ValueError(f"checkpoint envs were {state['opaque'][0]}, the config's gymnasium")
    if len(slots) != len(envs.envs):
        raise ValueError(f"checkpoint has {len(slots)} env slots, the config {len(envs.envs)}")
    for env, saved in zip(envs.envs, slots, strict=True):
        layers = _layers(env)
        names = [type(layer).__name__ for layer in layers]
        if names != [layer["type"] for layer in saved]:
            raise ValueError(
                f"checkpoint env layers {[layer['type'] for layer in saved]} differ from {names}"
            )
        for layer, data in zip(layers, saved, strict=True):
            for name, value in data["attrs"].items():
                setattr(layer, name, value)
            for name, rng in data["rngs"].items():
                setattr(layer, name, _generator(rng))
    for name, value in state["vector"].items():
        setattr(envs, name, value)
    return list(state["opaque"])
