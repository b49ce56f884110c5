"""Finding the mode of log p̃ and the Hessian there: L-BFGS, Newton refinement, several starts.

Real posteriors defeat a single L-BFGS run in two ways, both seen on posteriordb:

* **Scale.** A regression on raw covariates (years, heights in inches, earnings in dollars) has
  posterior sds from 1e-2 to 1e4 and a Hessian condition number near 1e12. L-BFGS from the
  origin stops where the gradient is small in absolute terms, thousands of sds from the mode.
  Newton's method is affine invariant, so :func:`newton_refine` finishes the job, and its
  stopping rule (the Newton decrement, in nats) does not depend on the scale either.
* **Several modes.** A hidden Markov model has local modes; the one nearest the origin need not
  hold the mass. :func:`find_mode` starts from the origin and from ``restarts`` points drawn
  uniformly in [−2, 2]^d (Stan's default initialisation in unconstrained space) and keeps the
  mode with the largest Laplace estimate of its mass, log p̃(m) + ½ log det H⁻¹ — mass, not
  height, is what a whitening should be centred on.

>>> import torch
>>> def log_p(x):
...     return -0.5 * (((x - 3.0) / 1e-3) ** 2).sum(-1)
>>> mode, cov = laplace(log_p, dim=2)
>>> [round(v, 4) for v in mode.tolist()], float(cov[0, 0].sqrt()) < 1.1e-3
([3.0, 3.0], True)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vi_flows.objectives import as_log_prob

__all__ = [
    "SEPARATE",
    "Mode",
    "find_mode",
    "laplace",
    "laplace_shares",
    "newton_refine",
    "separate_modes",
]


@dataclass(frozen=True)
class Mode:
    """What :func:`find_mode` found."""

    loc: Tensor
    """The mode m (float64)."""
    cov: Tensor | None
    """(−∇² log p̃(m))⁻¹ when the Hessian is finite and positive definite, else ``None``."""
    log_p: float
    """log p̃(m)."""
    reason: str
    """Why ``cov`` is ``None`` (empty when it is not)."""
    log_mass: float = -math.inf
    """Laplace estimate of log ∫ p̃ around m: log p̃(m) + ½ log det cov + (d/2) log 2π
    (−inf without ``cov``)."""
    starts: int = 1
    """How many starting points were tried."""
    others: tuple[tuple[Tensor, float], ...] = ()
    """The other separate local modes the starts found, as (location, Laplace log mass), most
    mass first: those with a positive-definite Hessian more than :data:`SEPARATE` sds (in the
    Laplace metric of the kept mode) from every mode kept before them. Mass that q may never
    visit, so :func:`~vi_flows.infer.infer` checks q's density there."""


#: Two modes closer than this many sds (Mahalanobis, in the kept mode's Laplace metric) are one.
SEPARATE = 1.0


def separate_modes(modes: list[Mode]) -> list[Mode]:
    """The modes with a covariance, most Laplace mass first, without repeats: a mode is dropped
    when it lies within :data:`SEPARATE` sds of one kept before it (several starts reach it).

    >>> eye = torch.eye(1, dtype=torch.float64)
    >>> at = lambda x, mass: Mode(torch.tensor([x], dtype=torch.float64), eye, 0.0, "", mass)
    >>> [float(m.loc) for m in separate_modes([at(0.0, -1.0), at(4.0, 0.0), at(4.2, -0.5)])]
    [4.0, 0.0]
    """
    kept: list[tuple[Mode, Tensor]] = []  # each kept mode with the Cholesky factor L of its cov
    for mode in sorted((m for m in modes if m.cov is not None), key=lambda m: -m.log_mass):
        # L⁻¹(m − m_k): the offset in sds of kept mode k's Laplace metric
        offsets = (
            torch.linalg.solve_triangular(chol, (mode.loc - k.loc)[:, None], upper=False)
            for k, chol in kept
        )
        if all(float(z.norm()) > SEPARATE for z in offsets):
            kept.append((mode, torch.linalg.cholesky(mode.cov)))
    return [k for k, _ in kept]


def laplace_shares(modes: tuple[tuple[Tensor, float], ...]) -> Tensor:
    """Each mode's share of the modes' total Laplace mass, from (location, log mass) pairs.

    >>> laplace_shares(((torch.zeros(1), 0.0), (torch.ones(1), math.log(3.0)))).tolist()
    [0.25, 0.75]
    """
    return torch.softmax(torch.tensor([m for _, m in modes], dtype=torch.float64), 0)


