"""MADE: a masked MLP whose i-th outputs depend only on the inputs before i in a given order.

Germain et al. (2015). Each unit gets a degree; a weight from degree m to degree m' is kept iff
m' ≥ m between hidden layers (and from the inputs), and m' > m into the outputs. Input i has
degree ``rank[i]``, its position in ``order``; hidden degrees cycle through 0 … d − 2, so every
output can see every input before it. Output block i (the ``params_per_dim`` numbers of
coordinate i) has degree ``rank[i]`` and thus sees exactly x_j with ``rank[j] < rank[i]``: the
Jacobian of the outputs with respect to the inputs is strictly triangular in that order.

With ``residual=True`` the hidden layers are residual blocks h ← h + W relu(h) (He et al. 2016),
which keep the same degrees on both sides, so the mask property is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MADE", "MaskedLinear", "check_order"]


def check_order(order: Sequence[int] | Tensor | None, dim: int) -> Tensor:
    """``order`` as a long tensor, or ``range(dim)`` when None; ValueError unless a permutation."""
    if order is None:
        return torch.arange(dim)
    values = torch.as_tensor(order).flatten().tolist()
    if sorted(values) != list(range(dim)):
        raise ValueError(f"order must be a permutation of range({dim}), got {values}")
    return torch.as_tensor(values, dtype=torch.long)


class MaskedLinear(nn.Linear):
    """y = x (W ⊙ M)ᵀ + b with a fixed 0/1 mask M of W's shape."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Autoregressive conditioner: x (..., d) ↦ parameters (..., d, params_per_dim).

    The last layer starts at zero weights with bias ``init_bias`` (per coordinate), so the
    outputs start constant, e.g. at a transformer's identity parameters.

    Args:
        dim: d.
        params_per_dim: P, outputs per coordinate.
        hidden: hidden widths (all equal when ``residual``); each should be ≥ d − 1 so every
            degree is represented.
        order: the autoregressive order, a permutation of range(d) (identity when omitted):
            output ``order[k]`` depends on inputs ``order[:k]``.
        residual: use residual hidden blocks.
        init_bias: (P,) initial value of every coordinate's outputs (zeros when omitted).

    >>> made = MADE(3, 2, hidden=(8,), order=[2, 0, 1])
    >>> made(torch.randn(5, 3)).shape
    torch.Size([5, 3, 2])
    """

    def __init__(
        self,
        dim: int,
        params_per_dim: int,
        hidden: Sequence[int] = (64, 64),
        order: Sequence[int] | Tensor | None = None,
        residual: bool = False,
        init_bias: Tensor | None = None,
    ) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must be a non-empty list of positive widths, got {hidden}")
        if residual and len(set(hidden)) != 1:
            raise ValueError(f"residual blocks need equal hidden widths, got {hidden}")
        self.dim, self.params_per_dim, self.residual = dim, params_per_dim, residual
        order = check_order(order, dim)
        self.register_buffer("order", order)
        rank = torch.argsort(order)  # rank[i]: position of coordinate i in the order
        degrees = [rank]
        for width in hidden:
            degrees.append(torch.arange(width) % max(dim - 1, 1))
        layers = []
        for d_in, d_out in zip(degrees[:-1], degrees[1:], strict=True):
            mask = d_out[:, None] >= d_in[None, :]
            layers.append(MaskedLinear(len(d_in), len(d_out), mask))
        self.hidden_layers = nn.ModuleList(layers)
        out_degrees = rank.repeat(params_per_dim)  # parameter-major: [c_1 of all i, c_2 of all i…]
        out_mask = out_degrees[:, None] > degrees[-1][None, :]
        self.out = MaskedLinear(hidden[-1], dim * params_per_dim, out_mask)
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            bias = torch.zeros(params_per_dim) if init_bias is None else init_bias
            self.out.bias.view(params_per_dim, dim).copy_(bias[:, None])

    def forward(self, x: Tensor) -> Tensor:
        first, *rest = self.hidden_layers
        h = first(x)
        if self.residual:
            for layer in rest:
                h = h + layer(F.relu(h))
        else:
            for layer in rest:
                h = layer(F.relu(h))
        out = self.out(F.relu(h))
        return out.unflatten(-1, (self.params_per_dim, self.dim)).movedim(-2, -1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, params_per_dim={self.params_per_dim}, residual={self.residual}"
