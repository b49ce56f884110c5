"""Multimodal sampling benchmarks from the flow-sampling literature, with their modes.

- ``mog40``: 2-D, 40 unit-variance Gaussians, means uniform in [−40, 40]² (torch seed 0), log Z = 0
  (Midgley et al., ICLR 2023, "Flow annealed importance sampling bootstrap");
- ``mos``: 10 product-Student-t components (df 2, unit scale), means uniform in [−10, 10]^d
  (seed 0), any d, log Z = 0 (Blessing et al., ICML 2024, "Beyond ELBOs");
- ``manywell``: d = 2m, log p̃ = Σ_pairs −x⁴ + 6x² + ½x − ½y² (Noé et al. 2019's double well,
  repeated), log Z = m·(log 11784.50927 + ½ log 2π) = 164.6957 at d = 32.

Each carries ``modes`` (k, d) where they are few enough to count (ManyWell has 2^m; they are
declared for m ≤ 12, i.e. d ≤ 24).

>>> t = manywell_target(dim=32)
>>> round(t.log_z, 4)
164.6957
>>> mog40_target().modes.shape
torch.Size([40, 2])
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from vi_flows.targets.base import Target, register
from vi_flows.targets.toys import GaussianMixture

__all__ = ["ManyWell", "MixtureOfStudents", "manywell_target", "mog40_target"]

_F64 = torch.float64
_LOG_2PI = math.log(2.0 * math.pi)
#: ∫ exp(−x⁴ + 6x² + ½x) dx over ℝ (checked by quadrature in the tests: 11784.509265...).
WELL_INTEGRAL = 11784.50927
#: The double well's two local maxima (roots of −4x³ + 12x + ½ = 0).
_WELLS = (-1.7108290, 1.7525199)


def mog40_target(dim: int = 2, n_modes: int = 40, loc_scaling: float = 40.0, seed: int = 0):
    """``mog40``: ``n_modes`` equal-weight N(m_j, I₂), m_j ~ U([−loc_scaling, loc_scaling]²) drawn
    by ``torch.Generator().manual_seed(seed)`` in float64. Normalized (log Z = 0)."""
    if dim != 2:
        raise ValueError(f"mog40 is 2-D; got dim={dim}")
    gen = torch.Generator().manual_seed(seed)
    means = (torch.rand(n_modes, 2, generator=gen, dtype=_F64) - 0.5) * 2.0 * loc_scaling
    target = GaussianMixture("mog40", means, 1.0)
    lim = loc_scaling + 10.0
    target.bounds = ((-lim, lim), (-lim, lim))
    return target


class MixtureOfStudents(Target):
    r"""p(x) = (1/k) Σ_j Π_i t₂(x_i − m_{ji}): equal-weight product-Student-t components (df ν).

    Heavy tails (df 2 has infinite variance) make importance weights from a Gaussian-tailed q
    unbounded, which is the point of the benchmark. Normalized, sampled exactly.

    Args:
        dim: d (any d ≥ 1).
        n_modes: k.
        df: degrees of freedom ν.
        loc_scaling: means uniform in [−loc_scaling, loc_scaling]^d.
        seed: seed of the means' generator.
    """

    def __init__(
        self, dim: int = 2, n_modes: int = 10, df: float = 2.0, loc_scaling: float = 10.0,
        seed: int = 0,
    ) -> None:  # fmt: skip
        gen = torch.Generator().manual_seed(seed)
        means = (torch.rand(n_modes, dim, generator=gen, dtype=_F64) - 0.5) * 2.0 * loc_scaling
        # df = 2: the variance is infinite, so no moments are declared
        super().__init__("mos", dim, log_z=0.0, modes=means)
        self.df = float(df)
        if dim == 2:
            lim = loc_scaling + 5.0
            self.bounds = ((-lim, lim), (-lim, lim))

    def _log_prob(self, x: Tensor) -> Tensor:
        nu, z = self.df, x[..., None, :] - self.modes.to(x)
        const = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
        comp = (const - (nu + 1) / 2 * torch.log1p(z.square() / nu)).sum(-1)  # (..., k)
        return torch.logsumexp(comp, -1) - math.log(self.modes.shape[0])

    def _sample(self, n: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
        k = self.modes.shape[0]
        idx = torch.multinomial(torch.ones(k, device=device), n, replacement=True, generator=gen)
        z = torch.randn(n, self.dim, generator=gen, device=device, dtype=_F64)
        if float(self.df).is_integer():  # χ²_ν as a sum of ν squared normals, on ``gen``
            normals = torch.randn(
                n, self.dim, int(self.df), generator=gen, device=device, dtype=_F64
            )
            chi2 = normals.square().sum(-1)
        else:
            chi2 = torch.distributions.Chi2(torch.full((n, self.dim), self.df, dtype=_F64)).sample()
        return self.modes.to(device)[idx] + z / torch.sqrt(chi2 / self.df)


class ManyWell(Target):
    r"""ManyWell: d = 2m coordinates in pairs (x, y), log p̃ = Σ_pairs −x⁴ + 6x² + ½x − ½y².

    Each pair's x has two wells (at −1.711 and 1.753, the right one ≈ e^{1.7} times heavier) and
    y is a standard normal, so there are 2^m modes and

    .. math:: \log Z = m\,(\log 11784.50927 + \tfrac12 \log 2π).

    Exact samples: x by inverse-CDF on a fine float64 grid (error < 1e-6 in distribution), y normal.
    """

    def __init__(self, dim: int = 32) -> None:
        if dim < 2 or dim % 2:
            raise ValueError(f"manywell needs an even dim >= 2 (pairs of coordinates), got {dim}")
        m = dim // 2
        log_z = m * (math.log(WELL_INTEGRAL) + 0.5 * _LOG_2PI)
        modes = None
        if m <= 12:  # 2^m modes: only declared while they are few enough to count
            rows = [
                [c for w in combo for c in (w, 0.0)]
                for combo in itertools.product(_WELLS, repeat=m)
            ]
            modes = torch.tensor(rows, dtype=_F64)
        super().__init__("manywell", dim, log_z=log_z, modes=modes)
        if dim == 2:
            self.bounds = ((-3.0, 3.0), (-4.0, 4.0))

    def _log_prob(self, x: Tensor) -> Tensor:
        a, b = x[..., 0::2], x[..., 1::2]
        return (-a.pow(4) + 6.0 * a.square() + 0.5 * a - 0.5 * b.square()).sum(-1)

    def _sample(self, n: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
        m = self.dim // 2
        grid = torch.linspace(-4.0, 4.0, 200_001, dtype=_F64, device=device)
        log_w = -grid.pow(4) + 6.0 * grid.square() + 0.5 * grid
        cdf = torch.cumsum((log_w - log_w.max()).exp(), 0)
        cdf = cdf / cdf[-1]
        u = torch.rand(n * m, generator=gen, device=device, dtype=_F64)
        idx = torch.searchsorted(cdf, u).clamp(1, len(grid) - 1)
        lo, hi = cdf[idx - 1], cdf[idx]
        frac = ((u - lo) / (hi - lo).clamp_min(1e-300)).clamp(0, 1)
        xs = grid[idx - 1] + frac * (grid[1] - grid[0])
        out = torch.randn(n, self.dim, generator=gen, device=device, dtype=_F64)
        out[:, 0::2] = xs.reshape(n, m)
        return out


def manywell_target(dim: int = 32) -> ManyWell:
    """``manywell`` (see :class:`ManyWell`)."""
    return ManyWell(dim)


register("mog40", mog40_target)
register("mos", MixtureOfStudents)
register("manywell", manywell_target)
