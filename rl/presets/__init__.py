"""Tuned settings as data: ``rl/presets/*.yaml``, keyed by environment and algorithm family.

Each file maps env ids to ``{"rl": {family: fields}, "sb3-zoo": {algo: SB3 kwargs}}`` (top-level
keys that start with ``.`` hold YAML anchors only). :func:`env_preset` is the one translator into
rl's frozen configs; :func:`sb3_zoo` hands the benchmarks the Stable-Baselines3 side as written.

>>> env_preset("Pendulum-v1", "vppo")["minibatch_size"]
64
>>> env_preset("Acrobot-v1", "ppo")
{}
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

from rl.algorithms import ALGORITHMS

__all__ = ["LINEAR_PREFIX", "env_ids", "env_preset", "sb3_zoo"]

#: rl-baselines3-zoo's notation for a value that decays linearly to 0 over training.
LINEAR_PREFIX = "lin_"
#: Config fields that accept a ``lin_`` value, and the field that switches the decay on.
_LINEAR_FIELDS = {"lr": "anneal_lr"}


@functools.cache
def _tables() -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(__file__).parent.glob("*.yaml")):
        for env_id, entry in (yaml.safe_load(path.read_text()) or {}).items():
            if env_id.startswith("."):
                continue
            if env_id in tables:
                raise ValueError(f"{path.name}: environment {env_id!r} is also in another preset")
            unknown = set(entry) - {"rl", "sb3-zoo"}
            if unknown:
                raise ValueError(f"{path.name}: {env_id}: unknown sections {sorted(unknown)}")
            tables[env_id] = entry
    return tables


def env_ids() -> list[str]:
    """The environments that have presets."""
    return sorted(_tables())


def _translate(name: str, value: Any) -> dict[str, Any]:
    """One preset entry as config fields: lists become tuples, ``lin_X`` a decay from X."""
    if isinstance(value, list):
        return {name: tuple(value)}
    if isinstance(value, str) and value.startswith(LINEAR_PREFIX):
        if name not in _LINEAR_FIELDS:
            raise ValueError(
                f"preset field {name!r}: {value!r} is a linear schedule, which only "
                f"{', '.join(_LINEAR_FIELDS)} accept"
            )
        return {name: float(value[len(LINEAR_PREFIX) :]), _LINEAR_FIELDS[name]: True}
    return {name: value}


def env_preset(env_id: str, algo: str) -> dict[str, Any]:
    """rl's config fields for ``env_id`` and the algorithm ``algo`` ({} without a preset).

    The family's entries (``ppo`` covers ppo and vppo, ``pg`` reinforce and vreinforce, …) override
    the env's ``common`` ones.

    Raises:
        UnknownNameError: for an unknown algorithm.
    """
    family = ALGORITHMS.get(algo).family
    table = _tables().get(env_id, {}).get("rl", {})
    fields: dict[str, Any] = {}
    for name, value in {**table.get("common", {}), **table.get(family, {})}.items():
        fields.update(_translate(name, value))
    return fields


def sb3_zoo(env_id: str, algo: str) -> dict[str, Any]:
    """rl-baselines3-zoo's Stable-Baselines3 kwargs for ``env_id`` and ``algo`` (``ppo``,
    ``trpo``), as in the preset file (``lin_`` strings and class names untranslated).

    Raises:
        KeyError: when the presets have no such entry.
    """
    zoo = _tables().get(env_id, {}).get("sb3-zoo", {})
    if algo not in zoo:
        raise KeyError(f"no sb3-zoo preset for {env_id} / {algo}")
    return dict(zoo[algo])
