r"""TRPO and V-TRPO (§4): natural gradient over φ with a KL trust region.

The objective is the negated α·KL(q_φ‖p) with log p̃ from TRPO's L(θ) (Eq. 9); TRPO is the
point-mass case. With g its gradient over all policy parameters (φ and the action log-std) and F the
Fisher matrix of π with respect to them, the step is

.. math:: x = F^{-1} g \text{ (conjugate gradient)}, \qquad Δ = \sqrt{2δ / x^T F x}\; x,

shrunk by backtracking until the objective improves and the mean KL(π_old‖π_new) ≤ δ. F is either
the Hessian of the mean analytic KL (Eq. 11) or the covariance of the per-sample scores
∇ log π(a_i|s_i) (Eq. 12), applied as Fisher-vector products only (never formed).

Under several ranks g and every Fisher-vector product are all-reduced sums of the ranks' shares
(means over the global batch), and the line search compares the all-reduced objective and KL, so
every rank runs the same conjugate gradient and accepts the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, kl_divergence
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from rl.adapter import ratio_objective
from rl.algorithms.base import Algorithm, global_mean, share_of_mean
from rl.buffer import Batch
from rl.config import TrainConfig, check_ranges, nonnegative_finite, positive_finite
from rl.optim import check_finite_gradient
from rl.policy_api import PolicyFamily
from rl.temperature import AutoTemperature
from vi_flows import distributed

__all__ = ["TRPOConfig", "TRPO", "conjugate_gradient"]


@dataclass(frozen=True)
class TRPOConfig(TrainConfig):
    """TRPO / V-TRPO settings."""

    max_kl: float = 0.01
    """Trust-region size δ on the mean KL(π_old‖π_new)."""
    fisher: str = "kl-hessian"
    """Fisher matrix: kl-hessian (Eq. 11) or score (score covariance, Eq. 12)."""
    cg_iters: int = 10
    """Conjugate-gradient iterations."""
    cg_damping: float = 0.1
    """Damping λ added to F (F + λI)."""
    backtrack_steps: int = 10
    """Line-search halvings before the step is rejected."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, _RANGES)


_RANGES = {
    "max_kl": (positive_finite, "> 0 and finite"),
    "fisher": (lambda s: s in ("kl-hessian", "score"), "kl-hessian or score"),
    "cg_iters": (lambda x: x >= 1, "an integer >= 1"),
    "cg_damping": (nonnegative_finite, ">= 0 and finite"),
    "backtrack_steps": (lambda x: x >= 1, "an integer >= 1"),
}


def conjugate_gradient(fvp: Callable[[Tensor], Tensor], b: Tensor, iters: int) -> Tensor:
    """Approximately solve F x = b with ``iters`` CG iterations, using products F v only."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        fp = fvp(p)
        step = rr / (p @ fp + 1e-12)
        x += step * p
        r -= step * fp
        rr_new = r @ r
        if rr_new < 1e-10:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


class TRPO(Algorithm):
    """The update of trpo and vtrpo."""

    def __init__(self, cfg: TRPOConfig, policy: PolicyFamily, critic: nn.Module) -> None:
        super().__init__(cfg, policy, critic)
        if cfg.fisher not in {"kl-hessian", "score"}:
            raise ValueError(f"unknown fisher {cfg.fisher!r}: kl-hessian or score")
        self.params = [p for p in policy.parameters() if p.requires_grad]

    def _dists(self, batch: Batch) -> Distribution:
        q, xi, _ = self.policy.variational(batch)
        return self.policy.grouped_distribution(batch, q(xi)[0])

    def _fvp(self, batch: Batch, old) -> Callable[[Tensor], Tensor]:
        damping = self.cfg.cg_damping
        if self.cfg.fisher == "kl-hessian":
            kl = share_of_mean(kl_divergence(old, self._dists(batch)))
            grads = torch.autograd.grad(kl, self.params, create_graph=True)
            flat = torch.cat([g.reshape(-1) for g in grads])

            def fvp(v: Tensor) -> Tensor:
                hv = torch.autograd.grad(flat @ v, self.params, retain_graph=True)
                hv = distributed.all_reduce_sum(torch.cat([h.reshape(-1) for h in hv]))
                return hv + damping * v

            return fvp
        logp = self._dists(batch).log_prob(batch.actions)
        count = logp.shape[0]
        if distributed.is_distributed():
            count = distributed.all_reduce_sum(torch.tensor(float(count), dtype=torch.float64))
            count = count.to(logp.dtype)
        weights = torch.zeros_like(logp, requires_grad=True)
        grads = torch.autograd.grad(logp @ weights, self.params, create_graph=True)
        flat = torch.cat([g.reshape(-1) for g in grads])

        def fvp(v: Tensor) -> Tensor:
            # J v by the double-vjp trick, then Jᵀ (J v) / M: the score covariance times v.
            (jv,) = torch.autograd.grad(flat @ v, weights, retain_graph=True)
            hv = torch.autograd.grad(logp @ jv.detach() / count, self.params, retain_graph=True)
            hv = distributed.all_reduce_sum(torch.cat([h.reshape(-1) for h in hv]))
            return hv + damping * v

        return fvp

    def update(
        self, batch: Batch, alpha: float, temperature: AutoTemperature | None = None
    ) -> dict[str, float]:
        cfg = self.cfg
        objective = ratio_objective(batch.logp, batch.advantages)
        with torch.no_grad():
            old = self._dists(batch)

        def surrogate() -> Tensor:
            return -self.loss(batch, objective, alpha)

        value = surrogate()
        grads = torch.autograd.grad(value, self.params, allow_unused=True)
        g = torch.cat(
            [
                (gr if gr is not None else torch.zeros_like(p)).reshape(-1)
                for gr, p in zip(grads, self.params, strict=True)
            ]
        )
        g = distributed.all_reduce_sum(g)  # this rank's share -> the global batch's gradient
        check_finite_gradient(float(g.norm()))
        value = distributed.all_reduce_sum(value.detach().clone())
        fvp = self._fvp(batch, old)
        x = conjugate_gradient(fvp, g, cfg.cg_iters)
        step = torch.sqrt(2 * cfg.max_kl / (x @ fvp(x) + 1e-12)) * x
        start = parameters_to_vector(self.params).detach()
        accepted, frac, kl = 0.0, 1.0, 0.0
        with torch.no_grad():
            for _ in range(cfg.backtrack_steps):
                vector_to_parameters(start + frac * step, self.params)
                new_value = distributed.all_reduce_sum(surrogate())
                kl = global_mean(kl_divergence(old, self._dists(batch)))
                if new_value > value and kl <= cfg.max_kl:
                    accepted = frac
                    break
                frac *= 0.5
            else:
                vector_to_parameters(start, self.params)
                kl = 0.0
        # auto α: one natural step per update, so one dual step per update
        dual = self.dual_step(temperature, batch.obs) if temperature is not None else {}
        stats = self.diagnostics(batch)
        value_loss = self.fit_value(batch)
        return {
            **stats,
            **dual,
            "policy_loss": -float(value.detach()),
            "value_loss": value_loss,
            "kl": kl,
            "step_frac": accepted,
            "grad_norm": float(g.norm()),
        }
