"""Coupling layers (RealNVP, Dinh et al. 2017; neural spline, Durkan et al. 2019), permutations."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vi_flows.transforms.base import Transform
from vi_flows.transforms.splines import RQSpline
from vi_flows.transforms.transformers import AffineTransformer, Transformer

__all__ = [
    "Coupling",
    "AffineCoupling",
    "SplineCoupling",
    "Permutation",
    "Reverse",
    "mlp",
    "alternating_mask",
]


def mlp(in_features: int, out_features: int, hidden: Sequence[int] = (64, 64)) -> nn.Sequential:
    """A ReLU multilayer perceptron whose last layer starts at zero (so a coupling starts at id).

    >>> net = mlp(2, 3, hidden=(8,))
    >>> net(torch.ones(5, 2)).abs().sum().item()
    0.0
    """
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    last = nn.Linear(width, out_features)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)


def alternating_mask(dim: int, parity: int) -> Tensor:
    """Boolean mask of the coordinates that condition (``True``) a coupling layer.

    Even coordinates condition when ``parity`` is 0, odd ones when it is 1.

    >>> alternating_mask(5, 0).tolist()
    [True, False, True, False, True]
    """
    return torch.arange(dim) % 2 == parity % 2


class Coupling(Transform):
    """y_A = x_A,  y_B = τ(x_B; c(x_A)):  log|det| = Σ_{i∈B} log τ'(x_i; c_i(x_A)).

    A is the set of coordinates where ``mask`` is True (they pass through and condition), B the
    rest; τ is any elementwise :class:`~vi_flows.transforms.transformers.Transformer` and c an
    MLP whose last layer starts at zero with its bias at τ's identity parameters, so the layer
    starts as the identity. Both directions cost one conditioner pass.

    Args:
        dim: event size d (at least 2).
        transformer: the elementwise map τ.
        mask: boolean tensor of shape (d,) selecting the conditioning coordinates; defaults to the
            even coordinates.
        hidden: widths of the conditioner's hidden layers.
    """

    def __init__(
        self,
        dim: int,
        transformer: Transformer,
        mask: Tensor | None = None,
        hidden: Sequence[int] = (64, 64),
    ) -> None:
        super().__init__(dim)
        mask = alternating_mask(dim, 0) if mask is None else mask.to(torch.bool)
        if mask.shape != (dim,) or mask.all() or not mask.any():
            raise ValueError("mask must have shape (dim,) with both True and False entries")
        cond = mask.nonzero().squeeze(-1)
        trans = (~mask).nonzero().squeeze(-1)
        self.register_buffer("cond_idx", cond)
        self.register_buffer("trans_idx", trans)
        # Undoes the concatenation [x_A, y_B] back to the original coordinate order.
        self.register_buffer("unsort", torch.argsort(torch.cat([cond, trans])))
        self.transformer = transformer
        p = transformer.num_params
        self.net = mlp(len(cond), p * len(trans), hidden)
        with torch.no_grad():
            # Outputs are laid out parameter-major: [c_1 of every B coordinate, c_2 of every …].
            self.net[-1].bias.view(p, len(trans)).copy_(transformer.identity_params()[:, None])

    def _params(self, x_cond: Tensor) -> Tensor:
        raw = self.net(x_cond)
        return raw.unflatten(-1, (self.transformer.num_params, -1)).movedim(-2, -1)

    def _run(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        self._check(x)
        x_cond, x_trans = x[..., self.cond_idx], x[..., self.trans_idx]
        raw = self._params(x_cond)
        fn = self.transformer.inverse if inverse else self.transformer.forward
        y_trans, log_deriv = fn(x_trans, raw)
        return torch.cat([x_cond, y_trans], -1)[..., self.unsort], log_deriv.sum(-1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._run(x, inverse=False)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._run(y, inverse=True)


class AffineCoupling(Coupling):
    """RealNVP's y_B = x_B ⊙ exp(s(x_A)) + t(x_A);  log|det| = Σ s(x_A).

    The raw log-scale is bounded, s = c · tanh(raw / c), so that a single bad step cannot make
    exp(s) overflow.

    Args:
        dim: event size d (at least 2).
        mask: boolean tensor of shape (d,) selecting the conditioning coordinates; defaults to the
            even coordinates.
        hidden: widths of the conditioner's hidden layers.
        scale_bound: c, the bound on |s| per coordinate.
    """

    def __init__(
        self,
        dim: int,
        mask: Tensor | None = None,
        hidden: Sequence[int] = (64, 64),
        scale_bound: float = 3.0,
    ) -> None:
        super().__init__(dim, AffineTransformer(scale_bound), mask, hidden)


class SplineCoupling(Coupling):
    """Neural spline coupling (Durkan et al. 2019): y_B = g(x_B; θ(x_A)), g a monotone
    rational-quadratic spline on [−bound, bound] with linear tails of learned slope (see
    :class:`~vi_flows.transforms.splines.RQSpline`).

    Args:
        dim: event size d (at least 2).
        mask: boolean tensor of shape (d,) selecting the conditioning coordinates; defaults to the
            even coordinates.
        hidden: widths of the conditioner's hidden layers.
        bins: K, bins per spline (at least 2).
        bound: B > 0, the half-width of the spline's interval.
    """

    def __init__(
        self,
        dim: int,
        mask: Tensor | None = None,
        hidden: Sequence[int] = (64, 64),
        bins: int = 8,
        bound: float = 5.0,
    ) -> None:
        super().__init__(dim, RQSpline(bins, bound), mask, hidden)


class Permutation(Transform):
    """y = x[perm]: reorders coordinates, log|det| = 0.

    Args:
        dim: event size d.
        perm: the permutation; a random one (from the global torch RNG) when omitted.
    """

    def __init__(self, dim: int, perm: Tensor | None = None) -> None:
        super().__init__(dim)
        perm = torch.randperm(dim) if perm is None else torch.as_tensor(perm, dtype=torch.long)
        if sorted(perm.tolist()) != list(range(dim)):
            raise ValueError(f"not a permutation of range({dim}): {perm.tolist()}")
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        return x[..., self.perm], x.new_zeros(x.shape[:-1])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        self._check(y)
        return y[..., self.inv_perm], y.new_zeros(y.shape[:-1])


class Reverse(Permutation):
    """y = x reversed along the last dimension (a fixed permutation)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, torch.arange(dim - 1, -1, -1))
