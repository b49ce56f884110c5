"""What the hand-differentiated autograd nodes of rl/ share (:mod:`rl.networks`' MLP passes,
:mod:`rl.distributions`' Gaussian log-density).

Such a node replaces autograd's chain of small nodes by one whose backward is written out: on
the update's small tensors every op costs a few microseconds of fixed overhead whatever its
size, and the written-out backward takes a fraction of the ops. That backward is not itself
differentiable, so under ``create_graph`` (TRPO's Fisher-vector products) the node recomputes
its plain differentiable forward and differentiates that instead (:func:`replay`): second
derivatives stay exact.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["tracks", "replay"]


def tracks(*tensors: Tensor) -> bool:
    """Whether autograd records an op on ``tensors`` (grad mode on and one requires grad)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def replay(
    forward: Callable[..., Tensor], inputs: tuple[Tensor, ...], ctx, grad: Tensor
) -> list[Tensor | None]:
    """The input gradients of ``forward(*inputs)`` recomputed with autograd's own ops, for a
    fused node's backward under ``create_graph`` (``ctx.needs_input_grad`` says which)."""
    with torch.enable_grad():
        out = forward(*inputs)
    wanted = [t for t, need in zip(inputs, ctx.needs_input_grad, strict=False) if need]
    grads = iter(torch.autograd.grad(out, wanted, grad, create_graph=True))
    return [next(grads) if need else None for need in ctx.needs_input_grad[: len(inputs)]]
