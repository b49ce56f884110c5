"""Sample-based discrepancies between an approximation's draws and exact (reference) draws.

Used by the density benchmark to compare flows and SVGD on equal terms: every metric takes two
sample sets, so a flow's draws and SVGD's particles are scored the same way.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vi_flows.svgd import pairwise_sq_dists

__all__ = ["mmd2", "sliced_wasserstein", "moment_errors", "modes_covered"]


def mmd2(x: Tensor, y: Tensor, bandwidth: float | None = None) -> float:
    """Unbiased MMD² with the Gaussian kernel k(a, b) = exp(−‖a − b‖² / (2 ℓ² d)).

    The length scale is fixed per dimension — ℓ = ``bandwidth`` (default 1) times √d — so that the
    kernel's reach does not shrink as d grows; it is *not* adapted to the samples, so every
    method is scored with the same kernel on a given target. Compute it on standardized
    coordinates (divide by the reference sd) to make targets of different scales comparable.

    >>> g = torch.Generator().manual_seed(0)
    >>> a, b = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
    >>> abs(mmd2(a, b)) < 0.01, mmd2(a, b + 1.0) > 0.1
    (True, True)
    """
    x, y = x.double(), y.double()
    d = x.shape[-1]
    scale = 2.0 * (1.0 if bandwidth is None else bandwidth) ** 2 * d
    n, m = len(x), len(y)
    kxx = torch.exp(-pairwise_sq_dists(x, x) / scale)
    kyy = torch.exp(-pairwise_sq_dists(y, y) / scale)
    kxy = torch.exp(-pairwise_sq_dists(x, y) / scale)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(term_x + term_y - 2 * kxy.mean())


def sliced_wasserstein(x: Tensor, y: Tensor, projections: int = 128, seed: int = 0) -> float:
    """Sliced Wasserstein-1: the mean over random unit directions of the 1-D W₁ distance.

    The 1-D W₁ between projected samples is ∫|F⁻¹(u) − G⁻¹(u)| du, computed on a common grid of
    quantile levels so that the two sets may have different sizes. Directions come from a fixed
    seed, so every method is scored on the same slices.
    """
    x, y = x.double(), y.double()
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(x.shape[-1], projections, generator=gen, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    levels = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    qx = torch.quantile(x @ dirs, levels, dim=0)
    qy = torch.quantile(y @ dirs, levels, dim=0)
    return float((qx - qy).abs().mean())


def moment_errors(x: Tensor, mean: Tensor, std: Tensor) -> tuple[float, float]:
    """(max |mean error| / sd, max |log(sd ratio)|) over coordinates, in units of the true sd."""
    x = x.double()
    mean_err = ((x.mean(0) - mean.double()) / std.double()).abs().max()
    sd_err = (x.std(0) / std.double()).log().abs().max()
    return float(mean_err), float(sd_err)


def modes_covered(x: Tensor, modes: Tensor, radius: float, min_fraction: float = 0.02) -> float:
    """Fraction of ``modes`` that hold at least ``min_fraction``/k of the samples within ``radius``.

    A mode counts as covered when the share of samples closest to it (and within ``radius``) is at
    least ``min_fraction`` of the uniform share 1/k — so a handful of stray samples does not
    count as covering a mode.
    """
    x, modes = x.double(), modes.double()
    k = len(modes)
    dist = torch.cdist(x, modes)
    nearest = dist.argmin(-1)
    close = dist.gather(-1, nearest[:, None]).squeeze(-1) <= radius
    counts = torch.bincount(nearest[close], minlength=k).double()
    share = counts / max(len(x), 1)
    return float((share >= min_fraction / k).double().mean()) if k else math.nan
