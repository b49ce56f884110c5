"""Elementwise monotone maps whose parameters come from a conditioner (coupling net or MADE).

A *transformer* (in the autoregressive-flow sense) maps each coordinate ``x_i`` to
``y_i = τ(x_i; c_i)`` with parameters ``c_i`` of size :attr:`num_params` supplied from outside.
Coupling layers and masked autoregressive layers differ only in where ``c`` comes from, so both
take any :class:`Transformer`: the affine map here or the rational-quadratic spline of
:mod:`vi_flows.transforms.splines`.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import Tensor

from vi_flows.transforms.splines import RQSpline

__all__ = ["Transformer", "AffineTransformer", "make_transformer"]


class Transformer(Protocol):
    """An elementwise bijection τ(·; c) of ℝ with c ∈ ℝ^num_params given per coordinate."""

    num_params: int

    def identity_params(self) -> Tensor:
        """The (num_params,) parameters at which τ is the identity (the layers' initial value)."""
        ...

    def forward(self, x: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        """(τ(x; c), log τ'(x; c)) elementwise; ``raw`` has shape (*x.shape, num_params)."""
        ...

    def inverse(self, y: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        """(τ⁻¹(y; c), log (τ⁻¹)'(y; c)) elementwise."""
        ...


class AffineTransformer:
    """τ(x; c) = x · exp(s) + t with c = (raw_s, t) and s = b · tanh(raw_s / b), |s| < b.

    The smooth bound b keeps one bad step from overflowing exp(s) without the dead gradient of a
    hard clamp.

    Args:
        scale_bound: b > 0, the bound on the log-scale.

    >>> tau = AffineTransformer(3.0)
    >>> tau.forward(torch.tensor([2.0]), torch.tensor([[0.0, 1.0]]))
    (tensor([3.]), tensor([0.]))
    """

    num_params = 2

    def __init__(self, scale_bound: float = 3.0) -> None:
        if not 0 < scale_bound < math.inf:  # an infinite bound makes tanh-bounded scales NaN
            raise ValueError(f"scale_bound must be a finite number > 0, got {scale_bound!r}")
        self.scale_bound = float(scale_bound)

    def identity_params(self) -> Tensor:
        return torch.zeros(2)

    def log_scale(self, raw: Tensor) -> Tensor:
        """The bounded log-scale s = b · tanh(raw / b)."""
        return self.scale_bound * torch.tanh(raw / self.scale_bound)

    def forward(self, x: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        s = self.log_scale(raw[..., 0])
        return x * s.exp() + raw[..., 1], s

    def inverse(self, y: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        s = self.log_scale(raw[..., 0])
        return (y - raw[..., 1]) * (-s).exp(), -s

    def __repr__(self) -> str:
        return f"AffineTransformer(scale_bound={self.scale_bound:g})"


def make_transformer(kind: str, **options: Any) -> Transformer:
    """``"affine"`` (options: scale_bound) or ``"spline"`` (options: bins, bound)."""
    if kind == "affine":
        return AffineTransformer(**options)
    if kind == "spline":
        return RQSpline(**options)
    raise ValueError(f"transformer must be 'affine' or 'spline', got {kind!r}")
