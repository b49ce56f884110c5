"""Normal linear regressions y ~ N(X w, σ²) and the eight-schools hierarchical model.

Every regression here is one :class:`LinearRegression`: the declared parameters are real
coefficients (in declaration order they make the vector w, matching the columns of the design
matrix X that ``_design`` builds from the data, including Stan's ``transformed data``) and a last
``real<lower=0> sigma`` (x holds log σ). Each subclass states its Stan model in its docstring and
adds the log prior of its ``model`` block (improper flat priors are the constant 0).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from vi_flows.targets.base import normal_log_prob
from vi_flows.targets.posteriordb.base import (
    PosteriorTarget,
    cauchy_log_prob,
    student_t_log_prob,
)

__all__ = [
    "Diamonds",
    "EarnHeight",
    "EightSchoolsNoncentered",
    "Kilpisjarvi",
    "KidiqInteraction",
    "KidiqInteractionC",
    "KidiqMomiq",
    "LinearRegression",
    "LogearnInteractionZ",
    "LogearnLogheightMale",
    "LogmesquiteLogvash",
    "Nes",
    "SblrBlr",
]


def _columns(*cols: object) -> np.ndarray:
    """The design matrix (N, p) from columns (arrays of length N, or 1.0 for an intercept)."""
    arrays = [np.asarray(c, dtype=np.float64) for c in cols]
    n = max(a.size for a in arrays)
    return np.stack([np.broadcast_to(a, (n,)) for a in arrays], -1)


class LinearRegression(PosteriorTarget):
    """y ~ N(X w, σ²), w = the declared coefficients in order, σ > 0 last (x = (w, log σ)).

    Subclasses set ``params`` (the coefficient blocks, then ``"sigma": 0``), build ``(X, y)``
    in ``_design`` and add the prior in ``_log_prior`` (default: flat, i.e. 0).
    """

    def _design(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _log_prior(self, c: dict[str, Tensor]) -> Tensor | float:
        return 0.0

    def _setup(self) -> None:
        x, y = self._design()
        self.data["_X"], self.data["_y"] = x, np.asarray(y, dtype=np.float64)

    def constrain(self, x: Tensor) -> dict[str, Tensor]:
        b = self._split(x)
        b["sigma"] = torch.exp(b["sigma"])
        return b

    def unconstrain(self, values: dict[str, Tensor]) -> Tensor:
        blocks = [values[p] for p in self.params]
        blocks[-1] = torch.log(blocks[-1])
        return self._join(blocks)

    def _log_prob(self, x: Tensor) -> Tensor:
        c = self.constrain(x)
        sigma = c["sigma"]
        mean = x[..., :-1] @ self._d("_X", x).T  # (..., N): w is x without its last entry
        lp = normal_log_prob(self._d("_y", x), mean, sigma[..., None]).sum(-1)
        return lp + self._log_prior(c) + x[..., -1]  # log-Jacobian of σ = exp(u)


class SblrBlr(LinearRegression):
    """sblrc-blr and sblri-blr: beta ~ N(0, 10²), sigma ~ N(0, 10²) on sigma > 0,
    y ~ N(X beta, sigma²); x = (beta[1..D], log sigma)."""

    def _setup(self) -> None:
        self.params = {"beta": int(self.data["D"]), "sigma": 0}
        super()._setup()

    def _design(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.data["X"], dtype=np.float64), self.data["y"]

    def _log_prior(self, c: dict[str, Tensor]) -> Tensor:
        return normal_log_prob(c["beta"], 0.0, 10.0).sum(-1) + normal_log_prob(
            c["sigma"], 0.0, 10.0
        )


class KidiqMomiq(LinearRegression):
    """kidiq-kidscore_momiq: flat beta, sigma ~ Cauchy(0, 2.5) on sigma > 0,
    kid_score ~ N(beta1 + beta2 mom_iq, sigma²)."""

    params = {"beta": 2, "sigma": 0}

    def _design(self) -> tuple[np.ndarray, np.ndarray]:
        return _columns(1.0, self.data["mom_iq"]), self.data["kid_score"]

    def _log_prior(self, c: dict[str, Tensor]) -> Tensor:
        return cauchy_log_prob(c["sigma"], 0.0, 2.5)


class KidiqInteraction(KidiqMomiq):
    """kidiq-kidscore_interaction: flat beta, sigma ~ Cauchy(0, 2.5) on sigma > 0,
    kid_score ~ N(beta1 + beta2 mom_hs + beta3 mom_iq + beta4 mom_hs·mom_iq, sigma²)."""

    params = {"beta": 4, "sigma": 0}

    def _design(self) -> tuple[np.ndarray, np.ndarray]:
        hs, iq = np.asarray(self.data["mom_hs"]), np.asarray(self.data["mom_iq"])
        return _columns(1.0, hs, iq, hs * iq), self.data["kid_score"]


class KidiqInteractionC(LinearRegression):
    """kidiq_with_mom_work-kidscore_interaction_c: flat priors, centred predictors
    c_hs = mom_hs − mean, c_iq = mom_iq − mean,
    kid_score ~ N(beta1 + beta2 c_hs + beta3 c_iq + beta4 c_hs·c_iq, sigma²)."""

    params = {"beta": 4, "sigma": 0}

    def _design(self) -> tuple[np.ndarray, np.ndarray]:
        hs, iq = np.asarray(self.data["mom_hs"]), np.asarray(self.data["mom_iq"])
        hs, iq = hs - hs.mean(), iq - iq.mean()
        return _columns(1.0, hs, iq, hs * iq), self.data["kid_score"]


class EarnHeight(LinearRegression):
    """earnings-earn_height: flat priors, earn ~ N(beta1 + beta2 height, sigma²)."""

    params = {"beta": 2, "sigma": 0}

    def _design(self) -> tuple[np.ndarray, np.ndarray]:
        return _columns(1.0, self.data["height"]), self.data["earn"]


class LogearnInteractionZ(LinearRegression):
    """earnings-logearn_interaction_z: flat priors, z = (height − mean)/sd (sd with N − 1),
    log earn ~ N(beta1 + beta2 z + beta3 male + beta4 z·male, sigma²)."""

    params = {"beta": 4, "sigma": 0}

    def _design(self) -> tuple[np.ndarray, np.ndarray]:
        h, male = np.asarray(self.data["height"], dtype=np.float64), np.asarray(self.data["male"])
        z = (h - h.mean()) / h.std(ddof=1)
        return _columns(1.0, z, male, z * male), np.log(self.data["earn"])


class LogearnLogheightMale(LinearRegression):
    """earnings-logearn_logheight_male: flat priors,
    log earn ~ N(beta1 + beta2 log height + beta3 male, sigma²)."""

    params = {"beta": 3, "sigma": 0}

    def _design(self) -> tuple[np.ndarray, np.ndarray]:
        d = self.data
        return _columns(1.0, np.log(d["height"]), d["male"]), np.log(d["earn"])


class Kilpisjarvi(LinearRegression):
    """kilpisjarvi_mod-kilpisjarvi: alpha ~ N(pmualpha, psalpha²), beta ~ N(pmubeta, psbeta²),
    flat sigma > 0, y ~ N(alpha + beta x, sigma²); x = (alpha, beta, log sigma)."""

    params = {"alpha": 0, "beta": 0, "sigma": 0}

    def _design(self) -> tuple[np.ndarray, np.ndarray]:
        return _columns(1.0, self.data["x"]), self.data["y"]

    def _log_prior(self, c: dict[str, Tensor]) -> Tensor:
        d = self.data
        return normal_log_prob(c["alpha"], float(d["pmualpha"]), float(d["psalpha"])) + (
            normal_log_prob(c["beta"], float(d["pmubeta"]), float(d["psbeta"]))
        )


class LogmesquiteLogvash(LinearRegression):
    """mesquite-logmesquite_logvash: flat priors, log weight ~ N(beta1 + beta2 log(d1 d2 h_c)
    + beta3 log(d1 d2) + beta4 log(d1/d2) + beta5 log h_total + beta6 group, sigma²)."""

    params = {"beta": 6, "sigma": 0}

    def _design(self) -> tuple[np.ndarray, np.ndarray]:
        d = {k: np.asarray(v, dtype=np.float64) for k, v in self.data.items() if k != "N"}
        d1, d2 = d["diam1"], d["diam2"]
        cols = (np.log(d1 * d2 * d["canopy_height"]), np.log(d1 * d2), np.log(d1 / d2))
        return _columns(1.0, *cols, np.log(d["total_height"]), d["group"]), np.log(d["weight"])


class Nes(LinearRegression):
    """nes2000-nes: flat priors, partyid7 ~ N(beta1 + beta2 real_ideo + beta3 race_adj
    + beta4..6 [age_discrete = 2, 3, 4] + beta7 educ1 + beta8 gender + beta9 income, sigma²)."""

    params = {"beta": 9, "sigma": 0}

    def _design(self) -> tuple[np.ndarray, np.ndarray]:
        d = self.data
        age = np.asarray(d["age_discrete"])
        ages = [(age == k).astype(np.float64) for k in (2, 3, 4)]
        cols = (d["real_ideo"], d["race_adj"], *ages, d["educ1"], d["gender"], d["income"])
        return _columns(1.0, *cols), d["partyid7"]


class Diamonds(LinearRegression):
    """diamonds-diamonds (brms): Xc = X[:, 2:K] centred by column, b ~ N(0, 1),
    Intercept ~ Student-t(3, 8, 10), sigma ~ Student-t(3, 0, 10) truncated to sigma > 0
    (the brms ``− student_t_lccdf(0 | 3, 0, 10)`` = + log 2), Y ~ N(Intercept + Xc b, sigma²);
    x = (b[1..K−1], Intercept, log sigma)."""

    def _setup(self) -> None:
        self.params = {"b": int(self.data["K"]) - 1, "Intercept": 0, "sigma": 0}
        super()._setup()

    def _design(self) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(self.data["X"], dtype=np.float64)[:, 1:]
        return _columns(*(x - x.mean(0)).T, 1.0), self.data["Y"]

    def _log_prior(self, c: dict[str, Tensor]) -> Tensor:
        lp = normal_log_prob(c["b"], 0.0, 1.0).sum(-1)
        lp = lp + student_t_log_prob(c["Intercept"], 3.0, 8.0, 10.0)
        return lp + student_t_log_prob(c["sigma"], 3.0, 0.0, 10.0) + math.log(2.0)


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
        lp = lp + normal_log_prob(c["mu"], 0.0, 5.0) + cauchy_log_prob(c["tau"], 0.0, 5.0)
        return lp + x[..., -1]  # log-Jacobian of tau = exp(u)
