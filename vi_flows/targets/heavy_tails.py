"""Heavy-tailed targets: the multivariate Student-t, registered as ``student-t``.

>>> from vi_flows import targets
>>> t = targets.get("student-t", dim=10, df=3.0)
>>> t.log_z, t.has_sample, tuple(t.log_prob(torch.zeros(2, 10)).shape)
(0.0, True, (2,))
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vi_flows.targets.base import Target, register

__all__ = ["StudentT"]


class StudentT(Target):
    """The multivariate Student-t t_ν(0, s² I_d), normalized (``log_z`` = 0):

    .. math:: \\log p(x) = \\log Γ(\\tfrac{ν+d}{2}) − \\log Γ(\\tfrac{ν}{2})
              − \\tfrac d2 \\log(νπ s^2) − \\tfrac{ν+d}{2} \\log(1 + \\|x\\|^2 / (ν s^2)).

    Every marginal is a univariate s · t_ν, but the coordinates share one χ² scale (x = s z /
    √(g/ν), z ~ N(0, I), g ~ χ²_ν), so they are dependent: a product of independent
    t-distributions (e.g. a Student-t base) is not the target, and a flow has to learn the
    dependence. For ν > 2 the marginal sd is s √(ν / (ν − 2)).

    Args:
        dim: d.
        df: ν > 0 (3 gives finite variance but no finite kurtosis).
        scale: s > 0.
    """

    def __init__(self, dim: int = 2, df: float = 3.0, scale: float = 1.0) -> None:
        if not 0 < df < math.inf:  # ν = ∞ is the Gaussian target; its log-density here is NaN
            raise ValueError(f"df must be a finite number > 0, got {df!r}")
        if not 0 < scale < math.inf:
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        known: dict = {"log_z": 0.0}
        if df > 1:
            known["mean"] = torch.zeros(dim, dtype=torch.float64)
        if df > 2:
            known["std"] = torch.full((dim,), scale * math.sqrt(df / (df - 2)), dtype=torch.float64)
        if dim == 2:
            lim = 6.0 * scale
            known["bounds"] = ((-lim, lim), (-lim, lim))
        super().__init__("student-t", dim, **known)
        self.df, self.scale = float(df), float(scale)

    def _log_prob(self, x: Tensor) -> Tensor:
        nu, d, s = self.df, self.dim, self.scale
        const = (
            math.lgamma((nu + d) / 2)
            - math.lgamma(nu / 2)
            - 0.5 * d * math.log(nu * math.pi * s * s)
        )
        return const - 0.5 * (nu + d) * torch.log1p(x.square().sum(-1) / (nu * s * s))

    def _sample(self, n: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
        z = torch.randn(n, self.dim, generator=gen, device=device, dtype=torch.float64)
        # torch's Gamma sampler takes no generator; _chi2 draws from ``gen`` so that a seeded
        # generator reproduces the samples, as for every other target.
        g = _chi2(n, self.df, gen, device)
        return self.scale * z / torch.sqrt(g / self.df)[:, None]


def _chi2(n: int, df: float, gen: torch.Generator | None, device: torch.device) -> Tensor:
    """n draws of χ²_df on ``gen`` (reproducible), by Marsaglia–Tsang for Gamma(df/2, 1)."""
    shape = df / 2
    boost = shape < 1  # Gamma(a) = Gamma(a + 1) · U^(1/a) for a < 1
    a = shape + 1 if boost else shape
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(0, dtype=torch.float64, device=device)
    while out.numel() < n:
        m = 2 * (n - out.numel()) + 16
        z = torch.randn(m, generator=gen, device=device, dtype=torch.float64)
        u = torch.rand(m, generator=gen, device=device, dtype=torch.float64)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        out = torch.cat([out, d * v[ok]])
    g = out[:n]
    if boost:
        u = torch.rand(n, generator=gen, device=device, dtype=torch.float64)
        g = g * u ** (1.0 / shape)
    return 2.0 * g


register("student-t", StudentT)
