"""Preconditioning: put a badly scaled target on a unit scale, as an exact affine map.

Posteriors such as a regression with thousands of observations have posterior sds of 1e-3 next to
sds of 1e-1 and strong correlations; a flow (or SVGD's particles) started at N(0, I) spends most
of its budget finding that scale. The usual remedy — Stan's metric adaptation does the same — is
to fit in whitened coordinates z with θ = m + L z. Here m and L come from either

* the **Laplace approximation**: m the mode holding the most mass (several starts, L-BFGS then
  Newton; :mod:`vi_flows.modes`), L Lᵀ the inverse Hessian of −log p̃ there; or
* a **pilot Gaussian**: a short mean-field fit, m its mean and L = diag(σ) — for targets without
  a useful mode (a funnel's density peaks at a point of negligible mass).

:func:`choose` makes that choice (``"auto"``). The change of variables is exact: the flow on z
composed with :class:`FixedAffine` is a flow on θ (family ``"preconditioned"``, see
:func:`precondition`), so users only ever see θ, and save/load needs no code beyond the config.

``Mode``, ``find_mode`` and ``laplace`` live in :mod:`vi_flows.modes` and are re-exported here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vi_flows import flows
from vi_flows.diagnostics import K_HAT_MAX, psis_khat
from vi_flows.fit import NonFiniteError, fit
from vi_flows.modes import Mode, find_mode, laplace, laplace_shares
from vi_flows.objectives import as_log_prob
from vi_flows.transforms import Compose, Transform

__all__ = [
    "FixedAffine",
    "Mode",
    "Preconditioner",
    "Whitened",
    "choose",
    "find_mode",
    "laplace",
    "pilot_gaussian",
    "precondition",
]


class Whitened:
    """The target in whitened coordinates z, θ = m + L z: log p̃_z(z) = log p̃(m + Lz) + log|det L|.

    Adding log|det L| keeps the normalizing constant: log Z_z = log Z, so ``log_z`` carries over.

    Args:
        target: the original target (with ``log_prob`` and ``dim``).
        loc: m, e.g. the mode from :func:`laplace`.
        cov: L Lᵀ, e.g. the Laplace covariance (L is its Cholesky factor).
    """

    def __init__(self, target: Any, loc: Tensor, cov: Tensor) -> None:
        self.target = target
        self.dim = int(loc.shape[-1])
        self.name = f"whitened {getattr(target, 'name', 'target')}"
        self.loc = loc.double()
        self.scale_tril = torch.linalg.cholesky(cov.double())
        self.log_det = float(self.scale_tril.diagonal().log().sum())
        log_z = getattr(target, "log_z", None)
        self.log_z = None if log_z is None else float(log_z)

    @classmethod
    def from_laplace(cls, target: Any, **kwargs: Any) -> Whitened:
        """Whiten with the Laplace approximation of ``target`` (see :func:`laplace`)."""
        return cls(target, *laplace(target, **kwargs))

    def unwhiten(self, z: Tensor) -> Tensor:
        """θ = m + L z, in z's dtype."""
        return (self.loc + z.double() @ self.scale_tril.T).to(z.dtype)

    def log_prob(self, z: Tensor) -> Tensor:
        """log p̃(m + L z) + log|det L|."""
        loc, tril = self.loc.to(z.dtype), self.scale_tril.to(z.dtype)
        return as_log_prob(self.target)(loc + z @ tril.T) + self.log_det

    def __call__(self, z: Tensor) -> Tensor:
        return self.log_prob(z)

    def __repr__(self) -> str:
        return f"Whitened({self.name!r}, dim={self.dim}, log|det L|={self.log_det:.3f})"


