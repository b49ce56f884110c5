"""Gradient clipping and the fused Adam step as torch computes them, minus per-call overhead.

A PPO update takes ~120 optimizer steps (policy and value) per 2,048 samples, each on a handful
of small tensors, so fixed Python costs showed up in the trainer's profile: grouping the
gradients by device and dtype in ``torch.nn.utils.clip_grad_norm_`` (~20 µs a call), and in
``Adam.step`` (fused) the hook and profiler wrapper, the per-group bookkeeping and the same
grouping again around its two kernels (~35 µs of a 55 µs step), plus ~13 µs in ``zero_grad``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import optimizer as torch_optimizer

__all__ = ["check_finite_gradient", "clip_grad_norm", "zero_grad", "optimizer_step"]


def clip_grad_norm(params: Iterable[Tensor], max_norm: float) -> Tensor:
    """``nn.utils.clip_grad_norm_(params, max_norm, foreach=True)``: scale the gradients in place
    by min(1, max_norm / (‖g‖₂ + 1e-6)) and return the pre-clipping norm ‖g‖₂ (a 0-d tensor).

    Where every gradient is a float32 or float64 CPU tensor of one dtype (the trainer's case)
    this runs torch's own sequence of operations (per-tensor norms, the norm of their stack, the
    coefficient, one foreach multiply, skipped where the clamped coefficient is exactly 1), so
    the results are the same floats; otherwise it calls torch's function.

    >>> p = nn.Parameter(torch.zeros(2)); p.grad = torch.tensor([3.0, 4.0])
    >>> float(clip_grad_norm([p], 1.0)), [round(float(g), 4) for g in p.grad]
    (5.0, [0.6, 0.8])
    """
    params = list(params)
    grads = [p.grad for p in params if p.grad is not None]
    dtype = grads[0].dtype if grads else None
    if dtype not in _NUMPY_DTYPES or any(g.device.type != "cpu" or g.dtype != dtype for g in grads):
        return nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    norms = torch._foreach_norm(grads, 2.0)
    total = torch.linalg.vector_norm(torch.stack(norms), 2.0)
    value = total.item()
    if not math.isfinite(value):  # torch's own arithmetic (no numpy overflow warnings)
        torch._foreach_mul_(grads, (float(max_norm) / (total + 1e-6)).clamp(max=1.0))
        return total
    np_dtype, largest = _NUMPY_DTYPES[dtype]
    if not max_norm < largest:  # torch: an infinite coefficient, clamped to 1: no change
        return total
    # torch's coefficient max_norm / (‖g‖ + 1e-6) is Tensor.__rtruediv__, reciprocal() times
    # max_norm, in the gradients' dtype; numpy's scalars of that dtype round each operation the
    # same way (IEEE), without the three kernels and the comparison, after every optimizer step.
    reciprocal = np_dtype(1.0) / (np_dtype(value) + np_dtype(1e-6))
    limit = np_dtype(max_norm)
    # torch multiplies by the coefficient clamped to 1, a no-op from 1 up; the float64 product
    # decides that without the float32 one overflowing (exact for float32 factors, and for
    # float64 the same rounded product).
    if float(reciprocal) * float(limit) < 1.0:
        torch._foreach_mul_(grads, float(reciprocal * limit))
    return total


#: The gradient dtypes :func:`clip_grad_norm` computes its coefficient for in numpy.
_NUMPY_DTYPES = {
    torch.float32: (np.float32, float(np.finfo(np.float32).max)),
    torch.float64: (np.float64, float(np.finfo(np.float64).max)),
}


def check_finite_gradient(norm: float, what: str = "policy") -> None:
    """Raise ``FloatingPointError`` before a step with a non-finite gradient (norm ``norm``) of
    the ``what`` network: the step would write NaN into every weight, and the run would go on
    acting, evaluating and checkpointing a broken network without a word."""
    if not math.isfinite(norm):
        raise FloatingPointError(
            f"the {what} gradient is not finite (norm {norm}); its step was not taken, so the "
            "run's last checkpoint, if it has one, predates it. Usual causes: lr or a reward "
            "scale too large, or advantages of a batch too small to normalise"
        )


def zero_grad(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.zero_grad()`` (set_to_none): every parameter's gradient becomes None."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None


def _fast_adam_groups(optimizer: torch.optim.Optimizer) -> list[tuple[dict, list[Tensor]]] | None:
    """Each group's parameters with a gradient, where :func:`optimizer_step` may run torch's kernels
    directly: a fused Adam on CPU tensors of one dtype, its state made by an earlier step, no
    hooks, AMP scaler, amsgrad, tensor lr or other option that changes the step; else None."""
    # An instance-level step (an LR scheduler's step counter, a user's wrapper) must run.
    if type(optimizer) is not torch.optim.Adam or "step" in vars(optimizer):
        return None
    if (
        getattr(optimizer, "grad_scale", None) is not None
        or getattr(optimizer, "found_inf", None) is not None
    ):
        return None
    hooks = (
        optimizer._optimizer_step_pre_hooks,
        optimizer._optimizer_step_post_hooks,
        torch_optimizer._global_optimizer_pre_hooks,
        torch_optimizer._global_optimizer_post_hooks,
    )
    if any(hooks):
        return None
    groups, dtype = [], None
    for group in optimizer.param_groups:
        scalars = [group["lr"], *group["betas"]]
        plain = group["fused"] and not any(isinstance(x, Tensor) for x in scalars)
        options = ("amsgrad", "capturable", "differentiable", "decoupled_weight_decay")
        if not plain or any(group.get(name) for name in options):
            return None
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            dtype = dtype or p.dtype
            state = optimizer.state.get(p)
            if not state or p.device.type != "cpu" or p.dtype != dtype or p.grad.is_sparse:
                return None
            if p.grad.dtype != dtype or p.grad.device.type != "cpu" or p.is_complex():
                return None
        groups.append((group, params))
    return groups


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``; for a fused CPU Adam (``rl.algorithms.base.adam``) past its first
    step, torch's own two kernels (the step counts' increment, then ``_fused_adam_`` with the
    group's settings), so the parameters and the state are the same floats; any other optimizer
    or setting (hooks, an LR scheduler, amsgrad, …) takes ``optimizer.step()``."""
    groups = _fast_adam_groups(optimizer)
    if groups is None:
        optimizer.step()
        return
    state = optimizer.state
    for group, params in groups:
        if not params:
            continue
        beta1, beta2 = group["betas"]
        steps = [state[p]["step"] for p in params]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(
            params,
            [p.grad for p in params],
            [state[p]["exp_avg"] for p in params],
            [state[p]["exp_avg_sq"] for p in params],
            [],
            steps,
            amsgrad=False,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
            grad_scale=None,
            found_inf=None,
        )
