"""Small networks: a functional MLP over a flat weight vector (batched over many θ) and a plain MLP.

A Bayesian-NN policy needs π_θ(a|s) for K different weight vectors θ_1..θ_K at once. Its layers are
hand-batched matmuls over a (K, …) weight tensor: with θ of shape (K, d) and inputs (K, B, n_in),

.. math:: h^{(l+1)}_k = f\\big(h^{(l)}_k W^{(l)}_k + b^{(l)}_k\\big),

one ``torch.matmul`` per layer for all K networks and no Python loop over K.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["FlatMLP", "mlp", "ACTIVATIONS"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


class FlatMLP:
    """An MLP whose weights are read from a flat vector θ ∈ ℝ^d (layout: W₁, b₁, W₂, b₂, …).

    Args:
        sizes: layer widths [n_in, h_1, …, n_out].
        activation: "tanh" or "relu" between layers (none after the last).

    >>> net = FlatMLP([3, 8, 2])
    >>> theta = torch.randn(5, net.num_params)          # K = 5 networks
    >>> net(theta, torch.randn(5, 7, 3)).shape           # each on its own 7 inputs
    torch.Size([5, 7, 2])
    """

    def __init__(self, sizes: Sequence[int], activation: str = "tanh") -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
        self.sizes = list(sizes)
        # The module's forward, not the module: nn.Module.__call__'s overhead showed up in the
        # rollout's profile.
        self._act = ACTIVATIONS[activation]().forward
        self.slices: list[tuple[slice, slice, int, int]] = []
        start = 0
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            w = slice(start, start + n_in * n_out)
            b = slice(w.stop, w.stop + n_out)
            self.slices.append((w, b, n_in, n_out))
            start = b.stop
        self.num_params = start
        self.split_sizes = [n for _, _, n_in, n_out in self.slices for n in (n_in * n_out, n_out)]

    def init_flat(self, hidden_gain: float = math.sqrt(2.0), out_gain: float = 0.01) -> Tensor:
        """Orthogonal weights (gain √2 inside, ``out_gain`` on the last layer), zero biases."""
        theta = torch.zeros(self.num_params)
        for i, (w, _, n_in, n_out) in enumerate(self.slices):
            gain = out_gain if i == len(self.slices) - 1 else hidden_gain
            weight = torch.empty(n_out, n_in)
            nn.init.orthogonal_(weight, gain=gain)
            theta[w] = weight.T.reshape(-1)
        return theta

    def __call__(self, theta: Tensor, x: Tensor) -> Tensor:
        """Outputs (*S, B, n_out) for weights θ (*S, d) and inputs x (*S, B, n_in)."""
        if theta.shape[-1] != self.num_params:
            raise ValueError(f"expected θ with {self.num_params} entries, got {theta.shape[-1]}")
        # One fused multiply-add per layer over the K = prod(S) networks (baddbmm), markedly
        # faster than matmul + add; inputs whose leading shapes only broadcast are expanded.
        if theta.dim() == 2 and x.dim() == 3 and theta.shape[0] == x.shape[0]:
            batch, flat, h = theta.shape[:1], theta, x  # the common case: no broadcasting
        else:
            batch = torch.broadcast_shapes(theta.shape[:-1], x.shape[:-2])
            flat = theta.expand(*batch, -1).reshape(-1, self.num_params)
            h = x.expand(*batch, *x.shape[-2:]).reshape(flat.shape[0], *x.shape[-2:])
        out = self.apply(self.layers(flat), h)
        return out.reshape(*batch, *out.shape[-2:])

    def layers(self, theta: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Every layer's weights (K, n_in, n_out) and bias (K, 1, n_out), as views of θ (K, d).

        Views: writing rows of θ in place (the collector's new sessions) updates them, so acting
        splits θ once per rollout instead of once per step.
        """
        # One split into every layer's W and b: its backward is one concatenation, where slicing
        # θ per layer back-propagated through a zero-filled (K, d) gradient per slice.
        parts = theta.split(self.split_sizes, dim=-1)
        return [
            (parts[2 * i].reshape(-1, n_in, n_out), parts[2 * i + 1].unsqueeze(-2))
            for i, (_, _, n_in, n_out) in enumerate(self.slices)
        ]

    def apply(self, layers: list[tuple[Tensor, Tensor]], h: Tensor) -> Tensor:
        """Outputs (K, B, n_out) of the :meth:`layers` of K networks on inputs h (K, B, n_in)."""
        last = len(layers) - 1
        for i, (weight, bias) in enumerate(layers):
            h = torch.baddbmm(bias, h, weight)
            if i < last:
                h = self._act(h)
        return h


def mlp(
    n_in: int,
    n_out: int,
    hidden: Sequence[int] = (64, 64),
    activation: str = "tanh",
    out_gain: float = 1.0,
) -> nn.Sequential:
    """A plain MLP with orthogonal initialisation (gain √2 inside, ``out_gain`` on the output)."""
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layer = nn.Linear(width, h)
        nn.init.orthogonal_(layer.weight, gain=math.sqrt(2.0))
        nn.init.zeros_(layer.bias)
        layers += [layer, ACTIVATIONS[activation]()]
        width = h
    last = nn.Linear(width, n_out)
    nn.init.orthogonal_(last.weight, gain=out_gain)
    nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)
