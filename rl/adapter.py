r"""The seam: rollouts collected under θ_k = h_φ(ξ_k) → a surrogate log-density over θ.

The posterior p(θ) ∝ exp(R(θ)/α) (Eq. 3) has no tractable density, but its score is the policy
gradient divided by α (Eqs. 4–5). :func:`surrogate_log_density` builds a callable
θ (K, d) ↦ log p̃(θ) (K,) whose autograd gradient at θ_k is (1/α) ∂R̂/∂θ_k, the policy-gradient
estimate from the samples collected under θ_k:

.. math::

    \log \tilde p(θ_k) = \frac{1}{α}\,\frac{K}{M} \sum_{i:\, k(i)=k} s_i(θ_k),

with s_i a per-sample surrogate (REINFORCE log π·Â, TRPO's ratio, PPO's clipped or KL-penalised
ratio). The K/M factor measures R̂ per time step: averaged over the K sessions it is the usual
per-sample mean (1/α)(1/M) Σ_i s_i, so α is a temperature per step of (normalised) advantage.

The unchanged :func:`vi_flows.objectives.kl_loss` then fits q_φ with its log-det term:
``kl_loss(q, log_p, xi=xi_k)`` = mean_k[log q(h_φ(ξ_k)) − log p̃(h_φ(ξ_k))], whose gradient is
Eq. 4 (Eq. 9 for TRPO's L(θ), §5 for PPO). SVPG takes ∇_θ log p̃ at its particles as the score.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from rl.buffer import Batch
from rl.policy_api import PolicyFamily
from vi_flows.objectives import LogProb, kl_loss

__all__ = [
    "Objective",
    "reinforce_objective",
    "ratio_objective",
    "clipped_objective",
    "kl_penalty_objective",
    "surrogate_log_density",
    "policy_log_density",
    "posterior_loss",
]

#: Per-sample surrogate s_i as a function of the per-sample log π_θ(a_i|s_i), (M,) ↦ (M,).
Objective = Callable[[Tensor], Tensor]


def reinforce_objective(adv: Tensor) -> Objective:
    """s_i = log π_θ(a_i|s_i) Â_i, whose gradient is the REINFORCE estimate (Eq. 5)."""
    return lambda logp: logp * adv


def ratio_objective(logp_old: Tensor, adv: Tensor) -> Objective:
    """TRPO's L(θ): s_i = π_θ(a_i|s_i) / π_old(a_i|s_i) · Â_i."""
    return lambda logp: torch.exp(logp - logp_old) * adv


def clipped_objective(logp_old: Tensor, adv: Tensor, clip: float) -> Objective:
    """PPO-clip: s_i = min(r_i Â_i, clip(r_i, 1 − ε, 1 + ε) Â_i), r_i = π_θ/π_old.

    Where the clipped term is the smaller one, r lies outside [1 − ε, 1 + ε] (or Â = 0), so its
    gradient is 0: the minimum is taken as a selection of r Â by a mask computed without
    gradient tracking, the clipped values entering as constants. The values and the gradients
    are those of ``torch.minimum`` (where the terms tie, which is whenever r is inside the range,
    minimum sends half the gradient down each path and both halves reach r unchanged), from
    two backward kernels instead of ~18 (minimum's tie handling and clamp's mask).

    >>> logp_old, adv = torch.zeros(3), torch.tensor([1.0, 1.0, -1.0])
    >>> logp = torch.log(torch.tensor([1.1, 1.5, 1.5])).requires_grad_()
    >>> s = clipped_objective(logp_old, adv, 0.2)(logp)
    >>> [round(x, 4) for x in s.tolist()], torch.autograd.grad(s.sum(), logp)[0].tolist()
    ([1.1, 1.2, -1.5], [1.100000023841858, 0.0, -1.5])
    """

    def objective(logp: Tensor) -> Tensor:
        ratio = torch.exp(logp - logp_old)
        unclipped = ratio * adv
        with torch.no_grad():
            clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * adv
            keep = unclipped <= clipped
        return torch.where(keep, unclipped, clipped)

    return objective


def kl_penalty_objective(logp_old: Tensor, adv: Tensor, beta: float) -> Objective:
    """PPO-penalty (§5): s_i = r_i Â_i − β KL̂_i, with KL̂_i = (r_i − 1) − log r_i.

    KL̂_i ≥ 0 is an unbiased estimate of KL(π_old‖π_θ) at s_i since a_i ~ π_old.
    """

    def objective(logp: Tensor) -> Tensor:
        log_ratio = logp - logp_old
        ratio = torch.exp(log_ratio)
        return ratio * adv - beta * ((ratio - 1.0) - log_ratio)

    return objective


def surrogate_log_density(
    log_prob: Callable[[Tensor], Tensor],
    objective: Objective,
    rows: Tensor,
    num_thetas: int,
    alpha: float,
) -> LogProb:
    """θ (K, d) ↦ (1/α)(K/M) Σ_{i: rows_i = k} s_i(θ_k), shape (K,).

    Args:
        log_prob: maps the θ table (K, d) to log π_{θ[rows_i]}(a_i|s_i) (M,)
            (:meth:`rl.policy_api.PolicyFamily.log_prob` bound to a batch).
        objective: the per-sample surrogate s (see the ``*_objective`` factories).
        rows: for each sample i the index k(i) ∈ [0, K) of the θ it was collected under.
        num_thetas: K.
        alpha: the temperature α > 0.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    scale = num_thetas / (rows.shape[0] * alpha)

    def log_p(theta: Tensor) -> Tensor:
        if theta.shape[0] != num_thetas:
            raise ValueError(f"expected {num_thetas} θ rows, got {theta.shape[0]}")
        per_sample = objective(log_prob(theta))
        total = per_sample.new_zeros(num_thetas).index_add(0, rows, per_sample)
        return scale * total

    return log_p


def policy_log_density(
    policy: PolicyFamily, batch: Batch, objective: Objective, alpha: float
) -> tuple[nn.Module, Tensor, LogProb]:
    """``(q, ξ, log p̃)`` for a policy family and a batch (see :mod:`rl.policy_api`)."""
    q, xi, rows = policy.variational(batch)

    def log_prob(theta: Tensor) -> Tensor:
        return policy.log_prob(batch, theta)

    return q, xi, surrogate_log_density(log_prob, objective, rows, xi.shape[0], alpha)


def posterior_loss(q: nn.Module, log_p: LogProb, xi: Tensor, has_kl_term: bool) -> Tensor:
    """The loss to minimise over φ: ``kl_loss`` (Eq. 4), or −mean log p̃ without a KL term (a point
    mass)."""
    if not has_kl_term:
        return -log_p(q(xi)[0]).mean()
    return kl_loss(q, log_p, xi=xi, beta=1.0)
