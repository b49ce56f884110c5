"""Affine transforms θ = μ + A ξ with exact log-determinants.

Three structures of A, in increasing cost:

* :class:`ElementwiseAffine` — A = diag(σ): the paper's Example 1, O(d).
* :class:`LowRankAffine` — A = D (I + V Vᵀ), D diagonal, V of rank r: O(d r) per sample with the
  log-det from the matrix determinant lemma; cheap at d = 5,000 (the policy-weight posterior).
* :class:`LowerTriangularAffine` — A = L lower triangular with positive diagonal: any Gaussian,
  O(d²) per sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vi_flows.transforms.base import Transform

__all__ = ["ElementwiseAffine", "LowerTriangularAffine", "LowRankAffine", "inv_softplus"]


def inv_softplus(value: float, name: str = "value") -> float:
    """The ``x`` with ``softplus(x) == value`` (for initialising a softplus-constrained scale);
    ``name`` is the argument a bad ``value`` (not finite and > 0) is reported under.

    >>> round(float(F.softplus(torch.tensor(inv_softplus(0.3)))), 6)
    0.3
    """
    if not 0 < value < math.inf:  # softplus only reaches positive values (NaN fails too)
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    # log(expm1(v)) overflows nothing for large v when written as v + log(1 - exp(-v)).
    return value + math.log(-math.expm1(-value))


class ElementwiseAffine(Transform):
    """θ = μ + σ ⊙ ξ with σ = softplus(ρ) > 0; log|det| = Σᵢ log σᵢ.

    With a standard-normal base this is the mean-field Gaussian of the paper's Example 1, whose
    KL gradient is −∂KL/∂μᵢ = ∂log p/∂θᵢ and −∂KL/∂σᵢ = ξᵢ ∂log p/∂θᵢ + 1/σᵢ.

    Args:
        dim: event size d.
        init_scale: initial σ (every coordinate).

    >>> t = ElementwiseAffine(3, init_scale=2.0)
    >>> y, ladj = t(torch.zeros(4, 3))
    >>> round(float(ladj[0].detach()), 4) == round(3 * math.log(2.0), 4)
    True
    """

    def __init__(self, dim: int, init_scale: float = 1.0) -> None:
        super().__init__(dim)
        self.loc = nn.Parameter(torch.zeros(dim))
        self.raw_scale = nn.Parameter(torch.full((dim,), inv_softplus(init_scale, "init_scale")))

    def scale(self) -> Tensor:
        """The constrained, strictly positive scale σ = softplus(ρ)."""
        return F.softplus(self.raw_scale)

    def log_abs_det(self) -> Tensor:
        """log|det ∂θ/∂ξ| = Σᵢ log σᵢ (0-dim), the same for every ξ."""
        return self.scale().log().sum()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        scale = self.scale()
        ladj = scale.log().sum().expand(x.shape[:-1])
        # μ + σ ⊙ ξ in one kernel (policy learning pushes a (K, d) table of ξ through this
        # after every optimizer step; the separate multiply and add cost twice the time).
        return torch.addcmul(self.loc, scale, x), ladj

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        self._check(y)
        scale = self.scale()
        ladj = -scale.log().sum().expand(y.shape[:-1])
        return (y - self.loc) / scale, ladj


class LowerTriangularAffine(Transform):
    """θ = μ + L ξ, L lower triangular with diagonal softplus(ρ) > 0; log|det| = Σᵢ log Lᵢᵢ.

    With a standard-normal base, q = N(μ, L Lᵀ): every Gaussian, through its Cholesky factor.

    Args:
        dim: event size d.
        init_scale: initial diagonal of L (off-diagonal entries start at zero).
    """

    def __init__(self, dim: int, init_scale: float = 1.0) -> None:
        super().__init__(dim)
        self.loc = nn.Parameter(torch.zeros(dim))
        self.raw_diag = nn.Parameter(torch.full((dim,), inv_softplus(init_scale, "init_scale")))
        self.off_diag = nn.Parameter(torch.zeros(dim * (dim - 1) // 2))
        rows, cols = torch.tril_indices(dim, dim, offset=-1)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)

    def diag(self) -> Tensor:
        """The constrained, strictly positive diagonal of L."""
        return F.softplus(self.raw_diag)

    def scale_tril(self) -> Tensor:
        """The factor L (d × d), lower triangular with a positive diagonal."""
        diag = self.diag()
        strict = torch.zeros(self.dim, self.dim, dtype=diag.dtype, device=diag.device)
        strict = strict.index_put((self._rows, self._cols), self.off_diag)
        return strict + torch.diag(diag)

    def log_abs_det(self) -> Tensor:
        """log|det L| = Σᵢ log Lᵢᵢ (0-dim), the same for every ξ."""
        return self.diag().log().sum()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        tril = self.scale_tril()
        return self.loc + x @ tril.mT, self.log_abs_det().expand(x.shape[:-1])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        self._check(y)
        tril = self.scale_tril()
        flat = (y - self.loc).reshape(-1, self.dim)
        # Solve L Xᵀ = (y - μ)ᵀ for all rows at once rather than forming L⁻¹.
        x = torch.linalg.solve_triangular(tril, flat.mT, upper=False).mT
        ladj = -self.log_abs_det().expand(y.shape[:-1])
        return x.reshape(y.shape), ladj


class LowRankAffine(Transform):
    """θ = μ + D (I + V Vᵀ) ξ with D = diag(softplus(ρ)) and V ∈ ℝ^{d×r}.

    The covariance D(I + VVᵀ)²D = D² + D V (2I + VᵀV) Vᵀ D is diagonal plus rank r. The low-rank
    part is written relative to D (U = DV rather than a free U in D + UUᵀ) so that an optimizer
    step of a given size changes the correlations in proportion to the marginal scales: with a
    free U, Adam moves U by ~lr per step whatever D is, and at d = 4,000 policy weights with
    D = 0.01 the UUᵀξ term (∝ |U|² √d) outgrew D within a few thousand steps (V-PPO's weight
    noise grew 25× on Pendulum and the policy never learned).

    I + VVᵀ is symmetric positive definite for every V, so A is always invertible; the matrix
    determinant lemma gives the log-det in O(d r²),

    .. math:: \\log|\\det A| = \\textstyle\\sum_i \\log D_{ii} + \\log\\det(I_r + V^T V),

    and Woodbury the inverse, A⁻¹ = (I − V (I_r + VᵀV)⁻¹ Vᵀ) D⁻¹. Nothing d × d is ever formed.

    **The step size of V** (``factor_scale`` = s). V = s W is stored as W. Adam moves every
    entry of W by up to about lr per step whatever its gradient's size, so a column v_j moves by
    up to lr · s · √d in norm per step: at s = 1 the spectrum of I + VVᵀ moves √d times faster
    than the diagonal's log-scales (each within ~lr per step), and does so more the larger d is.
    In V-PPO (d = 4,481 policy weights, lr 1e-3) the column norms grew from 0.67 to 4.2 in 4,000
    steps, multiplying the weight noise along 4 directions of weight space by up to 19 while the
    entropy per parameter, which auto α holds, moved by 0.003 nats (it sees Σ log(1 + |v_j|²)/d);
    with V frozen the same runs learned like the diagonal posterior. s = 1/√d makes a step move
    |v_j| by ~lr, as it moves a log-scale (rl's policies default to it); the default s = 1 keeps
    the older parameterization (fits of tens to hundreds of dimensions were measured with it).
    s is stored with the weights (a buffer; a state dict without it is from before the option
    and loads as s = 1).

    Args:
        dim: event size d.
        rank: r, the number of columns of V.
        init_scale: initial diagonal D.
        init_factor: standard deviation of V's initial entries (V = 0 is a saddle of the KL).
        factor_scale: s > 0 in V = s W (above).
    """

    def __init__(
        self,
        dim: int,
        rank: int = 4,
        init_scale: float = 1.0,
        init_factor: float = 1e-2,
        factor_scale: float = 1.0,
    ) -> None:
        super().__init__(dim)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if not (factor_scale > 0 and math.isfinite(factor_scale)):
            raise ValueError(f"factor_scale must be a positive finite number, got {factor_scale}")
        self.rank = int(rank)
        self.loc = nn.Parameter(torch.zeros(dim))
        self.raw_diag = nn.Parameter(torch.full((dim,), inv_softplus(init_scale, "init_scale")))
        # W's entries at init_factor / s: V = s W starts with entries of std init_factor
        self.factor = nn.Parameter((init_factor / factor_scale) * torch.randn(dim, rank))
        self.register_buffer("factor_scale", torch.tensor(float(factor_scale)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # a state dict from before factor_scale existed holds V itself (s = 1)
        state_dict.setdefault(prefix + "factor_scale", torch.tensor(1.0))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def diag(self) -> Tensor:
        """The constrained, strictly positive diagonal D."""
        return F.softplus(self.raw_diag)

    def low_rank(self) -> Tensor:
        """V = s W (d × r)."""
        return self.factor * self.factor_scale

    def matrix(self) -> Tensor:
        """A as a dense d × d matrix (for tests and small d only)."""
        v = self.low_rank()
        eye = torch.eye(self.dim, dtype=v.dtype, device=v.device)
        return self.diag()[:, None] * (eye + v @ v.mT)

    def _capacitance_cholesky(self, v: Tensor) -> Tensor:
        """Cholesky factor of I_r + VᵀV (r × r, symmetric positive definite)."""
        eye = torch.eye(self.rank, dtype=v.dtype, device=v.device)
        return torch.linalg.cholesky(eye + v.mT @ v)

    def _log_det(self, diag: Tensor, chol: Tensor) -> Tensor:
        return diag.log().sum() + 2.0 * chol.diagonal().log().sum()

    def log_abs_det(self) -> Tensor:
        """log|det A| = Σᵢ log Dᵢᵢ + log det(I_r + VᵀV) (0-dim), the same for every ξ."""
        return self._log_det(self.diag(), self._capacitance_cholesky(self.low_rank()))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        diag, v = self.diag(), self.low_rank()
        chol = self._capacitance_cholesky(v)
        y = self.loc + diag * (x + (x @ v) @ v.mT)
        return y, self._log_det(diag, chol).expand(x.shape[:-1])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        self._check(y)
        diag, v = self.diag(), self.low_rank()
        chol = self._capacitance_cholesky(v)
        z = (y - self.loc) / diag
        # Woodbury: (I + VVᵀ)⁻¹ z = z − V (I + VᵀV)⁻¹ Vᵀ z.
        proj = z @ v  # (..., r)
        flat = proj.reshape(-1, self.rank)
        solved = torch.cholesky_solve(flat.mT, chol).mT.reshape(proj.shape)
        x = z - solved @ v.mT
        return x, -self._log_det(diag, chol).expand(y.shape[:-1])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rank={self.rank}, factor_scale={float(self.factor_scale):.3g}"
