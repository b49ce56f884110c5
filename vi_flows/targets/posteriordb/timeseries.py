"""Time-series models: AR(K), ARMA(1, 1) and GARCH(1, 1).

The recursions (ARMA's errors, GARCH's variances) are sequential in t and vectorized over the
batch of samples.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from vi_flows.targets.base import normal_log_prob
from vi_flows.targets.posteriordb.base import LOG_2PI, PosteriorTarget, cauchy_log_prob

__all__ = ["ArK", "Arma11", "Garch11"]


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
        lp = lp + cauchy_log_prob(c["sigma"], 0.0, 2.5)
        lp = lp + normal_log_prob(self._d("_y", x), mean, c["sigma"][..., None]).sum(-1)
        return lp + x[..., -1]


class Arma11(PosteriorTarget):
    """arma-arma11: mu ~ N(0, 10²), phi ~ N(0, 2²), theta ~ N(0, 2²), sigma ~ Cauchy(0, 2.5) on
    sigma > 0; nu_1 = mu + phi·mu, nu_t = mu + phi y_{t−1} + theta err_{t−1},
    err_t = y_t − nu_t, err ~ N(0, sigma²); x = (mu, phi, theta, log sigma)."""

    params = {"mu": 0, "phi": 0, "theta": 0, "sigma": 0}

    def constrain(self, x: Tensor) -> dict[str, Tensor]:
        b = self._split(x)
        b["sigma"] = torch.exp(b["sigma"])
        return b

    def unconstrain(self, values: dict[str, Tensor]) -> Tensor:
        return self._join(
            [values["mu"], values["phi"], values["theta"], torch.log(values["sigma"])]
        )

    def _log_prob(self, x: Tensor) -> Tensor:
        c = self.constrain(x)
        y = self._d("y", x)
        mu, phi, theta, sigma = c["mu"], c["phi"], c["theta"], c["sigma"]
        # err_t = a_t − theta err_{t−1} with a_t = y_t − mu − phi y_{t−1} (y_0 := mu, err_0 := 0)
        a = y[1:] - mu[..., None] - phi[..., None] * y[:-1]
        err = y[0] - mu - phi * mu
        sq = err * err
        for t in range(a.shape[-1]):
            err = a[..., t] - theta * err
            sq = sq + err * err
        n = y.shape[0]
        lp = -0.5 * sq / sigma**2 - n * (torch.log(sigma) + 0.5 * LOG_2PI)
        lp = lp + normal_log_prob(mu, 0.0, 10.0) + normal_log_prob(phi, 0.0, 2.0)
        lp = lp + normal_log_prob(theta, 0.0, 2.0) + cauchy_log_prob(sigma, 0.0, 2.5)
        return lp + x[..., 3]


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
        lp = (-0.5 * (y - mu[..., None]) ** 2 / v - 0.5 * torch.log(v) - 0.5 * LOG_2PI).sum(-1)
        # log-Jacobians: exp; logistic on (0, 1); logistic on (0, 1 − alpha1)
        jac = x[..., 1] + logsigmoid(x[..., 2]) + logsigmoid(-x[..., 2])
        jac = jac + torch.log1p(-a1) + logsigmoid(x[..., 3]) + logsigmoid(-x[..., 3])
        return lp + jac
