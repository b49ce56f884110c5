"""The learned state-value baseline V(s), shared by every algorithm."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rl.buffer import Batch
from rl.optim import check_finite_gradient, clip_grad_norm, optimizer_step, zero_grad
from vi_flows import distributed

__all__ = ["fit_value", "value_loss", "value_step", "reduce_value_loss"]


def value_loss(critic: nn.Module, obs: Tensor, returns: Tensor) -> Tensor:
    """The minibatch MSE mean (V(s) − R̂)² over ``obs`` and ``returns``; under several ranks this
    rank's share Σ_local (V − R̂)² / m_global of the global minibatch's (they add up to it)."""
    # F.mse_loss: the same floats as (V − R̂)².mean(), value and gradient, in one kernel each
    # way instead of four (the critic takes a step on every PPO minibatch).
    values = critic(obs).squeeze(-1)
    if distributed.is_distributed():
        m = distributed.all_reduce_sum(torch.tensor(float(returns.shape[0])))
        return F.mse_loss(values, returns, reduction="sum") / m
    return F.mse_loss(values, returns)


def fit_value(
    critic: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    epochs: int,
    minibatch_size: int,
    generator: torch.Generator,
    max_grad_norm: float | None = None,
) -> float:
    """Regress V(s) on the GAE returns R̂ = Â + V_old(s) by minibatch MSE; returns the last loss
    (NaN when no step ran: ``epochs`` = 0 leaves nothing to report, not a perfect fit).

    Under several ranks each rank's loss is its share Σ_local (V − R̂)² / m_global of the global
    minibatch's MSE and the gradients are summed over ranks (see :mod:`rl.algorithms.base`).
    """
    loss: Tensor = torch.full((), math.nan)
    params = list(critic.parameters())
    for _ in range(epochs):
        for rows in batch.minibatch_rows(minibatch_size, generator):
            obs, returns = batch.obs.index_select(0, rows), batch.returns.index_select(0, rows)
            loss = value_loss(critic, obs, returns)
            zero_grad(optimizer)
            loss.backward()
            value_step(optimizer, params, max_grad_norm)
    return reduce_value_loss(loss)


def value_step(
    optimizer: torch.optim.Optimizer, params: list[Tensor], max_grad_norm: float | None
) -> None:
    """Apply the critic's gradients: sum them over ranks (each rank's loss is its share), clip
    their norm to ``max_grad_norm`` (0 or None: no clipping) and take the optimizer's step."""
    distributed.all_reduce_grads(params, weights=1.0)
    if max_grad_norm:  # the norm is computed anyway: a non-finite one stops before the step
        check_finite_gradient(float(clip_grad_norm(params, max_grad_norm)), "critic")
    optimizer_step(optimizer)


def reduce_value_loss(loss: Tensor) -> float:
    """The logged value loss: :func:`value_loss` of the last minibatch, summed over ranks (the
    global minibatch's MSE)."""
    if distributed.is_distributed():
        loss = distributed.all_reduce_sum(loss.detach().clone())
    return float(loss.detach())
