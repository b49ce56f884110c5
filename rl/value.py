"""The learned state-value baseline V(s), shared by every algorithm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rl.buffer import Batch

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
    """Regress V(s) on the GAE returns R̂ = Â + V_old(s) by minibatch MSE; returns the last loss."""
    loss: Tensor = torch.zeros(())
    for _ in range(epochs):
        for mb in batch.minibatches(minibatch_size, generator):
            loss = (critic(mb.obs).squeeze(-1) - mb.returns).square().mean()
            optimizer.zero_grad()
            loss.backward()
            if max_grad_norm:
                nn.utils.clip_grad_norm_(critic.parameters(), max_grad_norm, foreach=True)
            optimizer.step()
    return float(loss.detach())
