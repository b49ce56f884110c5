"""Gaussian-process models: the Poisson GP regression and the GP regression with Gaussian noise.

Kernel matrices are factorized in float64 whatever the dtype of x: they are ill-conditioned.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vi_flows.targets.base import normal_log_prob
from vi_flows.targets.posteriordb.base import F64, LOG_2PI, PosteriorTarget

__all__ = ["GpPoisRegr", "GpRegr"]


def _exp_quad(points: list[float], rho: Tensor, alpha: Tensor) -> Tensor:
    """Stan's ``gp_exp_quad_cov``: alpha² exp(−(x_i − x_j)²/(2 rho²)), (..., N, N) in float64."""
    pts = torch.as_tensor(points, dtype=F64, device=rho.device)
    sq = (pts[:, None] - pts[None, :]) ** 2
    r, a = rho.to(F64)[..., None, None], alpha.to(F64)[..., None, None]
    return a**2 * torch.exp(-sq / (2 * r**2))


def _cholesky(cov: Tensor) -> Tensor:
    """Batched Cholesky factor; NaN (not an exception for the whole batch) where a matrix is not
    numerically positive definite, so one bad sample yields one NaN log density."""
    chol, info = torch.linalg.cholesky_ex(cov)
    return torch.where((info == 0)[..., None, None], chol, torch.nan)


def _gamma_25_4(rho: Tensor) -> Tensor:
    """log Gamma(rho; shape 25, rate 4), the rho prior of both GP models."""
    return 25.0 * math.log(4.0) - math.lgamma(25.0) + 24.0 * torch.log(rho) - 4.0 * rho


class GpPoisRegr(PosteriorTarget):
    """rho ~ Gamma(25, rate 4), alpha ~ N(0, 2²) (both > 0), f_tilde ~ N(0, I),
    f = L f_tilde with L L^T = alpha² exp(−(x_i − x_j)²/(2 rho²)) + 1e-10 I,
    k_i ~ Poisson(exp(f_i)); x = (log rho, log alpha, f_tilde[1..N]).

    The kernel matrix is ill-conditioned (condition numbers up to ~1e11), so the Cholesky
    factor is always computed in float64, whatever the dtype of x.
    """

    def _setup(self) -> None:
        self.params = {"rho": 0, "alpha": 0, "f_tilde": int(self.data["N"])}

    def _chol(self, rho: Tensor, alpha: Tensor) -> Tensor:
        eye = torch.eye(int(self.data["N"]), dtype=F64, device=rho.device)
        return _cholesky(_exp_quad(self.data["x"], rho, alpha) + 1e-10 * eye)

    def constrain(self, x: Tensor) -> dict[str, Tensor]:
        rho, alpha, ft = torch.exp(x[..., 0]), torch.exp(x[..., 1]), x[..., 2:]
        f = (self._chol(rho, alpha) @ ft.to(F64)[..., None])[..., 0].to(x.dtype)
        return {"rho": rho, "alpha": alpha, "f_tilde": ft, "f": f}

    def unconstrain(self, values: dict[str, Tensor]) -> Tensor:
        rho, alpha = values["rho"], values["alpha"]
        ft = values.get("f_tilde")
        if ft is None:  # the reference draws hold f = L f_tilde
            chol = self._chol(rho, alpha)
            ft = torch.linalg.solve_triangular(chol, values["f"].to(F64)[..., None], upper=False)[
                ..., 0
            ]
        return torch.cat(
            [torch.log(rho)[..., None], torch.log(alpha)[..., None], ft.to(rho.dtype)], -1
        )

    def _log_prob(self, x: Tensor) -> Tensor:
        c = self.constrain(x)
        rho, alpha, f = c["rho"], c["alpha"], c["f"]
        lp = _gamma_25_4(rho)
        lp = lp + normal_log_prob(alpha, 0.0, 2.0) + normal_log_prob(c["f_tilde"], 0.0, 1.0).sum(-1)
        k = self._d("k", x)
        lp = lp + (k * f - torch.exp(f) - torch.lgamma(k + 1.0)).sum(-1)
        return lp + x[..., 0] + x[..., 1]


class GpRegr(PosteriorTarget):
    """gp_pois_regr-gp_regr: rho ~ Gamma(25, rate 4), alpha ~ N(0, 2²), sigma ~ N(0, 1), all > 0,
    y ~ N(0, K) with K = alpha² exp(−(x_i − x_j)²/(2 rho²)) + sigma·I (sigma, not sigma², on the
    diagonal, as the Stan program writes it); x = (log rho, log alpha, log sigma)."""

    params = {"rho": 0, "alpha": 0, "sigma": 0}

    def constrain(self, x: Tensor) -> dict[str, Tensor]:
        e = torch.exp(x)
        return {"rho": e[..., 0], "alpha": e[..., 1], "sigma": e[..., 2]}

    def unconstrain(self, values: dict[str, Tensor]) -> Tensor:
        return torch.log(torch.stack([values["rho"], values["alpha"], values["sigma"]], -1))

    def _log_prob(self, x: Tensor) -> Tensor:
        c = self.constrain(x)
        n = int(self.data["N"])
        eye = torch.eye(n, dtype=F64, device=x.device)
        cov = (
            _exp_quad(self.data["x"], c["rho"], c["alpha"])
            + c["sigma"].to(F64)[..., None, None] * eye
        )
        chol = _cholesky(cov)
        y = torch.as_tensor(self.data["y"], dtype=F64, device=x.device)
        z = torch.linalg.solve_triangular(chol, y.expand(*chol.shape[:-1])[..., None], upper=False)
        log_det = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        lik = (-0.5 * (z[..., 0] ** 2).sum(-1) - log_det - 0.5 * n * LOG_2PI).to(x.dtype)
        lp = _gamma_25_4(c["rho"]) + normal_log_prob(c["alpha"], 0.0, 2.0)
        lp = lp + normal_log_prob(c["sigma"], 0.0, 1.0) + lik
        return lp + x.sum(-1)  # log-Jacobians of the three exp maps
