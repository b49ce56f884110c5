"""Real posteriors from posteriordb as targets over Stan's unconstrained parameter space.

The posteriors are read (never copied) from ``<repo>/../shared/posteriordb/<name>/`` (override
with the environment variable ``VI_FLOWS_POSTERIORDB``); each folder holds ``model.stan``,
``data.json.zip``, ``reference_draws.json.zip`` and ``posterior.json``. Each model is
re-implemented in torch from its ``model.stan``:

- x (..., d) is Stan's unconstrained vector: the declared parameters in declaration order,
  each flattened, with ``<lower=0>`` as σ = exp(u), ``<lower=a, upper=b>`` as
  a + (b − a)·logistic(u) and ``ordered`` as (u1, u1 + exp(u2), …), exactly as Stan does;
- ``log_prob(x)`` is the model's log density plus the log-Jacobian of those transforms, **with
  every normalizing constant of every lpdf kept** (Stan's ``log_prob`` with ``jacobian=True``,
  ``propto=False``). As in Stan, half-distributions from lower bounds (e.g. a ``cauchy(0, 5)``
  prior on σ > 0) are not renormalized; ``log_z`` (the log evidence) is unknown (``None``).
- ``constrain(x)`` returns the named constrained parameters and transformed parameters: scalars
  as (...) tensors, vectors as (..., k) tensors (``theta[1]`` … ``theta[8]`` are the columns of
  ``theta``); ``reference_draws()`` returns the reference draws (all chains concatenated) in the
  same scheme, and ``unconstrain`` maps such a dict back to x.

>>> "sblrc-blr" in implemented()
True
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from vi_flows.targets.base import Target, normal_log_prob, register_prefix

__all__ = ["ENV_VAR", "PosteriorTarget", "available", "implemented", "load", "root"]

ENV_VAR = "VI_FLOWS_POSTERIORDB"
_LOG_2PI = math.log(2.0 * math.pi)
_F64 = torch.float64


def root() -> Path:
    """The posteriordb folder: ``$VI_FLOWS_POSTERIORDB`` or ``<repo>/../shared/posteriordb``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "posteriordb"


def _read_json_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read(zf.namelist()[0]))


def _cauchy(x: Tensor, loc: float, scale: float) -> Tensor:
    """Elementwise log Cauchy(x; loc, scale), constants included."""
    return -math.log(math.pi * scale) - torch.log1p(((x - loc) / scale) ** 2)


