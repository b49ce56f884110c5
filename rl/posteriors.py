"""Posteriors over policy parameters that are not plain vi_flows flows.

Each provides what :func:`vi_flows.objectives.kl_loss` uses of a flow,
``q(ξ) -> (θ, log q)``:

* :class:`PointMass` — the plain algorithms' "posterior": θ = μ for every ξ (no entropy term).
* :class:`Particles` — SVPG's n particles; ξ holds a particle index.
* :class:`StateGaussian` — §3.1's state-dependent θ = μ_φ(s) + ξ ⊙ σ_φ(s), bound to a batch of
  states, with log q = log N(ξ) − Σ_i log σ_φ^i(s) (the Σ log σ of Eq. 8 is its log-det term).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vi_flows.flows import standard_normal_log_prob

__all__ = ["PointMass", "Particles", "StateGaussian", "flow_std"]


class PointMass(nn.Module):
    """θ = μ regardless of ξ; log q is reported as 0 (it is a delta, there is no density)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.loc = nn.Parameter(torch.zeros(dim))

    def forward(self, xi: Tensor) -> tuple[Tensor, Tensor]:
        return self.loc.expand(xi.shape[0], self.dim), self.loc.new_zeros(xi.shape[0])


class Particles(nn.Module):
    """n particles θ_1..θ_n (SVPG); ξ encodes a particle index (:meth:`noise`, :meth:`index`).

    Args:
        num: n.
        dim: d.
        init_std: particles start at θ₀ + N(0, init_std²) so that they differ.
    """

    #: Width of the ξ that encodes a particle index.
    noise_dim = 1

    def __init__(self, num: int, dim: int, init_std: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.theta = nn.Parameter(init_std * torch.randn(num, dim))

    @staticmethod
    def noise(index: Tensor) -> Tensor:
        """The ξ (len, 1) that selects the particles ``index``."""
        return index.float()[:, None]

    @staticmethod
    def index(xi: Tensor) -> Tensor:
        """The particle index (long) that each row of ξ selects."""
        return xi[:, 0].long()

    def forward(self, xi: Tensor) -> tuple[Tensor, Tensor]:
        return self.theta[self.index(xi)], self.theta.new_zeros(xi.shape[0])


class StateGaussian(nn.Module):
    """q_φ(θ | s) = N(μ_φ(s), diag σ_φ(s)²) for a fixed batch of states (one state per row).

    Args:
        net: maps states (M, obs_dim) to (M, 2m): μ and the raw log σ.
        obs: the states, one per ξ row.
        log_std_bounds: log σ is squashed into these bounds with a tanh.
    """

    def __init__(self, net: nn.Module, obs: Tensor, log_std_bounds: tuple[float, float]) -> None:
        super().__init__()
        self.net, self.obs, self.bounds = net, obs, log_std_bounds

    def moments(self) -> tuple[Tensor, Tensor]:
        """μ_φ(s) and log σ_φ(s), each (M, m)."""
        mu, raw = self.net(self.obs).chunk(2, dim=-1)
        lo, hi = self.bounds
        log_std = lo + 0.5 * (hi - lo) * (torch.tanh(raw) + 1.0)
        return mu, log_std

    def forward(self, xi: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_std = self.moments()
        return mu + xi * log_std.exp(), standard_normal_log_prob(xi) - log_std.sum(-1)


@torch.no_grad()
def flow_std(q: nn.Module, noise_dim: int, num: int = 64) -> float:
    """Mean marginal standard deviation of θ under q (Monte Carlo with ``num`` draws)."""
    if isinstance(q, PointMass):
        return 0.0
    if isinstance(q, Particles):
        return float(q.theta.std(0).mean()) if q.theta.shape[0] > 1 else 0.0
    theta = q(torch.randn(num, noise_dim))[0]
    return float(theta.std(0).mean())
