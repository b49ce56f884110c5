"""A hierarchical logistic regression with synthetic data shipped in the repository.

J groups, P coefficients per group (an intercept and P − 1 covariates), non-centered:

.. math::
    μ_p \\sim N(0, 2^2),\\quad τ_p \\sim N^+(0, 1),\\quad z_{jp} \\sim N(0, 1),\\quad
    β_j = μ + τ ⊙ z_j,\\quad y_i \\sim \\text{Bernoulli}(\\text{logit}^{-1}(x_i^\\top β_{g_i})).

x = (μ[1..P], log τ[1..P], z[1,1..P], …, z[J,1..P]) is the unconstrained vector (d = P(J + 2);
30 with the shipped J = 8, P = 3), and ``log_prob`` includes the log-Jacobian of τ = exp(u) and
every normalizing constant. The groups have 10 to 60 observations, so some β_j are pinned by
their data and others by the population: the posterior has both well-identified and
prior-dominated directions and the τ–z coupling of hierarchical models.

The data (``data/hier_logreg.json``) are :func:`simulate` ``(seed=0)``; the reference draws
(``data/hier_logreg_reference.pt``) come from a long multi-chain HMC run,
``python -m benchmarks.hier_logreg_reference`` (split-R̂ and ESS are stored with them).

>>> t = HierLogReg()
>>> t.dim, tuple(t.log_prob(torch.zeros(4, t.dim)).shape)
(30, (4,))
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.functional import softplus

from vi_flows.targets.base import Target, normal_log_prob, register

__all__ = ["DATA", "REFERENCE", "HierLogReg", "simulate"]

DATA = Path(__file__).resolve().parent / "data" / "hier_logreg.json"
REFERENCE = Path(__file__).resolve().parent / "data" / "hier_logreg_reference.pt"
_LOG_2 = math.log(2.0)


def simulate(seed: int = 0, groups: int = 8, coefs: int = 3) -> dict[str, Any]:
    """The synthetic data set: group sizes 10–60, covariates N(0, 1), true μ, τ fixed."""
    gen = torch.Generator().manual_seed(seed)
    mu = torch.tensor([-0.5, 1.0, -0.8, 0.3, 0.0][:coefs], dtype=torch.float64)
    tau = torch.tensor([0.6, 0.4, 0.8, 0.5, 0.5][:coefs], dtype=torch.float64)
    beta = mu + tau * torch.randn(groups, coefs, generator=gen, dtype=torch.float64)
    sizes = torch.randint(10, 61, (groups,), generator=gen)
    g = torch.repeat_interleave(torch.arange(groups), sizes)
    x = torch.randn(len(g), coefs, generator=gen, dtype=torch.float64)
    x[:, 0] = 1.0
    p = torch.sigmoid((x * beta[g]).sum(-1))
    y = torch.bernoulli(p, generator=gen)
    return {
        "J": groups,
        "P": coefs,
        "N": len(g),
        "group": g.tolist(),
        "x": [[round(v, 6) for v in row] for row in x.tolist()],
        "y": [int(v) for v in y.tolist()],
        "seed": seed,
    }


class HierLogReg(Target):
    """The hierarchical logistic regression above, on the shipped data (or ``data``)."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = data if data is not None else json.loads(DATA.read_text())
        self.groups, self.coefs = int(self.data["J"]), int(self.data["P"])
        super().__init__("hier-logreg", self.coefs * (self.groups + 2))
        self._x = torch.tensor(self.data["x"], dtype=torch.float64)
        self._y = torch.tensor(self.data["y"], dtype=torch.float64)
        self._g = torch.tensor(self.data["group"], dtype=torch.long)

    def constrain(self, x: Tensor) -> dict[str, Tensor]:
        """μ (..., P), τ (..., P), z (..., J, P) and β = μ + τ z (..., J, P) at unconstrained x."""
        p, j = self.coefs, self.groups
        mu, tau = x[..., :p], torch.exp(x[..., p : 2 * p])
        z = x[..., 2 * p :].reshape(*x.shape[:-1], j, p)
        return {"mu": mu, "tau": tau, "z": z, "beta": mu[..., None, :] + tau[..., None, :] * z}

    def _log_prob(self, x: Tensor) -> Tensor:
        c = self.constrain(x)
        p = self.coefs
        lp = normal_log_prob(c["mu"], 0.0, 2.0).sum(-1)
        lp = lp + (normal_log_prob(c["tau"], 0.0, 1.0) + _LOG_2).sum(-1)  # half-normal
        lp = lp + x[..., p : 2 * p].sum(-1)  # log-Jacobian of τ = exp(u)
        lp = lp + normal_log_prob(c["z"], 0.0, 1.0).sum((-1, -2))
        xs, ys = self._x.to(x), self._y.to(x)
        eta = (xs * c["beta"][..., self._g.to(x.device), :]).sum(-1)  # (..., N)
        return lp + (ys * eta - softplus(eta)).sum(-1)

    def reference_unconstrained(self) -> Tensor:
        """The shipped reference draws of x (n, d) float64 (see the module docstring)."""
        blob = torch.load(REFERENCE, weights_only=True)
        return blob["draws"].double()


register("hier-logreg", HierLogReg)
