"""Variational losses: small objects that ``fit`` minimizes.

A loss maps (q, log p̃, n) to a :class:`LossOutput`: the scalar to minimize plus the samples and
log-densities ``fit`` needs to check finiteness and record the ELBO. Each loss states its math and
its gradient estimator. They are registered by name in :data:`LOSSES`; :func:`get_loss` accepts a
name or a loss object.

>>> from vi_flows.flows import build
>>> q = build("gaussian", 2)
>>> out = get_loss("kl")(q, lambda x: -0.5 * x.square().sum(-1), 64)
>>> out.loss.backward()  # gradients reach the flow's parameters
>>> out.theta.shape, out.log_p.shape
(torch.Size([64, 2]), torch.Size([64]))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor

from vi_flows.objectives import LogProb, Reparameterized, elbo_terms
from vi_flows.registry import Registry

__all__ = ["KL", "LOSSES", "STL", "Loss", "LossOutput", "get_loss"]


@dataclass(frozen=True)
class LossOutput:
    """What one evaluation of a loss returns.

    Attributes:
        loss: the scalar to minimize (differentiable in q's parameters).
        theta: (n, d) the points where the target was evaluated.
        log_p: (n,) log p̃(θ) at those points (``fit`` checks it for non-finite values).
        log_q: (n,) log q(θ) at those points.
        elbo: scalar estimate of the ELBO E_q[log p̃ − log q] (β = 1) for the history.
    """

    loss: Tensor
    theta: Tensor
    log_p: Tensor
    log_q: Tensor
    elbo: Tensor


@runtime_checkable
class Loss(Protocol):
    """A variational objective ``fit`` can minimize."""

    def __call__(
        self, q: Reparameterized, log_prob: LogProb, num_samples: int, *, beta: float = 1.0
    ) -> LossOutput:
        """Evaluate on ``num_samples`` fresh draws, with log p̃ tempered by ``beta``."""
        ...


#: The losses by name: ``factory(**options) -> Loss``.
LOSSES: Registry[Callable[..., Loss]] = Registry("loss")


@LOSSES.register("kl")
class KL:
    r"""Reverse KL, the paper's Eq. 2 (``kl_loss``'s estimator, the one implementation):

    .. math::
        \mathcal{L}(φ) = \frac1n \sum_i \log q_φ(θ_i) − β \log p̃(θ_i),
        \quad θ_i = h_φ(ξ_i),\ ξ_i \sim N(0, I),

    an unbiased estimate of KL(q‖p_β) − log Z_β. Its gradient is the reparameterization
    ("total derivative") estimator: through θ_i and through the log-det in log q.
    """

    stl: bool = False

    def __call__(
        self, q: Reparameterized, log_prob: LogProb, num_samples: int, *, beta: float = 1.0
    ) -> LossOutput:
        theta, log_p, log_q = elbo_terms(q, log_prob, num_samples, stl=self.stl)
        loss = (log_q - beta * log_p).mean()
        return LossOutput(loss, theta, log_p, log_q, (log_p - log_q).detach().mean())

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@LOSSES.register("stl")
class STL(KL):
    r"""Reverse KL with the "sticking the landing" path-derivative gradient (Roeder et al. 2017).

    Same value as :class:`KL`, but log q(θ) is evaluated with φ detached, so the gradient keeps
    only the path through θ = h_φ(ξ): ∇_φ = (1/n) Σ ∂θ_i/∂φ · ∇_θ[log q(θ_i) − β log p̃(θ_i)].
    It is unbiased and has zero variance when q = p. Needs an invertible flow.
    """

    stl = True


def get_loss(loss: str | Loss) -> Loss:
    """A registered loss by name (default options) or any :class:`Loss` object as is.

    Raises:
        UnknownNameError: for an unknown name (the message lists the known ones).
    """
    if isinstance(loss, str):
        return LOSSES.get(loss)()
    if not callable(loss):
        raise TypeError(f"loss must be a name ({', '.join(LOSSES.names())}) or a Loss object")
    return loss
