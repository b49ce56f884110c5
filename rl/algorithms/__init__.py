"""The update rules, registered by name: each pairs a config class with an algorithm class.

The ``v``-prefixed algorithms fit a posterior q_φ over the policy parameters; their plain forms use
a point mass (``posterior = "point"``) and no KL/entropy term, so comparisons are like for like.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rl.algorithms.pg import PGConfig, PolicyGradient
from rl.algorithms.ppo import PPO, PPOConfig
from rl.algorithms.svpg import SVPG, SVPGConfig
from rl.algorithms.trpo import TRPO, TRPOConfig

__all__ = ["ALGORITHMS", "Spec", "default_config"]


@dataclass(frozen=True)
class Spec:
    config: type
    algorithm: type
    variational: bool


ALGORITHMS: dict[str, Spec] = {
    "reinforce": Spec(PGConfig, PolicyGradient, False),
    "vreinforce": Spec(PGConfig, PolicyGradient, True),
    "trpo": Spec(TRPOConfig, TRPO, False),
    "vtrpo": Spec(TRPOConfig, TRPO, True),
    "ppo": Spec(PPOConfig, PPO, False),
    "vppo": Spec(PPOConfig, PPO, True),
    "svpg": Spec(SVPGConfig, SVPG, False),
}


def default_config(algo: str, **fields: Any) -> Any:
    """The algorithm's config with ``algo`` set and the plain forms on a point mass.

    Raises:
        ValueError: for an unknown algorithm name.
    """
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algo!r}; known: {', '.join(ALGORITHMS)}")
    spec = ALGORITHMS[algo]
    base: dict[str, Any] = {"algo": algo}
    if not spec.variational:
        base["posterior"] = "point"
    if algo == "svpg":
        base["policy"] = "particles"
    return spec.config(**base, **fields)