class PosteriorTarget(Target):
    """A posteriordb posterior over Stan's unconstrained space (see the module docstring).

    Attributes:
        params: declared Stan parameters → size (0 for scalars), in declaration order.
        folder: the posterior's folder; ``data``: its data (the parsed ``data.json``).
    """

    params: dict[str, int]

    def __init__(self, name: str, folder: Path) -> None:
        self.folder = folder
        self.data: dict[str, Any] = _read_json_zip(folder / "data.json.zip")
        self._setup()
        super().__init__(name, sum(max(1, s) for s in self.params.values()))
        self._cache: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}
        self._ref: dict[str, Tensor] | None = None

    # --- per-model pieces ---------------------------------------------------------------------
    def _setup(self) -> None:
        """Fix ``params`` (may depend on the data)."""
        raise NotImplementedError

    def constrain(self, x: Tensor) -> dict[str, Tensor]:
        """Constrained parameters (and transformed parameters) at unconstrained x (..., d)."""
        raise NotImplementedError

    def unconstrain(self, values: dict[str, Tensor]) -> Tensor:
        """Inverse of :meth:`constrain`: named constrained values (e.g. reference draws) -> x."""
        raise NotImplementedError

    # --- shared machinery ---------------------------------------------------------------------
    def _d(self, key: str, like: Tensor) -> Tensor:
        """Data array ``key`` as a tensor in ``like``'s dtype and device (cached)."""
        ck = (key, like.dtype, like.device)
        if ck not in self._cache:
            self._cache[ck] = torch.as_tensor(self.data[key], dtype=like.dtype, device=like.device)
        return self._cache[ck]

    def _split(self, x: Tensor) -> dict[str, Tensor]:
        """The unconstrained blocks of x by parameter name (scalars (...), vectors (..., k))."""
        out, i = {}, 0
        for p, size in self.params.items():
            out[p] = x[..., i] if size == 0 else x[..., i : i + size]
            i += max(1, size)
        return out

    def _join(self, blocks: list[Tensor]) -> Tensor:
        """Inverse of :meth:`_split` (blocks in parameter order)."""
        return torch.cat(
            [
                b[..., None] if s == 0 else b
                for b, s in zip(blocks, self.params.values(), strict=True)
            ],
            -1,
        )

    def reference_draws(self) -> dict[str, Tensor]:
        """The reference draws (float64, chains concatenated), named as :meth:`constrain`."""
        if self._ref is None:
            chains = _read_json_zip(self.folder / "reference_draws.json.zip")
            cols: dict[str, list[float]] = {}
            for chain in chains:
                for key, draws in chain.items():
                    cols.setdefault(key, []).extend(draws)
            groups: dict[str, dict[int, Tensor]] = {}
            for key, draws in cols.items():
                m = re.fullmatch(r"(\w+)\[(\d+)\]", key)
                name, idx = (m.group(1), int(m.group(2))) if m else (key, 0)
                groups.setdefault(name, {})[idx] = torch.tensor(draws, dtype=_F64)
            self._ref = {
                n: g[0] if list(g) == [0] else torch.stack([g[i] for i in sorted(g)], -1)
                for n, g in groups.items()
            }
        return dict(self._ref)

    def reference_unconstrained(self) -> Tensor:
        """The reference draws mapped to the unconstrained space, (n, d) float64."""
        return self.unconstrain(self.reference_draws())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, folder={self.folder})"


class EightSchoolsNoncentered(PosteriorTarget):
    """theta_trans ~ N(0, 1), mu ~ N(0, 5), tau ~ Cauchy(0, 5) on tau > 0,
    y_j ~ N(mu + tau·theta_trans_j, sigma_j); x = (theta_trans[1..J], mu, log tau)."""

    def _setup(self) -> None:
        self.params = {"theta_trans": int(self.data["J"]), "mu": 0, "tau": 0}

    def constrain(self, x: Tensor) -> dict[str, Tensor]:
        b = self._split(x)
        tau = torch.exp(b["tau"])
        theta = b["theta_trans"] * tau[..., None] + b["mu"][..., None]
        return {"theta_trans": b["theta_trans"], "mu": b["mu"], "tau": tau, "theta": theta}

    def unconstrain(self, values: dict[str, Tensor]) -> Tensor:
        mu, tau = values["mu"], values["tau"]
        tt = values.get("theta_trans")
        if tt is None:  # the reference draws hold the transformed parameter theta
            tt = (values["theta"] - mu[..., None]) / tau[..., None]
        return self._join([tt, mu, torch.log(tau)])

    def _log_prob(self, x: Tensor) -> Tensor:
        c = self.constrain(x)
        lp = normal_log_prob(c["theta_trans"], 0.0, 1.0).sum(-1)
        lp = lp + normal_log_prob(self._d("y", x), c["theta"], self._d("sigma", x)).sum(-1)
        lp = lp + normal_log_prob(c["mu"], 0.0, 5.0) + _cauchy(c["tau"], 0.0, 5.0)
        return lp + x[..., -1]  # log-Jacobian of tau = exp(u)