def _hessian(f: Any) -> Any:
    """``torch.func.hessian(f)``, without the FutureWarning about ``torch.jit.script`` that
    torch's own forward-mode decompositions print when first loaded (not the user's code)."""
    hess = torch.func.hessian(f)

    def call(x: Tensor) -> Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", r".*torch\.jit\.script.* is deprecated", FutureWarning
            )
            return hess(x)

    return call


def newton_refine(
    fn: Any, x: Tensor, max_iter: int = 50, tol: float = 1e-9
) -> tuple[Tensor, Tensor, int]:
    """Saddle-free Newton steps on f = −log p̃ from x, with a backtracking line search.

    Each step is s = −V |Λ|⁻¹ Vᵀ ∇f with H = V Λ Vᵀ the Hessian of f; |Λ| keeps s a descent
    direction where H is indefinite (Dauphin et al. 2014), and eigenvalues are floored at ε·max|Λ|.
    A step is accepted by the Armijo rule f(x + t s) ≤ f(x) + 1e-4 t ∇fᵀs, halving t from 1. It
    stops once the Newton decrement ∇fᵀ|H|⁻¹∇f / 2 — the decrease a Newton step predicts, in
    nats, whatever the scale — is below ``tol``, or when no step decreases f (the float
    resolution of f has been reached).

    Args:
        fn: θ (n, d) ↦ log p̃ (n,).
        x: the starting point (d,), in the dtype to work in.
        max_iter: Newton steps at most.
        tol: Newton-decrement threshold in nats.

    Returns:
        ``(x, Hessian of f at x, steps taken)``.
    """

    def f(v: Tensor) -> Tensor:
        return -fn(v[None])[0]

    grad_f, hess_f = torch.func.grad(f), _hessian(f)
    x = x.detach().clone()
    fx = f(x).detach()
    for it in range(max_iter):
        g, hess = grad_f(x), hess_f(x)
        hess = 0.5 * (hess + hess.T)
        if not (torch.isfinite(g).all() and torch.isfinite(hess).all()):
            return x, hess, it
        evals, evecs = torch.linalg.eigh(hess)
        floor = float(evals.abs().max().clamp_min(1e-300)) * torch.finfo(x.dtype).eps
        gv = evecs.T @ g
        curvature = evals.abs().clamp_min(floor)
        if float((gv.square() / curvature).sum()) / 2 < tol:
            return x, hess, it
        step = -(evecs @ (gv / curvature))
        slope, t = float(g @ step), 1.0
        for _ in range(40):
            cand = x + t * step
            fc = f(cand).detach()
            if torch.isfinite(fc) and float(fc) <= float(fx) + 1e-4 * t * slope:
                break
            t *= 0.5
        else:  # no decrease left at float resolution: x is the mode to precision
            return x, hess, it + 1
        x, fx = cand.detach(), fc
    hess = hess_f(x)
    return x, 0.5 * (hess + hess.T), max_iter


def _lbfgs(fn: Any, x0: Tensor, max_iter: int, tolerance_grad: float = 1e-9) -> Tensor:
    """L-BFGS (strong Wolfe) on −log p̃ from x0; raises FloatingPointError on a non-finite value."""
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=tolerance_grad
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = -fn(x[None])[0]
        if not torch.isfinite(loss):
            raise FloatingPointError("log p̃ is non-finite along the L-BFGS path")
        loss.backward()
        return loss

    opt.step(closure)
    return x.detach()


def _mode_from(fn: Any, x0: Tensor, max_iter: int, newton_max_dim: int) -> Mode:
    """One start: L-BFGS, Newton refinement (d ≤ ``newton_max_dim``) and the Hessian check."""
    dim = x0.shape[0]
    mode = _lbfgs(fn, x0, max_iter)
    if dim <= newton_max_dim:
        mode, hess, _ = newton_refine(fn, mode)
    else:
        hess = _hessian(lambda v: -fn(v[None])[0])(mode)
    log_p = float(fn(mode[None])[0].detach())
    if not (torch.isfinite(mode).all() and math.isfinite(log_p)):
        return Mode(mode.double(), None, log_p, "the mode search diverged")
    hess = 0.5 * (hess + hess.T).double()
    if not torch.isfinite(hess).all():
        return Mode(mode.double(), None, log_p, "the Hessian at the mode is not finite")
    evals, evecs = torch.linalg.eigh(hess)
    # 1000 ε of the largest eigenvalue: a condition number of 1e12 is resolved in float64
    lo, top = float(evals.min()), float(evals.abs().max())
    if lo <= 0.0:
        why = f"the Hessian at the mode is not positive definite (eigenvalue {lo:.3g})"
        return Mode(mode.double(), None, log_p, why)
    if lo <= 1e3 * torch.finfo(x0.dtype).eps * top:
        why = (
            f"the Hessian at the mode is too ill-conditioned to invert (condition number "
            f"{top / lo:.3g} > {1 / (1e3 * torch.finfo(x0.dtype).eps):.3g})"
        )
        return Mode(mode.double(), None, log_p, why)
    cov = (evecs / evals) @ evecs.T
    log_mass = log_p - 0.5 * float(evals.log().sum()) + 0.5 * dim * math.log(2 * math.pi)
    return Mode(mode.double(), 0.5 * (cov + cov.T), log_p, "", log_mass)


