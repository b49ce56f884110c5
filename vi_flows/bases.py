"""Base distributions q₀ of a flow: the standard normal and a heavy-tailed Student-t.

A base draws ξ (reparameterized: gradients reach its own parameters) and scores it; the flow
then computes log q(θ) = log q₀(ξ) − log|det ∂h/∂ξ|. Bases are modules, so a learnable degree of
freedom is saved with the flow's other parameters.

* :class:`StandardNormal` — N(0, I_d), no parameters (the default).
* :class:`StudentT` — d independent standard Student-t(ν) coordinates. Its polynomial tails
  (P(|ξ| > r) ∝ r^−ν) survive the flow's linear tails, so the fitted q can reach targets whose
  tails no Gaussian pushed through a flow with identity or affine tails can.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vi_flows.transforms.affine import inv_softplus

__all__ = ["Base", "StandardNormal", "StudentT", "make_base", "standard_normal_log_prob"]

_LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(xi: Tensor) -> Tensor:
    """log N(ξ; 0, I_d), summed over the last dimension (the default base density)."""
    return -0.5 * (xi.square().sum(-1) + xi.shape[-1] * _LOG_2PI)


class Base(Protocol):
    """What a flow needs of its base distribution."""

    def sample(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """Reparameterized ξ of shape ``shape`` in ``like``'s dtype and device."""
        ...

    def log_prob(self, xi: Tensor) -> Tensor:
        """log q₀(ξ), summed over the last dimension."""
        ...


class StandardNormal(nn.Module):
    """ξ ~ N(0, I_d)."""

    def sample(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        return torch.randn(shape, dtype=like.dtype, device=like.device)

    def log_prob(self, xi: Tensor) -> Tensor:
        return standard_normal_log_prob(xi)


class StudentT(nn.Module):
    """ξᵢ ~ Student-t(ν) independently: log q₀(ξ) = Σᵢ log t_ν(ξᵢ), exact.

    .. math:: \\log t_ν(x) = \\log Γ(\\tfrac{ν+1}{2}) − \\log Γ(\\tfrac{ν}{2})
              − \\tfrac12 \\log(νπ) − \\tfrac{ν+1}{2} \\log(1 + x^2/ν).

    Sampling is reparameterized, ξ = z / √(g/ν) with z ~ N(0, 1) and g ~ χ²_ν = Gamma(ν/2, 1/2)
    (torch differentiates the Gamma draw implicitly), so a learnable ν gets a pathwise gradient.

    Args:
        df: ν > 0, the (initial) degrees of freedom.
        learn_df: learn ν (as softplus of a free parameter) along with the flow.

    >>> base = StudentT(df=3.0)
    >>> round(float(base.log_prob(torch.zeros(1, 1))), 4)  # log t₃(0) = log(2 / (π √3))
    -1.0009
    """

    def __init__(self, df: float = 5.0, learn_df: bool = False) -> None:
        super().__init__()
        if isinstance(df, bool) or not isinstance(df, int | float) or not 0 < df < math.inf:
            raise ValueError(f"df must be a finite number > 0, got {df!r}")
        self.learn_df = bool(learn_df)
        if self.learn_df:
            self.raw_df = nn.Parameter(torch.tensor(inv_softplus(float(df), "df")))
        else:  # stored as is, so a fixed ν is exact in every dtype
            self.register_buffer("fixed_df", torch.tensor(float(df)))

    def df(self) -> Tensor:
        """ν: softplus(ρ) > 0 when learned, else the fixed value."""
        return F.softplus(self.raw_df) if self.learn_df else self.fixed_df

    def sample(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        df = self.df().to(dtype=like.dtype, device=like.device)
        z = torch.randn(shape, dtype=like.dtype, device=like.device)
        chi2 = torch.distributions.Chi2(df.expand(shape)).rsample()
        return z * torch.rsqrt(chi2 / df)

    def log_prob(self, xi: Tensor) -> Tensor:
        df = self.df().to(xi.dtype)
        const = torch.lgamma((df + 1) / 2) - torch.lgamma(df / 2) - 0.5 * torch.log(df * math.pi)
        return (const - 0.5 * (df + 1) * torch.log1p(xi.square() / df)).sum(-1)

    def extra_repr(self) -> str:
        return f"df={float(self.df().detach()):.3g}, learn_df={self.learn_df}"


def make_base(base: str = "normal", df: float | None = None, learn_df: bool = False) -> nn.Module:
    """A base by name: ``"normal"`` or ``"student-t"`` (with ``df``, default 5, and ``learn_df``).

    Raises:
        ValueError: for an unknown name, df ≤ 0, or df/learn_df given with the normal base.
    """
    if base == "normal":
        if df is not None or learn_df:
            raise ValueError("df and learn_df apply only to base='student-t'")
        return StandardNormal()
    if base == "student-t":
        return StudentT(5.0 if df is None else df, learn_df=learn_df)
    raise ValueError(f"base must be 'normal' or 'student-t', got {base!r}")