class SblrcBlr(PosteriorTarget):
    """beta ~ N(0, 10²), sigma ~ N(0, 10²) on sigma > 0, y ~ N(X beta, sigma²);
    x = (beta[1..D], log sigma)."""

    def _setup(self) -> None:
        self.params = {"beta": int(self.data["D"]), "sigma": 0}

    def constrain(self, x: Tensor) -> dict[str, Tensor]:
        b = self._split(x)
        return {"beta": b["beta"], "sigma": torch.exp(b["sigma"])}

    def unconstrain(self, values: dict[str, Tensor]) -> Tensor:
        return self._join([values["beta"], torch.log(values["sigma"])])

    def _log_prob(self, x: Tensor) -> Tensor:
        c = self.constrain(x)
        beta, sigma = c["beta"], c["sigma"]
        mean = beta @ self._d("X", x).T  # (..., N)
        lp = normal_log_prob(beta, 0.0, 10.0).sum(-1) + normal_log_prob(sigma, 0.0, 10.0)
        lp = lp + normal_log_prob(self._d("y", x), mean, sigma[..., None]).sum(-1)
        return lp + x[..., -1]


class ArK(PosteriorTarget):
    """alpha ~ N(0, 10²), beta_k ~ N(0, 10²), sigma ~ Cauchy(0, 2.5) on sigma > 0,
    y_t ~ N(alpha + Σ_k beta_k y_{t−k}, sigma²) for t > K; x = (alpha, beta[1..K], log sigma)."""

    def _setup(self) -> None:
        self.params = {"alpha": 0, "beta": int(self.data["K"]), "sigma": 0}
        k, y = int(self.data["K"]), self.data["y"]
        # lags[t, k-1] = y[t - k] for the modelled t = K+1..T (0-based t = K..T-1)
        self.data["_lags"] = [[y[t - j] for j in range(1, k + 1)] for t in range(k, len(y))]
        self.data["_y"] = y[k:]

    def constrain(self, x: Tensor) -> dict[str, Tensor]:
        b = self._split(x)
        return {"alpha": b["alpha"], "beta": b["beta"], "sigma": torch.exp(b["sigma"])}

    def unconstrain(self, values: dict[str, Tensor]) -> Tensor:
        return self._join([values["alpha"], values["beta"], torch.log(values["sigma"])])

    def _log_prob(self, x: Tensor) -> Tensor:
        c = self.constrain(x)
        mean = c["alpha"][..., None] + c["beta"] @ self._d("_lags", x).T  # (..., T-K)
        lp = normal_log_prob(c["alpha"], 0.0, 10.0) + normal_log_prob(c["beta"], 0.0, 10.0).sum(-1)
        lp = lp + _cauchy(c["sigma"], 0.0, 2.5)
        lp = lp + normal_log_prob(self._d("_y", x), mean, c["sigma"][..., None]).sum(-1)
        return lp + x[..., -1]


class KidiqMomiq(SblrcBlr):
    """sigma ~ Cauchy(0, 2.5) on sigma > 0, flat beta, kid_score ~ N(beta1 + beta2 mom_iq,
    sigma²); x = (beta[1], beta[2], log sigma)."""

    def _setup(self) -> None:
        self.params = {"beta": 2, "sigma": 0}

    def _log_prob(self, x: Tensor) -> Tensor:
        c = self.constrain(x)
        beta, sigma = c["beta"], c["sigma"]
        mean = beta[..., :1] + beta[..., 1:] * self._d("mom_iq", x)
        lp = _cauchy(sigma, 0.0, 2.5) + normal_log_prob(
            self._d("kid_score", x), mean, sigma[..., None]
        ).sum(-1)
        return lp + x[..., -1]


