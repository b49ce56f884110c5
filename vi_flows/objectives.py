"""The explicit KL objective (Xu 2018, Eq. 2) for an unnormalized target.

For q = h_φ # N(0, I) and p̃ = Z p,

.. math::

    KL(q‖p) = E_ξ[\\log q_0(ξ) − \\log|\\det ∂h_φ/∂ξ| − \\log p̃(h_φ(ξ))] + \\log Z,

so minimizing the Monte Carlo average of ``log q − log p̃`` over reparameterized samples
minimizes KL(q‖p) without knowing Z. Its gradient is Eq. 2: the log-likelihood term pulls samples
towards high density and the log-det term is the repulsive force that keeps them apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from vi_flows.flows import Flow

__all__ = [
    "HasLogProb",
    "LogProb",
    "Reparameterized",
    "as_log_prob",
    "check_log_prob_output",
    "elbo_terms",
    "kl_loss",
]

#: A log-density: maps θ of shape (n, d) to log p̃(θ) of shape (n,).
LogProb = Callable[[Tensor], Tensor]


@runtime_checkable
class HasLogProb(Protocol):
    """A target given as an object: a vi_flows target, a flow, a torch distribution."""

    def log_prob(self, theta: Tensor) -> Tensor:
        """log p̃(θ) (n,) at θ (n, d)."""
        ...


@runtime_checkable
class Reparameterized(Protocol):
    """What the KL objective needs of q: push base noise through, and draw base noise.

    :class:`~vi_flows.flows.Flow` is one; so is any module with this interface, e.g. the
    state-conditioned action-mean posteriors of ``rl.policies`` (§3.1), whose θ = μ_φ(s) + σ_φ(s)ξ
    depends on the state. ``stl=True`` additionally needs ``has_log_prob``/``log_prob`` (as
    :class:`~vi_flows.flows.Flow` has) and ``named_parameters``/``named_buffers``.
    """

    def __call__(self, xi: Tensor) -> tuple[Tensor, Tensor]:
        """(θ, log q(θ)) for base noise ξ."""
        ...

    def base_sample(self, sample_shape: int | tuple[int, ...] = ()) -> Tensor:
        """Base noise ξ ~ q₀ of shape (*sample_shape, d)."""
        ...


def as_log_prob(target: Any) -> LogProb:
    """Accept a target object (anything with ``log_prob``) or a plain callable θ ↦ log p̃(θ)."""
    fn = target.log_prob if isinstance(target, HasLogProb) else target
    if not callable(fn):
        raise TypeError(f"expected a callable log-density or a target, got {type(target)!r}")
    return fn


def check_log_prob_output(log_p: Any, theta: Tensor) -> None:
    """Raise a clear error unless ``log_p`` is a tensor of shape ``theta.shape[:-1]``."""
    expected = tuple(theta.shape[:-1])
    if not isinstance(log_p, Tensor):
        raise TypeError(f"log_prob must return a torch.Tensor, got {type(log_p).__name__}")
    if tuple(log_p.shape) != expected:
        raise ValueError(
            f"log_prob returned shape {tuple(log_p.shape)} for inputs of shape "
            f"{tuple(theta.shape)}; expected {expected} (one log-density per sample: "
            "sum over the last dimension, do not reduce over the batch)"
        )


class _DetachedLogProb(nn.Module):
    """``q.log_prob`` as a module's forward, so ``functional_call`` can swap in detached params."""

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, theta: Tensor) -> Tensor:
        return self.flow.log_prob(theta)


def elbo_terms(
    q: Reparameterized,
    log_prob: LogProb,
    num_samples: int,
    *,
    stl: bool = False,
    xi: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw reparameterized samples and return ``(θ, log p̃(θ), log q(θ))``.

    Args:
        q: the variational family: a :class:`Flow` or any :class:`Reparameterized` module.
        log_prob: the unnormalized target log-density.
        num_samples: number of samples n.
        stl: "sticking the landing" (Roeder et al. 2017): evaluate log q with the flow's
            parameters detached, so only the path derivative through θ remains. Its gradient is
            unbiased and has zero variance when q = p. Needs an invertible flow.
        xi: base noise ξ (n, d) to push through the flow instead of fresh draws (``num_samples``
            is then ignored). Policy learning uses it: the rollouts were collected under
            θ_k = h_φ(ξ_k), so the gradient must be taken at the same ξ_k.

    Returns:
        θ (n, d), log p̃(θ) (n,), log q(θ) (n,), all differentiable in the flow's parameters.
    """
    if stl:
        if not q.has_log_prob:
            raise ValueError(
                "stl=True needs log q at the samples with the parameters detached, i.e. an "
                f"invertible flow; {type(q.transform).__name__} has no closed-form inverse"
            )
        theta = q(q.base_sample(num_samples) if xi is None else xi)[0]
        detached = {f"flow.{k}": v.detach() for k, v in q.named_parameters()}
        detached.update({f"flow.{k}": v for k, v in q.named_buffers()})
        log_q = torch.func.functional_call(_DetachedLogProb(q), detached, (theta,))
    else:
        theta, log_q = q(q.base_sample(num_samples) if xi is None else xi)
    log_p = log_prob(theta)
    check_log_prob_output(log_p, theta)
    return theta, log_p, log_q


def kl_loss(
    q: Reparameterized,
    log_prob: LogProb,
    num_samples: int = 256,
    *,
    beta: float = 1.0,
    stl: bool = False,
    xi: Tensor | None = None,
) -> Tensor:
    """Monte Carlo estimate of E_q[log q(θ) − β log p̃(θ)], to be minimized.

    With β = 1 this is KL(q‖p) − log Z = −ELBO; β < 1 tempers the target (annealing).

    >>> from vi_flows.flows import build
    >>> q = build("gaussian", 2)
    >>> loss = kl_loss(q, lambda x: -0.5 * x.square().sum(-1), 64)
    >>> loss.backward()  # gradients reach the flow's parameters
    """
    _, log_p, log_q = elbo_terms(q, log_prob, num_samples, stl=stl, xi=xi)
    # β = 1 (the plain KL) skips the multiply: the same floats, one kernel and one backward node
    # fewer per step (policy learning takes this step after every minibatch)
    return (log_q - (log_p if beta == 1.0 else beta * log_p)).mean()
