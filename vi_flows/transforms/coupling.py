"""Affine coupling (RealNVP, Dinh et al. 2017) and permutations."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vi_flows.transforms.base import Transform

__all__ = ["AffineCoupling", "Permutation", "Reverse", "mlp", "alternating_mask"]


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


class AffineCoupling(Transform):
    """y_A = x_A,  y_B = x_B ⊙ exp(s(x_A)) + t(x_A);  log|det| = Σ s(x_A).

    A is the set of coordinates where ``mask`` is True (they pass through and condition), B the
    rest. The conditioner is an MLP; its raw log-scale is bounded through :meth:`log_scale`,
    s = c · tanh(raw / c), so that a single bad step cannot make exp(s) overflow.

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
        self.scale_bound = float(scale_bound)
        self.net = mlp(len(cond), 2 * len(trans), hidden)

    def log_scale(self, raw: Tensor) -> Tensor:
        """The bounded log-scale s = c · tanh(raw / c), |s| < c."""
        return self.scale_bound * torch.tanh(raw / self.scale_bound)

    def _params(self, x_cond: Tensor) -> tuple[Tensor, Tensor]:
        raw_s, shift = self.net(x_cond).chunk(2, dim=-1)
        return self.log_scale(raw_s), shift

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        x_cond, x_trans = x[..., self.cond_idx], x[..., self.trans_idx]
        s, shift = self._params(x_cond)
        y_trans = x_trans * s.exp() + shift
        return torch.cat([x_cond, y_trans], -1)[..., self.unsort], s.sum(-1)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        self._check(y)
        y_cond, y_trans = y[..., self.cond_idx], y[..., self.trans_idx]
        s, shift = self._params(y_cond)
        x_trans = (y_trans - shift) * (-s).exp()
        return torch.cat([y_cond, x_trans], -1)[..., self.unsort], -s.sum(-1)


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
