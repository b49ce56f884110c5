"""Monotone rational-quadratic splines with linear tails (Durkan et al. 2019), written here.

On [−B, B] the map is a piecewise rational-quadratic spline through K + 1 knots
(x₀, y₀) = (−B, −B), …, (x_K, y_K) = (B, B) with positive bin widths w_k, heights h_k and knot
derivatives δ_k > 0. With s_k = h_k / w_k and ζ = (x − x_k) / w_k ∈ [0, 1] in bin k,

.. math::

    y = y_k + \\frac{h_k (s_k ζ^2 + δ_k ζ(1 − ζ))}{s_k + (δ_{k+1} + δ_k − 2 s_k) ζ(1 − ζ)},
    \\qquad
    \\frac{dy}{dx} = \\frac{s_k^2 (δ_{k+1} ζ^2 + 2 s_k ζ(1 − ζ) + δ_k (1 − ζ)^2)}
                        {(s_k + (δ_{k+1} + δ_k − 2 s_k) ζ(1 − ζ))^2} > 0.

Outside [−B, B] the map is linear, and its slopes are the boundary knot derivatives:
y = −B + δ₀ (x + B) for x < −B and y = B + δ_K (x − B) for x > B. So the map is C¹ and a
bijection of all of ℝ (inputs at ±B or ±10⁴ are as valid as any other), and — unlike splines
whose tails are fixed to the identity (nflows, zuko) — a layer can stretch or shrink its tails,
which a heavy-tailed or funnel-shaped target needs beyond the bound. Monotonicity holds by
construction (every w, h, δ is positive), and the inverse is the root in [0, 1] of a quadratic
in ζ, taken in the form ζ = 2c / (−b − √(b² − 4ac)) that stays accurate when a → 0.

A spline is parameterized per coordinate by 3K + 1 unconstrained numbers
[width logits (K), height logits (K), knot derivative logits (K + 1)]; :class:`RQSpline` maps
them to knots and applies the map. :class:`ElementwiseSpline` is the same map with free
per-coordinate parameters (a transform on its own, and the unit tested at the boundary).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vi_flows.transforms.base import Transform

__all__ = ["RQSpline", "ElementwiseSpline"]


class RQSpline:
    """The rational-quadratic spline of K bins on [−B, B] with linear tails of matched slope.

    Args:
        bins: K, the number of bins (at least 2).
        bound: B > 0, the half-width of the spline's interval.
        min_width: lower bound on every bin width, as a fraction of 2B.
        min_height: lower bound on every bin height, as a fraction of 2B.
        min_derivative: lower bound on every knot derivative (and so on the tail slopes).

    Raises:
        ValueError: for bins < 2, bound <= 0, or minimum sizes that leave no room.

    >>> spline = RQSpline(bins=4, bound=3.0)
    >>> raw = spline.identity_params().expand(5, 13)
    >>> x = torch.tensor([-1e4, -3.0, 0.5, 3.0, 1e4])
    >>> y, ladj = spline.forward(x, raw)
    >>> torch.allclose(y, x, atol=1e-6), ladj.abs().max().item() < 1e-6
    (True, True)
    """

    def __init__(
        self,
        bins: int = 8,
        bound: float = 5.0,
        min_width: float = 1e-3,
        min_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ) -> None:
        if int(bins) != bins or bins < 2:
            raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
        if not bound > 0 or not math.isfinite(bound):
            raise ValueError(f"bound must be a finite number > 0, got {bound!r}")
        if min_width * bins >= 1 or min_height * bins >= 1:
            raise ValueError(f"min_width and min_height must be < 1/bins = {1 / bins:g}")
        if not min_derivative > 0:
            raise ValueError(f"min_derivative must be > 0, got {min_derivative!r}")
        self.bins = int(bins)
        self.bound = float(bound)
        self.min_width = float(min_width)
        self.min_height = float(min_height)
        self.min_derivative = float(min_derivative)

    @property
    def num_params(self) -> int:
        """Unconstrained numbers per coordinate: 3K + 1."""
        return 3 * self.bins + 1

    def identity_params(self) -> Tensor:
        """The (3K + 1,) parameters of the identity map: equal bins, every derivative 1."""
        d = 1.0 - self.min_derivative
        logit = d + math.log(-math.expm1(-d))  # softplus⁻¹(1 − min_derivative)
        return torch.cat([torch.zeros(2 * self.bins), torch.full((self.bins + 1,), logit)])

    def _knots(self, logits: Tensor, min_size: float) -> tuple[Tensor, Tensor]:
        """Knot positions (..., K + 1) from −B to B exactly, and bin sizes (..., K)."""
        frac = min_size + (1.0 - min_size * self.bins) * torch.softmax(logits, -1)
        inner = torch.cumsum(frac, -1)[..., :-1]
        lo = torch.full_like(inner[..., :1], -self.bound)
        hi = torch.full_like(inner[..., :1], self.bound)
        # The end knots are set exactly to ±B (not from a cumsum that may miss 1 by rounding).
        knots = torch.cat([lo, 2 * self.bound * inner - self.bound, hi], -1)
        return knots, knots[..., 1:] - knots[..., :-1]

    def _unpack(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        if raw.shape[-1] != self.num_params:
            raise ValueError(f"expected {self.num_params} spline parameters, got {raw.shape[-1]}")
        k = self.bins
        xs, widths = self._knots(raw[..., :k], self.min_width)
        ys, heights = self._knots(raw[..., k : 2 * k], self.min_height)
        derivs = self.min_derivative + F.softplus(raw[..., 2 * k :])  # δ₀ … δ_K
        return xs, widths, ys, heights, derivs

    @staticmethod
    def _bin(knots: Tensor, v: Tensor) -> Tensor:
        # Index k with knots[k] <= v < knots[k+1], clamped to [0, K−1]; a comparison sum is
        # cheaper than searchsorted for K ≈ 8 and needs no contiguous layout.
        return (v[..., None] >= knots[..., 1:-1]).sum(-1, keepdim=True)

    def _apply(self, v: Tensor, raw: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        xs, widths, ys, heights, derivs = self._unpack(raw)
        below, above = v < -self.bound, v > self.bound
        inside = ~(below | above)
        # Outside points are evaluated at 0 (then discarded by `where`), so the unused branch
        # never produces inf/NaN that would poison the gradient. No clamp anywhere: torch's
        # clamp has zero gradient at its bounds, which would zero dy/dx at exactly ±B.
        vc = torch.where(inside, v, torch.zeros_like(v))
        k = self._bin(ys if inverse else xs, vc)
        # One gather of all six per-bin quantities (cheaper forward and backward than six).
        table = torch.stack(
            [xs[..., :-1], widths, ys[..., :-1], heights, derivs[..., :-1], derivs[..., 1:]], -1
        )
        index = k[..., None].expand(*k.shape[:-1], 1, 6)
        x_k, w_k, y_k, h_k, d_k, d_k1 = table.gather(-2, index).squeeze(-2).unbind(-1)
        s_k = h_k / w_k
        slope_sum = d_k1 + d_k - 2 * s_k
        if inverse:
            dy = vc - y_k
            a = h_k * (s_k - d_k) + dy * slope_sum
            b = h_k * d_k - dy * slope_sum
            c = -s_k * dy
            disc = (b.square() - 4 * a * c).clamp_min(0)
            zeta = 2 * c / (-b - disc.sqrt())
            out = x_k + zeta * w_k
        else:
            zeta = (vc - x_k) / w_k
        zz = zeta * (1 - zeta)
        denom = s_k + slope_sum * zz
        if not inverse:
            out = y_k + h_k * (s_k * zeta.square() + d_k * zz) / denom
        log_deriv = (
            2 * s_k.log()
            + (d_k1 * zeta.square() + 2 * s_k * zz + d_k * (1 - zeta).square()).log()
            - 2 * denom.log()
        )
        # Linear tails: slope δ₀ below −B, δ_K above B (the inverse divides by it).
        slope = torch.where(below, derivs[..., 0], derivs[..., -1])
        edge = torch.where(below, -self.bound, self.bound)
        tail = edge + (v - edge) / slope if inverse else edge + (v - edge) * slope
        if inverse:
            log_deriv = -log_deriv
        tail_log_deriv = -slope.log() if inverse else slope.log()
        return torch.where(inside, out, tail), torch.where(inside, log_deriv, tail_log_deriv)

    def forward(self, x: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        """y = g(x) and log g'(x), elementwise; ``raw`` has shape (*x.shape, 3K + 1)."""
        return self._apply(x, raw, inverse=False)

    def inverse(self, y: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        """x = g⁻¹(y) and log (g⁻¹)'(y) = −log g'(x), elementwise."""
        return self._apply(y, raw, inverse=True)

    def __repr__(self) -> str:
        return f"RQSpline(bins={self.bins}, bound={self.bound:g})"


class ElementwiseSpline(Transform):
    """θᵢ = gᵢ(ξᵢ): an independent rational-quadratic spline per coordinate, free parameters.

    Starts at the identity. log|det| = Σᵢ log gᵢ'(ξᵢ).

    Args:
        dim: event size d.
        bins: K, bins per spline (at least 2).
        bound: B > 0; each spline is linear outside [−B, B].
    """

    def __init__(self, dim: int, bins: int = 8, bound: float = 5.0) -> None:
        super().__init__(dim)
        self.spline = RQSpline(bins, bound)
        self.params = nn.Parameter(self.spline.identity_params().repeat(dim, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        y, ld = self.spline.forward(x, self.params.expand(*x.shape, -1))
        return y, ld.sum(-1)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        self._check(y)
        x, ld = self.spline.inverse(y, self.params.expand(*y.shape, -1))
        return x, ld.sum(-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, bins={self.spline.bins}, bound={self.spline.bound:g}"