class FixedAffine(Transform):
    """θ = m + L z with a fixed (not trained) lower-triangular L; log|det| = Σᵢ log Lᵢᵢ.

    m and L are buffers, so they travel in the state dict and a saved flow rebuilds from its
    config alone. Built as the identity; :func:`precondition` fills in m and L.

    >>> t = FixedAffine(2)
    >>> t.set(torch.tensor([1.0, 2.0]), torch.tensor([[2.0, 0.0], [1.0, 0.5]]))
    >>> y, ladj = t(torch.ones(1, 2))
    >>> y.tolist(), round(float(ladj[0]), 6) == round(math.log(1.0), 6)
    ([[3.0, 3.5]], True)
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("scale_tril", torch.eye(dim))

    def set(self, loc: Tensor, scale_tril: Tensor) -> None:
        """Set m and L (L must be lower triangular with a positive diagonal)."""
        if not bool((scale_tril.diagonal() > 0).all()):
            raise ValueError("FixedAffine: L needs a strictly positive diagonal")
        self.loc.copy_(loc.detach().to(self.loc))
        self.scale_tril.copy_(torch.tril(scale_tril.detach()).to(self.scale_tril))

    def _log_det(self) -> Tensor:
        return self.scale_tril.diagonal().log().sum()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        return self.loc + x @ self.scale_tril.T, self._log_det().expand(x.shape[:-1])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        self._check(y)
        flat = (y - self.loc).reshape(-1, self.dim).T
        x = torch.linalg.solve_triangular(self.scale_tril, flat, upper=False).T
        return x.reshape(y.shape), -self._log_det().expand(y.shape[:-1])


@flows.register("preconditioned")
def _preconditioned(
    dim: int, flow: str = "realnvp", flow_options: dict[str, Any] | None = None
) -> Transform:
    """A flow family ``flow`` on whitened z followed by the fixed affine θ = m + L z."""
    if flow == "preconditioned":
        raise ValueError("flow: a preconditioned flow cannot wrap another 'preconditioned'")
    inner = flows.FLOWS.get(flow)(dim, **(flow_options or {}))
    return Compose([inner, FixedAffine(dim)])


def precondition(
    flow: str,
    dim: int,
    loc: Tensor,
    scale_tril: Tensor,
    *,
    base: str = "normal",
    df: float | None = None,
    learn_df: bool = False,
    **flow_options: Any,
) -> flows.Flow:
    """A new flow of family ``flow`` on z, mapped to θ = m + L z: q_θ(θ) = q_z(z) / |det L|.

    Returns a :class:`~vi_flows.flows.Flow` of family ``"preconditioned"`` whose ``sample``,
    ``log_prob`` and ``sample_and_log_prob`` work in θ; :func:`vi_flows.flows.save` / ``load``
    rebuild it (m and L are buffers in its state dict). ``base``, ``df`` and ``learn_df`` pick
    the base distribution as in :func:`vi_flows.flows.build`.
    """
    q = flows.build(
        "preconditioned",
        dim,
        base=base,
        df=df,
        learn_df=learn_df,
        flow=flow,
        flow_options=dict(flow_options),
    )
    q.transform.parts[-1].set(loc, scale_tril)
    return q


def pilot_gaussian(
    target: Any, dim: int, steps: int = 1000, num_samples: int = 64, lr: float = 3e-2
) -> tuple[Tensor, Tensor, float]:
    """A short mean-field Gaussian fit (cosine-decayed Adam): its mean, sds and final ELBO.

    Non-finite log p̃ at up to 10% of a step's samples is masked (see :func:`vi_flows.fit`).
    """
    q = flows.build("gaussian", dim)
    history = fit(
        q,
        target,
        steps,
        num_samples=num_samples,
        lr=lr,
        lr_schedule="cosine",
        mask_fraction=0.1,
        max_bad_steps=steps // 10,
        progress=False,
    )
    tail = [e for e in history.elbo[-max(1, steps // 10) :] if math.isfinite(e)]
    elbo = sum(tail) / len(tail) if tail else -math.inf
    t = q.transform
    return t.loc.detach().double(), t.scale().detach().double(), elbo


@dataclass(frozen=True)
class Preconditioner:
    """The whitening θ = m + L z chosen for a target, and why."""

    method: str
    """``"laplace"``, ``"pilot-gaussian"`` or ``"none"``."""
    loc: Tensor
    """m (float64)."""
    scale_tril: Tensor
    """L, lower triangular (float64)."""
    detail: str
    """How the choice was made (shown by ``Inference.summary``)."""
    seconds: float
    """Wall time spent choosing."""
    modes: tuple[tuple[Tensor, float], ...] = ()
    """The separate modes the mode search found, (location, Laplace log mass), most mass first
    (empty without a search or a positive-definite Hessian); whatever whitening was chosen."""


def _modes_found(mode: Mode | None) -> tuple[tuple[Tensor, float], ...]:
    if mode is None or mode.cov is None:
        return ()
    return ((mode.loc, mode.log_mass), *mode.others)


def _modes_note(modes: tuple[tuple[Tensor, float], ...]) -> str:
    """ "2 separate modes (Laplace mass 90%, 10%)", or "" for one mode or none."""
    if len(modes) < 2:
        return ""
    shares = laplace_shares(modes)
    shown = ", ".join(f"{100 * float(s):.3g}%" if s >= 1e-4 else "<0.01%" for s in shares[:5])
    more = f", {len(modes) - 5} more" if len(modes) > 5 else ""
    return f"{len(modes)} separate modes (Laplace mass {shown}{more})"


def _gaussian_check(target: Any, loc: Tensor, tril: Tensor, n: int) -> tuple[float, float]:
    """ELBO and PSIS k̂ of N(m, L Lᵀ) as an importance proposal for p̃ (n draws)."""
    dtype = torch.get_default_dtype()
    z = torch.randn(n, loc.shape[0], dtype=torch.float64)
    theta = loc + z @ tril.T
    log_q = (
        -0.5 * z.square().sum(-1)
        - tril.diagonal().log().sum()
        - 0.5 * z.shape[1] * math.log(2 * math.pi)
    )
    with torch.no_grad():
        log_p = as_log_prob(target)(theta.to(dtype)).double()
    log_w = torch.nan_to_num(log_p - log_q, nan=-math.inf)
    finite = torch.isfinite(log_w)
    elbo = float(log_w[finite].mean()) if bool(finite.all()) else -math.inf
    return elbo, psis_khat(log_w)


def choose(
    target: Any,
    dim: int,
    how: str = "auto",
    *,
    laplace_max_dim: int = 500,
    pilot_steps: int = 1000,
    check_samples: int = 1000,
) -> Preconditioner:
    """Choose the whitening θ = m + L z for ``target``.

    ``how="auto"``: when d ≤ ``laplace_max_dim``, find the mode and Hessian
    (:func:`find_mode`). If the Hessian is finite and positive definite, the Laplace Gaussian
    N(m, H⁻¹) is checked as an importance proposal on ``check_samples`` draws: with PSIS
    k̂ ≤ 0.7 it is used. Otherwise (no mode, no positive-definite Hessian, d too large, or
    k̂ > 0.7 — e.g. a funnel, whose mode sits where there is no mass) a pilot mean-field Gaussian
    is fitted (:func:`pilot_gaussian`), and of the two Gaussians the one with the higher ELBO
    (smaller KL(q‖p)) is used. ``"laplace"`` and ``"pilot"`` force one; ``"none"`` is θ = z.
    """
    start = time.perf_counter()
    eye = torch.eye(dim, dtype=torch.float64)
    zero = torch.zeros(dim, dtype=torch.float64)
    if how == "none":
        return Preconditioner("none", zero, eye, "none (the flow starts at N(0, I))", 0.0)
    if how not in ("auto", "laplace", "pilot"):
        raise ValueError(f"precondition must be 'auto', 'laplace', 'pilot' or 'none', got {how!r}")
    notes = []
    laplace_elbo, laplace_tril = -math.inf, None
    mode = None
    modes: tuple[tuple[Tensor, float], ...] = ()
    if how == "laplace" or (how == "auto" and dim <= laplace_max_dim):
        mode = find_mode(target, dim)
        modes = _modes_found(mode)
        if mode.cov is not None:
            laplace_tril = torch.linalg.cholesky(mode.cov)
            laplace_elbo, k_hat = _gaussian_check(target, mode.loc, laplace_tril, check_samples)
            notes.append(f"Laplace: ELBO {laplace_elbo:.2f}, k̂ {k_hat:.2f}")
            if how == "laplace" or (k_hat <= K_HAT_MAX and math.isfinite(laplace_elbo)):
                found = f"; {_modes_note(modes)}" if len(modes) > 1 else ""
                detail = (
                    f"laplace (mode by L-BFGS + Newton, most Laplace mass of {mode.starts} "
                    f"starts, inverse Hessian; {notes[0]}{found})"
                )
                seconds = time.perf_counter() - start
                return Preconditioner("laplace", mode.loc, laplace_tril, detail, seconds, modes)
        else:
            notes.append(f"Laplace rejected: {mode.reason}")
            if how == "laplace":
                raise ValueError(f"precondition='laplace': {mode.reason}")
    elif how == "pilot":
        notes.append("Laplace not tried (precondition='pilot')")
    else:
        notes.append(f"Laplace skipped: d = {dim} > {laplace_max_dim}")
    if len(modes) > 1:
        notes.append(_modes_note(modes))
    try:
        loc, sd, pilot_elbo = pilot_gaussian(target, dim, steps=pilot_steps)
    except NonFiniteError as err:
        loc, sd, pilot_elbo = zero, torch.ones(dim, dtype=torch.float64), -math.inf
        notes.append(f"pilot failed ({str(err)[:80]})")
    else:
        notes.append(f"pilot: ELBO {pilot_elbo:.2f}")
    seconds = time.perf_counter() - start
    if laplace_tril is not None and mode is not None and laplace_elbo >= pilot_elbo:
        detail = f"laplace ({'; '.join(notes)}; Laplace has the higher ELBO)"
        return Preconditioner("laplace", mode.loc, laplace_tril, detail, seconds, modes)
    if not math.isfinite(pilot_elbo):
        return Preconditioner("none", zero, eye, f"none ({'; '.join(notes)})", seconds, modes)
    detail = f"pilot-gaussian (mean-field, {pilot_steps} steps; {'; '.join(notes)})"
    return Preconditioner("pilot-gaussian", loc, torch.diag(sd), detail, seconds, modes)