def find_mode(
    target: Any,
    dim: int,
    max_iter: int = 500,
    *,
    restarts: int = 4,
    newton_max_dim: int = 200,
    generator: torch.Generator | None = None,
) -> Mode:
    """The mode of log p̃ holding the most mass, and the Hessian there, checked.

    Starts from the origin and from ``restarts`` points uniform in [−2, 2]^d (drawn from
    ``generator``, else torch's global RNG). From each: L-BFGS, then (d ≤ ``newton_max_dim``)
    saddle-free Newton steps until the Newton decrement is below 1e-9 nats
    (:func:`newton_refine`). Among the modes with a finite, positive-definite Hessian the one
    with the largest Laplace mass log p̃(m) + ½ log det H⁻¹ wins, and the other separate ones
    are kept in ``others`` (:func:`separate_modes`); without any, the highest log p̃ is
    returned with ``cov=None`` and the reason. Works in float64, falling back to the
    default dtype for targets that only take float32; a start whose path meets a non-finite
    log p̃ is skipped.
    """
    fn = as_log_prob(target)
    last_err: Exception | None = None
    for dtype in (torch.float64, torch.get_default_dtype()):
        starts = [torch.zeros(dim, dtype=dtype)]
        for _ in range(restarts):
            u = torch.rand(dim, generator=generator, dtype=torch.float64)
            starts.append((4.0 * u - 2.0).to(dtype))
        found: list[Mode] = []
        for x0 in starts:
            try:
                found.append(_mode_from(fn, x0, max_iter, newton_max_dim))
            except (RuntimeError, FloatingPointError, ValueError, TypeError) as err:
                last_err = err
        if not found:
            continue
        distinct = separate_modes(found)
        if distinct:
            best, others = distinct[0], tuple((m.loc, m.log_mass) for m in distinct[1:])
        else:
            best, others = max(found, key=lambda m: m.log_p), ()
        return Mode(best.loc, best.cov, best.log_p, best.reason, best.log_mass, len(starts), others)
    return Mode(torch.zeros(dim, dtype=torch.float64), None, -math.inf, f"failed: {last_err}")


def laplace(
    target: Any, dim: int | None = None, init: Tensor | None = None, max_iter: int = 500
) -> tuple[Tensor, Tensor]:
    """Mode and inverse negative Hessian of log p̃ (float64) from one start, always usable.

    L-BFGS from ``init`` (zeros by default), Newton refinement (:func:`newton_refine`), then the
    Hessian's eigenvalues below 1e-12 of the largest are floored there, so cov is always
    symmetric positive definite (unlike :func:`find_mode`, which reports such a Hessian).

    Args:
        target: a target (anything with ``log_prob``) or a callable θ (n, d) ↦ log p̃ (n,).
        dim: the dimension (defaults to ``target.dim``).
        init: starting point (zeros by default).
        max_iter: L-BFGS iterations.

    Returns:
        ``(mode, cov)`` with cov = (−∇² log p̃(mode))⁻¹.
    """
    fn = as_log_prob(target)
    d = int(dim if dim is not None else target.dim)
    x0 = (torch.zeros(d) if init is None else init.detach().clone()).double()
    mode, hess, _ = newton_refine(fn, _lbfgs(fn, x0, max_iter, tolerance_grad=1e-10))
    evals, evecs = torch.linalg.eigh(0.5 * (hess + hess.T))
    evals = evals.clamp_min(1e-12 * float(evals.abs().max().clamp_min(1e-300)))
    cov = (evecs / evals) @ evecs.T
    return mode, 0.5 * (cov + cov.T)
