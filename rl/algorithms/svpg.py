r"""SVPG (Liu et al. 2017): n policy particles moved by Stein variational gradient descent.

Env slot j runs particle j mod n. The score of particle θ_i under p(θ) ∝ exp(R(θ)/α) is the
adapter's ∇_θ log p̃(θ_i) = (1/α) ∂R̂/∂θ_i (autograd through the same surrogate as the other
algorithms), and the particles follow the SVGD direction over their flattened weights

.. math:: φ(θ_i) = \frac{1}{n} \sum_j \big[k(θ_j, θ_i)\, ∇ \log p̃(θ_j) + ∇_{θ_j} k(θ_j, θ_i)\big]

(RBF kernel, median bandwidth; :func:`vi_flows.svgd.svgd_direction_from_score`), applied as the
negative gradient of an Adam step. The action log-std (Box actions) follows the plain gradient.

Under several ranks the n particles are *replicated*, not sharded: n is small (the kernel is
n × n) while the samples are many, so what is split is the data. Env slot j of every rank runs
particle j mod n; each rank computes its share of every particle's score (its samples over the
global sample count), the shares are all-reduced, and every rank then computes the same SVGD
direction and Adam step, equal to one process's on the concatenated batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rl.adapter import clipped_objective, policy_log_density
from rl.algorithms.base import Algorithm, adam
from rl.buffer import Batch
from rl.config import TrainConfig, check_ranges, nonnegative_finite, positive_finite
from rl.optim import check_finite_gradient
from rl.policy_api import PolicyFamily
from rl.temperature import AutoTemperature
from vi_flows import distributed
from vi_flows.svgd import svgd_direction_from_score

__all__ = ["SVPGConfig", "SVPG"]


@dataclass(frozen=True)
class SVPGConfig(TrainConfig):
    """SVPG settings."""

    num_particles: int = 4
    """Number n of policy particles (num_envs should be a multiple of it)."""
    particle_init_std: float = 0.01
    """Particles start at θ₀ + N(0, particle_init_std²)."""
    epochs: int = 4
    """SVGD steps per batch (the score uses PPO's clipped ratio, REINFORCE at the first step)."""
    clip_coef: float = 0.2
    """Ratio clipping ε of the score's surrogate."""
    bandwidth: float = 0.0
    """RBF bandwidth h (0: the median heuristic)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, _RANGES)
        if self.num_particles > self.num_envs:  # particle k acts in the slots j ≡ k (mod n)
            raise ValueError(
                f"num_particles must be <= num_envs (particle k acts in the env slots j with "
                f"j mod num_particles = k; more particles than slots leaves some without "
                f"samples), got {self.num_particles} > {self.num_envs}"
            )


_RANGES = {
    "num_particles": (lambda x: x >= 1, "an integer >= 1"),
    "particle_init_std": (nonnegative_finite, ">= 0 and finite"),
    "epochs": (lambda x: x >= 1, "an integer >= 1"),
    "clip_coef": (positive_finite, "> 0 and finite"),
    "bandwidth": (nonnegative_finite, ">= 0 and finite (0: the median heuristic)"),
}


class SVPG(Algorithm):
    """The update of svpg."""

    def __init__(self, cfg: SVPGConfig, policy: PolicyFamily, critic: nn.Module) -> None:
        super().__init__(cfg, policy, critic)
        self.opt = adam(policy.parameters(), lr=cfg.lr, eps=1e-5)

    def update(
        self, batch: Batch, alpha: float, temperature: AutoTemperature | None = None
    ) -> dict[str, float]:
        cfg, policy = self.cfg, self.policy
        objective = clipped_objective(batch.logp, batch.advantages, cfg.clip_coef)
        # Several ranks: log p̃ is normalised by the global sample count M (α M / M_r here gives
        # K / (M α) in its scale), so the ranks' shares of each score add up.
        share = len(batch) / distributed.all_reduce_sum(torch.tensor(float(len(batch)))).item()
        # The θ table is the n particles (Particles); differentiate at the leaf that holds them.
        q, _, log_p = policy_log_density(policy, batch, objective, alpha / share)
        particles = q.theta
        n = particles.shape[0]
        total = torch.zeros(())
        for _ in range(cfg.epochs):
            self.opt.zero_grad()
            total = log_p(particles).sum()
            # α · (−Σ log p̃) gives the other parameters (log-std) the plain policy gradient.
            (-alpha * total / n).backward()
            distributed.all_reduce_grads(policy.parameters(), weights=1.0)
            grads = [p.grad for p in policy.parameters() if p.grad is not None]
            check_finite_gradient(float(torch.stack([g.norm() for g in grads]).norm()))
            score = particles.grad.detach() * (-n / alpha)
            bandwidth = cfg.bandwidth if cfg.bandwidth > 0 else None
            phi = svgd_direction_from_score(particles.detach(), score, "rbf", bandwidth)
            particles.grad = -alpha * phi
            self.opt.step()
        total = distributed.all_reduce_sum(total.detach().clone())
        stats = self.diagnostics(batch)
        value_loss = self.fit_value(batch)
        return {
            **stats,
            "policy_loss": -float(total.detach()) * alpha / n,
            "value_loss": value_loss,
        }
