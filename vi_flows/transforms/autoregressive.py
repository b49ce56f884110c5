"""Masked autoregressive layers: IAF in the forward direction, MAF as its inverse.

:class:`MaskedAutoregressive` maps base noise x to y by

.. math::

    y_i = τ(x_i;\\, c_i(x_{<i})), \\qquad
    \\log|\\det ∂y/∂x| = \\textstyle\\sum_i \\log τ'(x_i; c_i),

with c a :class:`~vi_flows.transforms.made.MADE` of the *input* (``<`` in the layer's
``order``). The Jacobian is triangular, and the whole forward pass — a sample together with
its log-density, all that reverse-KL VI needs — is **one** MADE evaluation. This is the inverse
autoregressive flow (IAF, Kingma et al. 2016).

The inverse has to recover x_i from y_i after x_{<i} is known, so it takes d MADE passes. It is
written as a fixed-point iteration over all coordinates at once, x ← τ⁻¹(y; c(x)) starting from
x = 0: after pass k every coordinate at position < k in the order is exact, so d passes give
the exact inverse, and the parameters of the last pass (computed from the d − 1 exact
coordinates, all any output depends on) give its log-det with no extra pass. Each pass is one
batched MADE evaluation; nothing is written coordinate by coordinate.

The masked autoregressive flow (MAF, Papamakarios et al. 2017) conditions on the *output*
instead: y_i = τ(x_i; c_i(y_{<i})). That is exactly ``Inverse(MaskedAutoregressive(...))``
with τ replaced by τ⁻¹ — so MAF evaluates the density of given points in one pass, and its
sampling pass costs the d passes above. Use IAF for VI; MAF when log q at arbitrary points
(e.g. of data) matters more than sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from vi_flows.transforms.base import Transform
from vi_flows.transforms.made import MADE
from vi_flows.transforms.transformers import make_transformer

__all__ = ["MaskedAutoregressive"]


class MaskedAutoregressive(Transform):
    """Inverse-autoregressive layer y_i = τ(x_i; c_i(x_{<i})): one-pass forward, d-pass inverse.

    Starts at the identity (the MADE's output layer starts at τ's identity parameters).

    Args:
        dim: event size d.
        transformer: ``"affine"`` (x · exp(s) + t, |s| < scale_bound) or ``"spline"`` (a
            rational-quadratic spline with ``bins`` bins on [−bound, bound] and linear tails of
            learned slope).
        hidden: the MADE's hidden widths.
        order: autoregressive order, a permutation of range(d) (identity when omitted).
        residual: residual hidden blocks in the MADE.
        **options: the transformer's options (``scale_bound``; or ``bins``, ``bound``).

    >>> import torch
    >>> t = MaskedAutoregressive(3, "spline", hidden=(8,), bins=4)
    >>> x = torch.randn(5, 3)
    >>> y, ladj = t(x)
    >>> torch.allclose(y, x), float(ladj.abs().max()) < 1e-5
    (True, True)
    """

    sequential_inverse = True  # x_i needs x_{<i}: one MADE pass per coordinate

    def __init__(
        self,
        dim: int,
        transformer: str = "affine",
        hidden: Sequence[int] = (64, 64),
        order: Sequence[int] | Tensor | None = None,
        residual: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(dim)
        self.transformer = make_transformer(transformer, **options)
        self.made = MADE(
            dim,
            self.transformer.num_params,
            hidden,
            order=order,
            residual=residual,
            init_bias=self.transformer.identity_params(),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        y, log_deriv = self.transformer.forward(x, self.made(x))
        return y, log_deriv.sum(-1)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        self._check(y)
        x = y.new_zeros(y.shape)
        for _ in range(self.dim):  # d passes: position k of the order is exact after pass k + 1
            x, log_deriv = self.transformer.inverse(y, self.made(x))
        return x, log_deriv.sum(-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, transformer={self.transformer!r}"
