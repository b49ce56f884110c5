"""Mixtures: the two-component Gaussian mixture and two hidden Markov models.

The HMM likelihood is the forward algorithm in log space. Its recursion
γ_t(k) = log Σ_j exp(γ_{t−1}(j) + log Θ_jk) + e_t(k) is a product in the (logsumexp, +)
semiring of the transfer matrices M_t(j, k) = log Θ_jk + e_t(k), and that product is associative,
so :func:`hmm_log_likelihood` multiplies the N − 1 matrices pairwise: log₂ N batched steps instead
of N sequential ones (the same sums, in a different order; exact up to rounding).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from vi_flows.targets.base import normal_log_prob
from vi_flows.targets.posteriordb.base import (
    PosteriorTarget,
    log_simplex,
    positive_ordered,
    positive_ordered_inverse,
    simplex_inverse,
)

__all__ = ["HmmDrive", "HmmExample", "LowDimGaussMix", "hmm_log_likelihood"]


def _log_matmul(a: Tensor, b: Tensor) -> Tensor:
    """(logsumexp, +) matrix product: out_ik = log Σ_j exp(a_ij + b_jk), batched."""
    return torch.logsumexp(a[..., :, :, None] + b[..., None, :, :], dim=-2)


def hmm_log_likelihood(log_trans: Tensor, log_emit: Tensor) -> Tensor:
    """log p(y_1..N) of an HMM whose first state carries no initial-distribution term (as the
    posteriordb HMM programs write it: γ_1(k) = e_1(k)).

    Args:
        log_trans: (..., K, K) log transition probabilities,
            log Θ_jk = log p(z_t = k | z_{t−1} = j).
        log_emit: (..., N, K) log emission densities e_t(k) = log p(y_t | z_t = k).

    Returns:
        (...) log Σ_k exp γ_N(k).
    """
    m = log_trans[..., None, :, :] + log_emit[..., 1:, None, :]  # (..., N − 1, K, K)
    while m.shape[-3] > 1:
        n = m.shape[-3]
        paired = _log_matmul(m[..., 0 : n - 1 : 2, :, :], m[..., 1:n:2, :, :])
        m = paired if n % 2 == 0 else torch.cat([paired, m[..., -1:, :, :]], -3)
    gamma = log_emit[..., 0, :]
    if m.shape[-3] == 1:
        gamma = torch.logsumexp(gamma[..., :, None] + m[..., 0, :, :], dim=-2)
    return torch.logsumexp(gamma, -1)


class _TwoStateHmm(PosteriorTarget):
    """Shared pieces: ``simplex[K] theta1, theta2`` (the rows of Θ) and positive_ordered
    emission parameters; subclasses give ``params`` (theta1, theta2 of size K − 1 first) and
    ``_emission_and_prior``."""

    ordered: tuple[str, ...] = ()

    def _setup(self) -> None:
        if int(self.data["K"]) != 2:  # the programs build theta from exactly theta1, theta2
            raise ValueError(f"{self.folder}: the HMM programs need K = 2, got {self.data['K']}")

    def _parts(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """(constrained values, log Θ (..., K, K), log-Jacobian)."""
        b = self._split(x)
        (l1, j1), (l2, j2) = log_simplex(b["theta1"]), log_simplex(b["theta2"])
        c = {"theta1": torch.exp(l1), "theta2": torch.exp(l2)}
        jac = j1 + j2
        for name in self.ordered:
            c[name], j = positive_ordered(b[name])
            jac = jac + j
        return c, torch.stack([l1, l2], -2), jac

    def constrain(self, x: Tensor) -> dict[str, Tensor]:
        c, _, _ = self._parts(x)
        c["theta"] = torch.stack([c["theta1"], c["theta2"]], -2)
        return c

    def unconstrain(self, values: dict[str, Tensor]) -> Tensor:
        blocks = [simplex_inverse(values["theta1"]), simplex_inverse(values["theta2"])]
        return self._join(blocks + [positive_ordered_inverse(values[n]) for n in self.ordered])

    def _emission_and_prior(
        self, c: dict[str, Tensor], log_theta: Tensor, x: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(log emission densities e_t(k) (..., N, K), log prior of the emission parameters
        and of Θ (...))."""
        raise NotImplementedError

    def _log_prob(self, x: Tensor) -> Tensor:
        c, log_theta, jac = self._parts(x)
        log_emit, prior = self._emission_and_prior(c, log_theta, x)
        return hmm_log_likelihood(log_theta, log_emit) + prior + jac


class HmmExample(_TwoStateHmm):
    """hmm_example-hmm_example: simplex[2] theta1, theta2 (flat), positive_ordered[2] mu with
    mu1 ~ N(3, 1), mu2 ~ N(10, 1); y_t | z_t = k ~ N(mu_k, 1), forward algorithm;
    x = (theta1 stick, theta2 stick, log mu1, log(mu2 − mu1))."""

    params = {"theta1": 1, "theta2": 1, "mu": 2}
    ordered = ("mu",)

    def _emission_and_prior(
        self, c: dict[str, Tensor], log_theta: Tensor, x: Tensor
    ) -> tuple[Tensor, Tensor]:
        mu = c["mu"]
        log_emit = normal_log_prob(self._d("y", x)[:, None], mu[..., None, :], 1.0)
        prior = normal_log_prob(mu[..., 0], 3.0, 1.0) + normal_log_prob(mu[..., 1], 10.0, 1.0)
        return log_emit, prior


class HmmDrive(_TwoStateHmm):
    """bball_drive_event_0-hmm_drive_0: theta_k ~ Dirichlet(alpha[k, :]), positive_ordered[2]
    phi and lambda with phi1, lambda1 ~ N(0, 1), phi2, lambda2 ~ N(3, 1);
    u_t | z_t = k ~ Exponential(phi_k), v_t | z_t = k ~ Exponential(lambda_k) (rates), forward
    algorithm; x = (theta1 stick, theta2 stick, log phi1, log(phi2 − phi1), log lambda1,
    log(lambda2 − lambda1))."""

    params = {"theta1": 1, "theta2": 1, "phi": 2, "lambda": 2}
    ordered = ("phi", "lambda")

    def _emission_and_prior(
        self, c: dict[str, Tensor], log_theta: Tensor, x: Tensor
    ) -> tuple[Tensor, Tensor]:
        phi, lam = c["phi"][..., None, :], c["lambda"][..., None, :]
        u, v = self._d("u", x)[:, None], self._d("v", x)[:, None]
        log_emit = torch.log(phi) - phi * u + torch.log(lam) - lam * v
        alpha = self._d("alpha", x)  # row k: the Dirichlet prior of theta_k
        dirichlet = ((alpha - 1) * log_theta).sum((-1, -2)) + (
            torch.lgamma(alpha.sum(-1)) - torch.lgamma(alpha).sum(-1)
        ).sum()
        prior = dirichlet + normal_log_prob(c["phi"], torch.tensor([0.0, 3.0]).to(x), 1.0).sum(-1)
        prior = prior + normal_log_prob(c["lambda"], torch.tensor([0.0, 3.0]).to(x), 1.0).sum(-1)
        return log_emit, prior


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
