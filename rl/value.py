"""The learned state-value baseline V(s), shared by every algorithm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rl.buffer import Batch
from rl.optim import clip_grad_norm, optimizer_step, zero_grad
from vi_flows import distributed

__all__ = ["fit_value"]


def fit_value(
    critic: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    epochs: int,
    minibatch_size: int,
    generator: torch.Generator,
    max_grad_norm: float | None = None,
) -> float:
    """Regress V(s) on the GAE returns R̂ = Â + V_old(s) by minibatch MSE; returns the last loss.

    Under several ranks each rank's loss is its share Σ_local (V − R̂)² / m_global of the global
    minibatch's MSE and the gradients are summed over ranks (see :mod:`rl.algorithms.base`).
    """
    loss: Tensor = torch.zeros(())
    several = distributed.is_distributed()
    params = list(critic.parameters())
    for _ in range(epochs):
        for rows in batch.minibatch_rows(minibatch_size, generator):
            obs, returns = batch.obs.index_select(0, rows), batch.returns.index_select(0, rows)
            error = critic(obs).squeeze(-1) - returns
            if several:
                m = distributed.all_reduce_sum(torch.tensor(float(len(rows))))
                loss = error.square().sum() / m
            else:
                loss = error.square().mean()
            zero_grad(optimizer)
            loss.backward()
            distributed.all_reduce_grads(critic, weights=1.0)
            if max_grad_norm:
                clip_grad_norm(params, max_grad_norm)
            optimizer_step(optimizer)
    if several:
        loss = distributed.all_reduce_sum(loss.detach().clone())
    return float(loss.detach())
