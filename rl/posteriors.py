"""Posteriors over policy parameters that are not plain vi_flows flows.

Each provides what :func:`vi_flows.objectives.kl_loss` uses of a flow,
``q(ξ) -> (θ, log q)``:

* :class:`PointMass` — the plain algorithms' "posterior": θ = μ for every ξ (no entropy term).
* :class:`Particles` — SVPG's n particles; ξ holds a particle index.
* :class:`StateGaussian` — §3.1's state-dependent θ = μ_φ(s) + ξ ⊙ σ_φ(s), bound to a batch of
  states, with log q = log N(ξ) − Σ_i log σ_φ^i(s) (the Σ log σ of Eq. 8 is its log-det term).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from vi_flows.bases import StandardNormal
from vi_flows.flows import Flow, standard_normal_log_prob
from vi_flows.transforms import (
    ElementwiseAffine,
    LowerTriangularAffine,
    LowRankAffine,
    Transform,
)

__all__ = [
    "PointMass",
    "Particles",
    "StateGaussian",
    "affine_mean",
    "affine_marginal_std",
    "base_noise",
    "flow_std",
    "probe_draws",
]


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


def _gaussian_affine(q: nn.Module) -> Transform | None:
    """q's transform if q is an affine flow on N(0, I) (a Gaussian posterior), else None."""
    if not isinstance(q, Flow) or not isinstance(q.base, StandardNormal):
        return None
    affine = ElementwiseAffine | LowerTriangularAffine | LowRankAffine
    return q.transform if isinstance(q.transform, affine) else None


def affine_mean(q: nn.Module) -> Tensor | None:
    """E θ = h(E ξ) = h(0) (1, d) for an affine flow on N(0, I), exactly; None for other flows.

    >>> from vi_flows.flows import build
    >>> q = build("gaussian", 3)
    >>> _ = q.transform.loc.data.fill_(2.0)
    >>> affine_mean(q).tolist()
    [[2.0, 2.0, 2.0]]
    """
    t = _gaussian_affine(q)
    return None if t is None else t.loc.detach()[None].clone()  # θ = μ + Aξ: E θ = μ


def affine_marginal_std(q: nn.Module) -> Tensor | None:
    """The exact marginal standard deviations (d,) of θ under an affine flow on N(0, I), or None.

    θ = μ + A ξ has Cov θ = A Aᵀ, so std θᵢ = ‖Aᵢ‖, the norm of A's row i:

    * ``ElementwiseAffine``: A = diag σ, std = σ;
    * ``LowerTriangularAffine``: A = L, the row norms of L;
    * ``LowRankAffine``: A = D(I + VVᵀ), whose row i is Dᵢ(eᵢ + V vᵢ) with vᵢ the row i of V,
      so std²ᵢ = Dᵢ² (1 + 2‖vᵢ‖² + vᵢᵀ(VᵀV)vᵢ), in O(d r²) (nothing d × d is formed).

    None for any other flow or base (:func:`flow_std` then estimates).

    >>> from vi_flows.flows import build
    >>> q = build("lowrank-gaussian", 5, rank=2)
    >>> _ = q.transform.factor.data.normal_()
    >>> dense = q.transform.matrix().norm(dim=1)
    >>> bool(torch.allclose(affine_marginal_std(q), dense, atol=1e-6))
    True
    """
    t = _gaussian_affine(q)
    if isinstance(t, ElementwiseAffine):
        return t.scale()
    if isinstance(t, LowerTriangularAffine):
        return t.scale_tril().norm(dim=1)
    if isinstance(t, LowRankAffine):
        v = t.low_rank()
        gram_rows = v @ (v.mT @ v)  # row i: vᵢᵀ(VᵀV)
        quad = 1.0 + 2.0 * v.square().sum(1) + (gram_rows * v).sum(1)
        return t.diag() * quad.sqrt()
    return None


@torch.no_grad()
def flow_std(q: nn.Module, noise_dim: int, num: int = 64) -> float:
    """Mean marginal standard deviation of θ under q.

    Exact for an affine flow on N(0, I) (:func:`affine_marginal_std`; the trainer logs this
    after every update, and 64 draws of a 4,481-weight posterior cost ~5 ms and a ±9% jitter);
    otherwise a Monte Carlo estimate from ``num`` base draws under :func:`probe_draws` (the
    same draws every call; the run's own random stream is left as it was).
    """
    if isinstance(q, PointMass):
        return 0.0
    if isinstance(q, Particles):
        return float(q.theta.std(0).mean()) if q.theta.shape[0] > 1 else 0.0
    exact = affine_marginal_std(q)
    if exact is not None:
        return float(exact.mean())
    theta = q(probe_draws(lambda: base_noise(q, num, noise_dim)))[0]
    return float(theta.std(0).mean())


def base_noise(q: nn.Module, num: int, dim: int) -> Tensor:
    """``num`` draws ξ (num, dim) of q's base: a flow's own base (N(0, I) or Student-t), else
    N(0, I); from the global torch RNG, without gradient."""
    if isinstance(q, Flow):
        with torch.no_grad():
            return q.base_sample(num)
    return torch.randn(num, dim)


def probe_draws(draw: Callable[[], Tensor]) -> Tensor:
    """``draw()`` from a fork of the CPU generator seeded 0: the same draws on every call, and
    the caller's random stream is left as it was (diagnostics that run every update must not
    change the training run's draws; only the CPU stream is forked, so only it is reseeded)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(0)
        return draw()
