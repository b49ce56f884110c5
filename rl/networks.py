"""Small networks: a functional MLP over a flat weight vector (batched over many θ) and a plain MLP.

A Bayesian-NN policy needs π_θ(a|s) for K different weight vectors θ_1..θ_K at once. Its layers are
hand-batched matmuls over a (K, …) weight tensor: with θ of shape (K, d) and inputs (K, B, n_in),

.. math:: h^{(l+1)}_k = f\\big(h^{(l)}_k W^{(l)}_k + b^{(l)}_k\\big),

one ``torch.matmul`` per layer for all K networks and no Python loop over K.

Both networks differentiate through one autograd node per forward pass (:class:`_FlatMLPFn`,
:class:`_LinearStackFn`) whose backward is the layers' chain rule written out,

.. math:: \\delta^{(L)} = \\bar h^{(L)}, \\quad \\bar W^{(l)} = h^{(l-1)\\top} \\delta^{(l)}, \\quad
    \\bar b^{(l)} = \\textstyle\\sum_B \\delta^{(l)}, \\quad
    \\delta^{(l-1)} = f'\\big(h^{(l-1)}\\big) \\odot \\delta^{(l)} W^{(l)\\top},

with δ the gradient at a layer's pre-activation and f′ written in terms of the activation's
output h (1 − h² for tanh, 1[h > 0] for ReLU), instead of autograd's ~12 nodes; PPO takes
~1,600 such forward/backward pairs per 20k env steps. The activation is torch's own everywhere:
an earlier 2σ(2x) − 1 form of tanh (three kernels) was measured 3–4× slower than
``torch.tanh`` (one vectorised kernel) on the 2-core AVX-512 machine with torch 2.14, at the
update's sizes (256 × 64: 7 µs against 23 µs; V-PPO's padded 16 × 25 × 64: 11 against 46 µs).
Under ``create_graph`` (TRPO's Fisher-vector products) the backward recomputes the plain
differentiable forward, so second derivatives stay exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from rl.fused import replay, tracks

__all__ = [
    "FlatMLP",
    "MLP",
    "mlp",
    "linear_stack",
    "linear_stack_backprop",
    "group_layout",
    "to_groups",
    "ACTIVATIONS",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}

#: Per activation of :data:`ACTIVATIONS`: (the op, the backward as a function of the incoming
#: gradient and the output y).
_OPS: dict[str, tuple[Callable[[Tensor], Tensor], Callable]] = {
    "tanh": (torch.tanh, lambda grad, y: torch.ops.aten.tanh_backward(grad, y)),
    "relu": (torch.relu, lambda grad, y: grad * (y > 0)),
}


def group_layout(rows: Tensor, num_rows: int) -> tuple[Tensor, int]:
    """Each sample's place in its θ row's group and the largest group's size.

    For the row index ``rows`` (M,) into ``num_rows`` rows, ``pos[i]`` counts the earlier samples
    of row ``rows[i]``, so ``padded[rows, pos]`` lays the samples out as (num_rows, largest, …)
    groups (``rl.policies.BNNPolicy.grouped_distribution``, ``rl.written_out``).

    >>> group_layout(torch.tensor([1, 0, 1, 1]), 3)
    (tensor([0, 0, 1, 2]), 3)
    """
    # numpy: a stable sort by row puts each group's samples in their order, and a sample's place
    # is its rank in the sort minus its group's start. The update calls this per minibatch, and
    # on its few hundred indices numpy's ~1 µs per call beats torch's ~10 µs per kernel (the
    # torch version, a cumulative sum of one-hot rows, took ~50 µs).
    r = rows.cpu().numpy()
    order = np.argsort(r, kind="stable")
    counts = np.bincount(r, minlength=num_rows)
    starts = np.cumsum(counts) - counts
    pos = np.empty_like(r)
    pos[order] = np.arange(r.shape[0]) - starts[r[order]]
    return torch.from_numpy(pos).to(rows.device), int(counts.max()) if r.shape[0] else 0


def to_groups(x: Tensor, rows: Tensor, pos: Tensor, num_rows: int, largest: int) -> Tensor:
    """The samples ``x`` (M, …) laid out as (num_rows, largest, …) groups at the places
    :func:`group_layout` gave them, zeros elsewhere.

    >>> rows = torch.tensor([1, 0, 1])
    >>> pos, largest = group_layout(rows, 2)
    >>> to_groups(torch.tensor([[1.0], [2.0], [3.0]]), rows, pos, 2, largest).squeeze(-1)
    tensor([[2., 0.],
            [1., 3.]])
    """
    out = x.new_zeros(num_rows, largest, *x.shape[1:])
    out[rows, pos] = x
    return out


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
        self.activation = activation
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
            batch, flat, h = None, theta, x  # the common case: no broadcasting
        else:
            batch = torch.broadcast_shapes(theta.shape[:-1], x.shape[:-2])
            flat = theta.expand(*batch, -1).reshape(-1, self.num_params)
            h = x.expand(*batch, *x.shape[-2:]).reshape(flat.shape[0], *x.shape[-2:])
        if tracks(flat, h):
            out = _FlatMLPFn.apply(flat, h, self)
        else:
            out = self.apply(self.layers(flat), h)
        return out if batch is None else out.reshape(*batch, *out.shape[-2:])

    def layers(self, theta: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Every layer's weights (K, n_in, n_out) and bias (K, 1, n_out), as views of θ (K, d).

        Views: writing rows of θ in place (the collector's new sessions) updates them, so acting
        splits θ once per rollout instead of once per step.
        """
        parts = theta.split(self.split_sizes, dim=-1)
        return [
            (parts[2 * i].reshape(-1, n_in, n_out), parts[2 * i + 1].unsqueeze(-2))
            for i, (_, _, n_in, n_out) in enumerate(self.slices)
        ]

    def apply(
        self, layers: list[tuple[Tensor, Tensor]], h: Tensor, *, keep: list[Tensor] | None = None
    ) -> Tensor:
        """Outputs (K, B, n_out) of the :meth:`layers` of K networks on inputs h (K, B, n_in).

        Differentiable where autograd records the pass; ``keep`` collects the hidden
        activations (the fused node's backward).
        """
        act = _OPS[self.activation][0]
        last = len(layers) - 1
        for i, (weight, bias) in enumerate(layers):
            h = torch.baddbmm(bias, h, weight)
            if i < last:
                h = act(h)
                if keep is not None:
                    keep.append(h)
        return h

    def backprop(
        self,
        layers: list[tuple[Tensor, Tensor]],
        inputs: list[Tensor],
        grad: Tensor,
        *,
        need_x: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """The chain rule of :meth:`apply` (module docstring), written out.

        Args:
            layers: the :meth:`layers` the forward ran with.
            inputs: every layer's input (K, B, n_in): x, then the hidden activations ``apply``
                collected in ``keep``.
            grad: the gradient at the output (K, B, n_out).
            need_x: also return the gradient at x (else ``None``).

        Returns:
            The gradient for θ (K, d) in its layout, and the one at x.

        >>> net = FlatMLP([3, 8, 2])
        >>> theta, x = torch.randn(4, net.num_params, requires_grad=True), torch.randn(4, 5, 3)
        >>> hidden = []
        >>> out = net.apply(net.layers(theta), x, keep=hidden)
        >>> grad, _ = net.backprop(net.layers(theta.detach()), [x, *hidden], torch.ones_like(out))
        >>> bool(torch.allclose(grad, torch.autograd.grad(out.sum(), theta)[0], atol=1e-5))
        True
        """
        parts: list[Tensor] = []
        delta, grad_x = grad, None
        for i in range(len(layers) - 1, -1, -1):
            weight, h_in = layers[i][0], inputs[i]
            parts += [delta.sum(1), torch.bmm(h_in.transpose(1, 2), delta).flatten(1)]
            if i > 0 or need_x:
                back = torch.bmm(delta, weight.transpose(1, 2))
                if i > 0:
                    delta = _OPS[self.activation][1](back, h_in)
                else:
                    grad_x = back
        return torch.cat(parts[::-1], dim=-1), grad_x


class _FlatMLPFn(torch.autograd.Function):
    """:meth:`FlatMLP.apply` on θ (K, d) and x (K, B, n_in) as one autograd node (module
    docstring); gradients for θ (K, d) and, when x requires one, x."""

    @staticmethod
    def forward(ctx, theta: Tensor, x: Tensor, net: FlatMLP) -> Tensor:
        hidden: list[Tensor] = []
        out = net.apply(net.layers(theta), x, keep=hidden)
        ctx.net = net
        ctx.save_for_backward(theta, x, *hidden)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        theta, x, *hidden = ctx.saved_tensors
        net, (need_theta, need_x, _) = ctx.net, ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph: a differentiable backward
            return (*replay(lambda t, h: net.apply(net.layers(t), h), (theta, x), ctx, grad), None)
        grad_theta, grad_x = net.backprop(net.layers(theta), [x, *hidden], grad, need_x=need_x)
        return (grad_theta if need_theta else None), grad_x, None


class MLP(nn.Sequential):
    """Linear layers with an activation between them (an ``nn.Sequential``, the same modules and
    state-dict keys), whose differentiable forward is one autograd node (module docstring).

    >>> net = mlp(3, 2, hidden=(8,))
    >>> x = torch.randn(5, 3)
    >>> bool(torch.allclose(net(x), net[2](torch.tanh(net[0](x))), atol=1e-6))
    True
    """

    def __init__(self, *layers: nn.Module, activation: str = "tanh") -> None:
        super().__init__(*layers)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        linear = list(self._modules.values())[::2]  # read each call: a layer may be replaced
        params = [t for layer in linear for t in (layer.weight, layer.bias)]
        flat = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
        if tracks(flat, *params):
            out = _LinearStackFn.apply(flat, self.activation, *params)
        else:
            out = linear_stack(flat, params, self.activation)
        return out if x.dim() == 2 else out.reshape(*x.shape[:-1], out.shape[-1])


def linear_stack(
    h: Tensor, params: Sequence[Tensor], activation: str, keep: list[Tensor] | None = None
) -> Tensor:
    """h (B, n_in) through Linear layers (weights (n_out, n_in) and biases, alternating).

    ``keep`` collects the hidden activations (what :func:`linear_stack_backprop` needs).
    """
    act = _OPS[activation][0]
    last = len(params) // 2 - 1
    for i in range(last + 1):
        h = torch.addmm(params[2 * i + 1], h, params[2 * i].t())
        if i < last:
            h = act(h)
            if keep is not None:
                keep.append(h)
    return h


def linear_stack_backprop(
    params: Sequence[Tensor],
    inputs: Sequence[Tensor],
    grad: Tensor,
    activation: str,
    needs: Sequence[bool] | None = None,
) -> tuple[Tensor | None, list[Tensor | None]]:
    """The chain rule of :func:`linear_stack` (module docstring), written out.

    Args:
        params: the weights and biases the forward ran with.
        inputs: every layer's input: h, then the activations ``linear_stack`` kept.
        grad: the gradient at the output (B, n_out).
        activation: the forward's activation.
        needs: whether the input and then each parameter needs its gradient (default: the
            parameters only).

    Returns:
        The gradient at h (``None`` unless needed) and one per parameter (``None`` where not).

    >>> params = [torch.randn(8, 3), torch.randn(8), torch.randn(2, 8), torch.randn(2)]
    >>> params = [p.requires_grad_() for p in params]
    >>> hidden, h = [], torch.randn(5, 3)
    >>> out = linear_stack(h, params, "tanh", keep=hidden)
    >>> _, grads = linear_stack_backprop([p.detach() for p in params], [h, *hidden],
    ...                                  torch.ones_like(out), "tanh")
    >>> auto = torch.autograd.grad(out.sum(), params)
    >>> all(torch.allclose(g, a, atol=1e-5) for g, a in zip(grads, auto))
    True
    """
    needs = needs if needs is not None else (False, *[True] * len(params))
    grads: list[Tensor | None] = [None] * len(params)
    delta, grad_x = grad, None
    for i in range(len(params) // 2 - 1, -1, -1):
        if needs[1 + 2 * i]:
            grads[2 * i] = delta.t().mm(inputs[i])
        if needs[2 + 2 * i]:
            grads[2 * i + 1] = delta.sum(0)
        if i > 0 or needs[0]:
            back = delta.mm(params[2 * i])
            if i > 0:
                delta = _OPS[activation][1](back, inputs[i])
            else:
                grad_x = back
    return grad_x, grads


class _LinearStackFn(torch.autograd.Function):
    """:class:`MLP`'s forward on x (B, n_in) as one autograd node (module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, activation: str, *params: Tensor) -> Tensor:
        hidden: list[Tensor] = []
        out = linear_stack(x, params, activation, keep=hidden)
        ctx.activation, ctx.num_params = activation, len(params)
        ctx.save_for_backward(x, *params, *hidden)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors
        x, params, hidden = saved[0], saved[1 : 1 + ctx.num_params], saved[1 + ctx.num_params :]
        if torch.is_grad_enabled():  # create_graph: a differentiable backward
            return tuple(
                replay(
                    lambda h, _, *p: linear_stack(h, p, ctx.activation),
                    (x, None, *params),  # None: the activation's slot
                    ctx,
                    grad,
                )
            )
        needs = ctx.needs_input_grad
        grad_x, grads = linear_stack_backprop(
            params, [x, *hidden], grad, ctx.activation, needs=(needs[0], *needs[2:])
        )
        return (grad_x, None, *grads)


def mlp(
    n_in: int,
    n_out: int,
    hidden: Sequence[int] = (64, 64),
    activation: str = "tanh",
    out_gain: float = 1.0,
) -> MLP:
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
    return MLP(*layers, activation=activation)