class Garch11(PosteriorTarget):
    """GARCH(1, 1) with flat priors: y_t ~ N(mu, sigma_t²), sigma_1 given,
    sigma_t² = alpha0 + alpha1 (y_{t−1} − mu)² + beta1 sigma_{t−1}², alpha0 > 0,
    0 < alpha1 < 1, 0 < beta1 < 1 − alpha1; x = (mu, log alpha0, logit alpha1,
    logit(beta1 / (1 − alpha1)))."""

    def _setup(self) -> None:
        self.params = {"mu": 0, "alpha0": 0, "alpha1": 0, "beta1": 0}

    def constrain(self, x: Tensor) -> dict[str, Tensor]:
        alpha1 = torch.sigmoid(x[..., 2])
        return {
            "mu": x[..., 0],
            "alpha0": torch.exp(x[..., 1]),
            "alpha1": alpha1,
            "beta1": (1.0 - alpha1) * torch.sigmoid(x[..., 3]),
        }

    def unconstrain(self, values: dict[str, Tensor]) -> Tensor:
        a1 = values["alpha1"]
        return torch.stack(
            [
                values["mu"],
                torch.log(values["alpha0"]),
                torch.logit(a1),
                torch.logit(values["beta1"] / (1 - a1)),
            ],
            -1,
        )

    def _log_prob(self, x: Tensor) -> Tensor:
        c = self.constrain(x)
        y = self._d("y", x)
        mu, a0, a1, b1 = c["mu"], c["alpha0"], c["alpha1"], c["beta1"]
        # the variance recursion is sequential in t; vectorized over the batch
        var = torch.full_like(mu, float(self.data["sigma1"]) ** 2)
        variances = [var]
        for t in range(1, y.shape[0]):
            var = a0 + a1 * (y[t - 1] - mu) ** 2 + b1 * var
            variances.append(var)
        v = torch.stack(variances, -1)
        lp = (-0.5 * (y - mu[..., None]) ** 2 / v - 0.5 * torch.log(v) - 0.5 * _LOG_2PI).sum(-1)
        # log-Jacobians: exp; logistic on (0, 1); logistic on (0, 1 − alpha1)
        jac = x[..., 1] + logsigmoid(x[..., 2]) + logsigmoid(-x[..., 2])
        jac = jac + torch.log1p(-a1) + logsigmoid(x[..., 3]) + logsigmoid(-x[..., 3])
        return lp + jac


class LowDimGaussMix(PosteriorTarget):
    """mu ~ N(0, 2²) (ordered), sigma ~ N(0, 2²) on sigma > 0, theta ~ Beta(5, 5),
    y_n ~ theta N(mu1, sigma1²) + (1 − theta) N(mu2, sigma2²);
    x = (mu1, log(mu2 − mu1), log sigma1, log sigma2, logit theta)."""

    def _setup(self) -> None:
        self.params = {"mu": 2, "sigma": 2, "theta": 0}

    def constrain(self, x: Tensor) -> dict[str, Tensor]:
        mu = torch.stack([x[..., 0], x[..., 0] + torch.exp(x[..., 1])], -1)
        return {"mu": mu, "sigma": torch.exp(x[..., 2:4]), "theta": torch.sigmoid(x[..., 4])}

    def unconstrain(self, values: dict[str, Tensor]) -> Tensor:
        mu = values["mu"]
        return torch.cat(
            [
                mu[..., :1],
                torch.log(mu[..., 1:] - mu[..., :1]),
                torch.log(values["sigma"]),
                torch.logit(values["theta"])[..., None],
            ],
            -1,
        )

    def _log_prob(self, x: Tensor) -> Tensor:
        c = self.constrain(x)
        mu, sigma, u = c["mu"], c["sigma"], x[..., 4]
        log_t, log_1mt = logsigmoid(u), logsigmoid(-u)  # log θ, log(1 − θ), stably
        lp = normal_log_prob(sigma, 0.0, 2.0).sum(-1) + normal_log_prob(mu, 0.0, 2.0).sum(-1)
        lp = lp + 4.0 * (log_t + log_1mt) - (2 * math.lgamma(5.0) - math.lgamma(10.0))
        y = self._d("y", x)
        comp1 = log_t[..., None] + normal_log_prob(y, mu[..., :1], sigma[..., :1])
        comp2 = log_1mt[..., None] + normal_log_prob(y, mu[..., 1:], sigma[..., 1:])
        lp = lp + torch.logaddexp(comp1, comp2).sum(-1)
        return lp + x[..., 1] + x[..., 2] + x[..., 3] + log_t + log_1mt


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
        pts = torch.as_tensor(self.data["x"], dtype=_F64, device=rho.device)
        sq = (pts[:, None] - pts[None, :]) ** 2
        r, a = rho.to(_F64)[..., None, None], alpha.to(_F64)[..., None, None]
        cov = a**2 * torch.exp(-sq / (2 * r**2)) + 1e-10 * torch.eye(
            len(pts), dtype=_F64, device=rho.device
        )
        return torch.linalg.cholesky(cov)

    def constrain(self, x: Tensor) -> dict[str, Tensor]:
        rho, alpha, ft = torch.exp(x[..., 0]), torch.exp(x[..., 1]), x[..., 2:]
        f = (self._chol(rho, alpha) @ ft.to(_F64)[..., None])[..., 0].to(x.dtype)
        return {"rho": rho, "alpha": alpha, "f_tilde": ft, "f": f}

    def unconstrain(self, values: dict[str, Tensor]) -> Tensor:
        rho, alpha = values["rho"], values["alpha"]
        ft = values.get("f_tilde")
        if ft is None:  # the reference draws hold f = L f_tilde
            chol = self._chol(rho, alpha)
            ft = torch.linalg.solve_triangular(chol, values["f"].to(_F64)[..., None], upper=False)[
                ..., 0
            ]
        return torch.cat(
            [torch.log(rho)[..., None], torch.log(alpha)[..., None], ft.to(rho.dtype)], -1
        )

    def _log_prob(self, x: Tensor) -> Tensor:
        c = self.constrain(x)
        rho, alpha, f = c["rho"], c["alpha"], c["f"]
        lp = 25.0 * math.log(4.0) - math.lgamma(25.0) + 24.0 * torch.log(rho) - 4.0 * rho
        lp = lp + normal_log_prob(alpha, 0.0, 2.0) + normal_log_prob(c["f_tilde"], 0.0, 1.0).sum(-1)
        k = self._d("k", x)
        lp = lp + (k * f - torch.exp(f) - torch.lgamma(k + 1.0)).sum(-1)
        return lp + x[..., 0] + x[..., 1]


