"""REINFORCE and V-REINFORCE (§3): the policy gradient of Eq. 5 with a learned value baseline.

Each update takes ``epochs`` full-batch Adam steps on α·kl_loss with the REINFORCE surrogate
s_i = log π_θ(a_i|s_i) Â_i (Eq. 4 with Eq. 5); REINFORCE is the point-mass case. Â comes from
GAE(γ, λ) against V(s) (λ = 1: Monte Carlo returns minus the baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rl.algorithms.base import Algorithm, adam, adam_step, reinforce_loss
from rl.buffer import Batch
from rl.config import TrainConfig, check_ranges
from rl.policy_api import PolicyFamily
from rl.temperature import AutoTemperature
from vi_flows import distributed

__all__ = ["PGConfig", "PolicyGradient"]


@dataclass(frozen=True)
class PGConfig(TrainConfig):
    """REINFORCE / V-REINFORCE settings."""

    epochs: int = 1
    """Full-batch gradient steps per rollout (1 is vanilla REINFORCE)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, {"epochs": (lambda x: x >= 1, "an integer >= 1")})


class PolicyGradient(Algorithm):
    """The update of reinforce and vreinforce."""

    def __init__(self, cfg: PGConfig, policy: PolicyFamily, critic: nn.Module) -> None:
        super().__init__(cfg, policy, critic)
        self.opt = adam(policy.parameters(), lr=cfg.lr)

    def update(
        self, batch: Batch, alpha: float, temperature: AutoTemperature | None = None
    ) -> dict[str, float]:
        loss, norm = torch.zeros(()), 0.0
        dual: dict[str, float] = {}
        for _ in range(self.cfg.epochs):
            loss = reinforce_loss(self, batch, alpha)
            norm = adam_step(loss, self.opt, self.cfg.max_grad_norm)
            if temperature is not None:  # auto α: a dual step per optimizer step
                dual = self.dual_step(temperature, batch.obs)
                alpha = temperature.alpha
        stats = self.diagnostics(batch)
        value_loss = self.fit_value(batch)
        return {
            **stats,
            **dual,
            "policy_loss": float(distributed.all_reduce_sum(loss.detach().clone())),
            "value_loss": value_loss,
            "grad_norm": norm,
        }
