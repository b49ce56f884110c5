"""Adapters that make nflows' and pyro's transforms behave as vi_flows transforms.

Spline, autoregressive and other families come from those libraries rather than being written
again here. Each adapter keeps the toolkit's convention: forward is base → sample and returns
``(y, log|det ∂y/∂x|)`` with the batch shape.

* nflows transforms take 2-D ``(batch, features)`` tensors and return ``(outputs, logabsdet)``;
  the adapter flattens any batch shape and maps our forward to nflows' ``forward`` (for coupling
  layers both directions are closed-form).
* pyro transforms are ``torch.distributions.Transform`` objects whose log-det comes from
  ``log_abs_det_jacobian(x, y)`` (pyro keeps it in a per-call cache); the adapter asks for it in
  the same call, so no cache ever crosses a call boundary. pyro's planar has no inverse.

nflows and pyro are imported only when one of these adapters is built: the native families
(``maf``, ``iaf``, ``nsf``, ``nsf-ar`` and the rest) work with neither library installed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from vi_flows.transforms.affine import ElementwiseAffine
from vi_flows.transforms.base import Compose, Transform
from vi_flows.transforms.coupling import Reverse, alternating_mask, mlp

if TYPE_CHECKING:  # only for annotations: the libraries are imported when an adapter is built
    from nflows.transforms import PiecewiseRationalQuadraticCouplingTransform
    from nflows.transforms import Transform as _NflowsBase
    from pyro.distributions.transforms import TransformModule

__all__ = [
    "ContextFreeNet",
    "NflowsTransform",
    "PyroTransform",
    "nflows_spline",
    "pyro_planar",
    "pyro_coupling",
]


class NflowsTransform(Transform):
    """Wraps an ``nflows.transforms.Transform`` (forward = nflows' forward).

    Args:
        transform: the nflows transform, acting on vectors of size ``dim``.
        dim: event size d.
        has_inverse: whether ``transform.inverse`` works (nflows raises for some, and e.g.
            ``NaiveLinear.inverse`` calls the removed ``torch.solve``).
        sequential_forward, sequential_inverse: whether that direction takes one network pass
            per coordinate (nflows' ``MaskedAffineAutoregressiveTransform`` inverts so); a
            wrapper cannot tell, so the caller says.
    """

    def __init__(
        self,
        transform: _NflowsBase,
        dim: int,
        has_inverse: bool = True,
        *,
        sequential_forward: bool = False,
        sequential_inverse: bool = False,
    ) -> None:
        super().__init__(dim)
        self.inner = transform
        self.has_inverse = has_inverse
        self.sequential_forward, self.sequential_inverse = sequential_forward, sequential_inverse

    def _apply_flat(self, fn: Any, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        batch = x.shape[:-1]
        y, ladj = fn(x.reshape(-1, self.dim))
        return y.reshape(*batch, self.dim), ladj.reshape(batch)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._apply_flat(self.inner, x)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        if not self.has_inverse:
            return super().inverse(y)
        return self._apply_flat(self.inner.inverse, y)


class PyroTransform(Transform):
    """Wraps a pyro ``TransformModule`` acting on vectors (``event_dim == 1``).

    Args:
        transform: the pyro transform (an ``nn.Module``, so its parameters are ours to train).
        dim: event size d.
        has_inverse: whether pyro can invert it at arbitrary points (its planar cannot).
        sequential_forward, sequential_inverse: whether that direction takes one network pass
            per coordinate (pyro's ``AffineAutoregressive`` inverts so); the caller says.
    """

    def __init__(
        self,
        transform: TransformModule,
        dim: int,
        has_inverse: bool,
        *,
        sequential_forward: bool = False,
        sequential_inverse: bool = False,
    ) -> None:
        super().__init__(dim)
        self.inner = transform
        self.has_inverse = has_inverse
        self.sequential_forward, self.sequential_inverse = sequential_forward, sequential_inverse

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        y = self.inner(x)
        return y, self.inner.log_abs_det_jacobian(x, y)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        if not self.has_inverse:
            return super().inverse(y)
        self._check(y)
        x = self.inner.inv(y)
        return x, -self.inner.log_abs_det_jacobian(x, y)


class ContextFreeNet(nn.Module):
    """An MLP that accepts (and ignores) the ``context`` argument nflows passes conditioners
    (``transform_net_create_fn`` of nflows' coupling transforms)."""

    def __init__(self, net: nn.Sequential, hidden_features: int) -> None:
        super().__init__()
        self.net = net
        # nflows divides the spline's width/height logits by sqrt(hidden_features) when the
        # conditioner advertises it (and warns otherwise).
        self.hidden_features = hidden_features

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


def _start_at_identity(coupling: PiecewiseRationalQuadraticCouplingTransform, bins: int) -> None:
    """Set the conditioner's output bias so that every spline starts as the identity.

    The last layer's weights are zero, so the outputs equal its bias; nflows lays them out per
    transformed feature as [widths (bins), heights (bins), inner derivatives (bins − 1)] and
    maps a derivative logit a to min_derivative + softplus(a). Equal widths and heights give
    the identity once every derivative is 1.
    """
    from nflows.transforms.splines.rational_quadratic import DEFAULT_MIN_DERIVATIVE

    last = coupling.transform_net.net[-1]
    logit = math.log(math.expm1(1.0 - DEFAULT_MIN_DERIVATIVE))
    with torch.no_grad():
        last.bias.view(-1, 3 * bins - 1)[:, 2 * bins :] = logit


def nflows_spline(
    dim: int,
    layers: int = 4,
    hidden: Sequence[int] = (64, 64),
    bins: int = 8,
    tail_bound: float = 5.0,
    init_scale: float = 1.0,
) -> Transform:
    """nflows' rational-quadratic spline coupling flow (Durkan et al. 2019) with linear tails.

    ``layers`` coupling layers on alternating masks, each with an MLP conditioner (last layer at
    zero, its bias set so that the flow starts at the identity), followed by our elementwise
    affine for global location and scale (the splines act on [−tail_bound, tail_bound] and are
    the identity outside).
    """
    if dim < 2:
        raise ValueError("nflows-spline needs dim >= 2 (a coupling splits the coordinates)")
    from nflows.transforms import PiecewiseRationalQuadraticCouplingTransform

    body: list[Transform] = []
    for i in range(layers):
        mask = alternating_mask(dim, i).to(torch.int64)  # nflows: >0 transforms, <=0 conditions

        def net(in_features: int, out_features: int) -> nn.Module:
            return ContextFreeNet(mlp(in_features, out_features, tuple(hidden)), hidden[-1])

        coupling = PiecewiseRationalQuadraticCouplingTransform(
            mask=1 - mask,
            transform_net_create_fn=net,
            num_bins=bins,
            tails="linear",
            tail_bound=tail_bound,
        )
        _start_at_identity(coupling, bins)
        body.append(NflowsTransform(coupling, dim))
    body.append(ElementwiseAffine(dim, init_scale=init_scale))
    return Compose(body)


def pyro_planar(dim: int, layers: int = 16, init_scale: float = 1.0) -> Transform:
    """A stack of pyro's planar transforms followed by our elementwise affine."""
    from pyro.distributions import transforms as pyro_transforms

    body: list[Transform] = [
        PyroTransform(pyro_transforms.Planar(dim), dim, has_inverse=False) for _ in range(layers)
    ]
    body.append(ElementwiseAffine(dim, init_scale=init_scale))
    return Compose(body)


def pyro_coupling(
    dim: int, layers: int = 8, hidden: Sequence[int] = (64, 64), init_scale: float = 1.0
) -> Transform:
    """pyro's affine coupling layers (RealNVP) with reversals between them, then an affine."""
    if dim < 2:
        raise ValueError("pyro-coupling needs dim >= 2 (a coupling splits the coordinates)")
    from pyro.distributions import transforms as pyro_transforms
    from pyro.nn import DenseNN

    split = dim // 2
    body: list[Transform] = []
    for i in range(layers):
        net = DenseNN(split, list(hidden), param_dims=[dim - split, dim - split])
        coupling = pyro_transforms.AffineCoupling(split, net)
        body.append(PyroTransform(coupling, dim, has_inverse=True))
        if i < layers - 1:
            body.append(Reverse(dim))
    body.append(ElementwiseAffine(dim, init_scale=init_scale))
    return Compose(body)