_MODELS: dict[str, type[PosteriorTarget]] = {
    "eight_schools-eight_schools_noncentered": EightSchoolsNoncentered,
    "sblrc-blr": SblrcBlr,
    "arK-arK": ArK,
    "kidiq-kidscore_momiq": KidiqMomiq,
    "garch-garch11": Garch11,
    "low_dim_gauss_mix-low_dim_gauss_mix": LowDimGaussMix,
    "gp_pois_regr-gp_pois_regr": GpPoisRegr,
}


def implemented() -> list[str]:
    """The posteriors this module implements (whether or not their files are present)."""
    return sorted(_MODELS)


def available() -> list[str]:
    """The implemented posteriors whose folders are present under :func:`root`."""
    base = root()
    return [n for n in implemented() if (base / n / "data.json.zip").is_file()]


def load(name: str, root_dir: str | Path | None = None) -> PosteriorTarget:
    """Load the posterior ``name`` (e.g. ``"sblrc-blr"``) as a :class:`PosteriorTarget`.

    Args:
        name: a posteriordb posterior name, one of :func:`implemented`.
        root_dir: the posteriordb folder (default :func:`root`).

    Raises:
        ValueError: when ``name`` is not implemented here.
        FileNotFoundError: when its folder (or a file in it) is missing.
    """
    if name not in _MODELS:
        raise ValueError(
            f"posterior {name!r} is not implemented; implemented: {', '.join(implemented())}"
        )
    folder = Path(root_dir) if root_dir is not None else root()
    folder = folder / name
    missing = [
        f for f in ("data.json.zip", "reference_draws.json.zip") if not (folder / f).is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"posterior {name!r}: {', '.join(missing)} not found in {folder} (set {ENV_VAR} to the "
            "folder holding the posteriordb posteriors)"
        )
    return _MODELS[name](name, folder)


register_prefix("posteriordb", load, available)
