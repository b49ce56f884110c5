"""The update rules, registered by name: each pairs a config class with an algorithm class.

The ``v``-prefixed algorithms fit a posterior q_φ over the policy parameters; their plain forms use
a point mass (``posterior = "point"``) and no KL/entropy term, so comparisons are like for like.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rl.algorithms.pg import PGConfig, PolicyGradient
from rl.algorithms.ppo import PPO, PPOConfig
from rl.algorithms.svpg import SVPG, SVPGConfig
from rl.algorithms.trpo import TRPO, TRPOConfig
from vi_flows.registry import Registry

__all__ = ["ALGORITHMS", "PLAIN", "Spec", "check_config", "default_config"]


def _plain(variational: str) -> str:
    return f"the plain (point-mass) algorithm (use {variational!r} for a posterior)"


#: What the plain (point-mass) forms fix: a point mass on the MLP's weights.
PLAIN: dict[str, str] = {"posterior": "point", "policy": "bnn"}
#: Without a posterior density there is no entropy for auto α to target (α is unused there).
NO_DENSITY = {"alpha_schedule": "constant"}


@dataclass(frozen=True)
class Spec:
    """An algorithm by name: its config class, its update rule and what it fixes."""

    config: type
    algorithm: type
    family: str
    """Key of its settings in the presets (rl/presets/*.yaml): pg, trpo, ppo or svpg."""
    fixed: Mapping[str, str] = field(default_factory=dict)
    """Config fields the algorithm requires (set by :func:`default_config`, checked by
    :func:`check_config`)."""
    role: str = "a variational algorithm"
    """What it is, for the message when a fixed field is overridden."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Config fields whose default differs for this algorithm (set by :func:`default_config`,
    free to override)."""


#: The algorithms by name (:class:`vi_flows.registry.Registry`).
ALGORITHMS: Registry[Spec] = Registry("algorithm")
ALGORITHMS.register(
    "reinforce", Spec(PGConfig, PolicyGradient, "pg", PLAIN, _plain("vreinforce"), NO_DENSITY)
)
ALGORITHMS.register("vreinforce", Spec(PGConfig, PolicyGradient, "pg"))
ALGORITHMS.register("trpo", Spec(TRPOConfig, TRPO, "trpo", PLAIN, _plain("vtrpo"), NO_DENSITY))
ALGORITHMS.register("vtrpo", Spec(TRPOConfig, TRPO, "trpo"))
ALGORITHMS.register("ppo", Spec(PPOConfig, PPO, "ppo", PLAIN, _plain("vppo"), NO_DENSITY))
ALGORITHMS.register("vppo", Spec(PPOConfig, PPO, "ppo"))
ALGORITHMS.register(
    "svpg",
    Spec(
        SVPGConfig,
        SVPG,
        "svpg",
        {"posterior": "point", "policy": "particles"},
        "SVPG over policy particles",
        NO_DENSITY,
    ),
)


def default_config(algo: str, **fields: Any) -> Any:
    """The algorithm's config with ``algo``, the fields it fixes and its own defaults set
    (the plain forms and svpg default to a constant α: they have no posterior density, so the
    variational algorithms' default ``alpha_schedule="auto"`` has nothing to hold).

    Raises:
        UnknownNameError: for an unknown algorithm name (a ValueError).
    """
    spec = ALGORITHMS.get(algo)
    return spec.config(**{"algo": algo, **spec.defaults, **spec.fixed, **fields})


def check_config(cfg: Any) -> None:
    """Raise ValueError when ``cfg`` is not its algorithm's config class, overrides a field its
    algorithm fixes, or asks for particles outside SVPG."""
    spec = ALGORITHMS.get(cfg.algo)
    if type(cfg) is not spec.config:
        raise ValueError(
            f"algo {cfg.algo!r} needs a {spec.config.__name__}, got a {type(cfg).__name__} "
            "(choose the algorithm with --algo, not by changing the algo field)"
        )
    if cfg.policy == "particles" and spec.config is not SVPGConfig:
        raise ValueError(
            f"policy='particles' is SVPG's (--algo svpg); {cfg.algo!r} takes bnn, action-mean or "
            "auxiliary"
        )
    got = {name: getattr(cfg, name) for name in spec.fixed}
    if got != dict(spec.fixed):
        needs = ", ".join(f"{k}={v!r}" for k, v in spec.fixed.items())
        have = ", ".join(f"{k}={v!r}" for k, v in got.items())
        raise ValueError(f"{cfg.algo!r} is {spec.role}: it needs {needs}, got {have}")
