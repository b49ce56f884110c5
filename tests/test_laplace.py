"""Laplace approximation and whitened targets."""

from __future__ import annotations

import math

import pytest
import torch

from vi_flows import flows, targets
from vi_flows.diagnostics import diagnose
from vi_flows.fit import fit
from vi_flows.laplace import Whitened, laplace


def test_laplace_is_exact_for_a_gaussian() -> None:
    t = targets.get("correlated-gaussian", dim=4)
    mode, cov = laplace(t)
    torch.testing.assert_close(mode, t.mean.double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(cov, t.cov.double(), atol=1e-6, rtol=1e-6)


def test_whitening_keeps_log_z_and_maps_back() -> None:
    loc = torch.tensor([3.0, -1.0], dtype=torch.float64)
    tril = torch.tensor([[1e-3, 0.0], [5e-4, 2e-3]], dtype=torch.float64)
    cov = tril @ tril.T

    def log_p(x: torch.Tensor) -> torch.Tensor:
        d = torch.linalg.solve_triangular(tril.to(x.dtype), (x - loc.to(x.dtype)).mT, upper=False)
        return -0.5 * d.square().sum(0)

    w = Whitened(log_p, loc, cov)
    # In z the target is the unnormalized N(0, I) shifted by log|det L| (so log Z is unchanged).
    z0 = torch.zeros(1, 2, dtype=torch.float64)
    assert float(w.log_prob(z0)) == pytest.approx(float(tril.diagonal().log().sum()))
    torch.testing.assert_close(w.unwhiten(z0)[0], loc)
    # A standard flow is already the answer in z: its diagnostics give log Z of the original.
    q = flows.build("gaussian", 2).double()
    d = diagnose(q, w, n=2000)
    true_log_z = math.log(2 * math.pi) + float(tril.diagonal().log().sum())
    assert d.log_z == pytest.approx(true_log_z, abs=1e-6)


def test_whitening_makes_a_badly_scaled_target_easy() -> None:
    # sds 1e-3 and 1 with correlation 0.9, far from the origin: hard from N(0, I), easy whitened.
    scale = torch.tensor([1e-3, 1.0])
    corr = torch.tensor([[1.0, 0.9], [0.9, 1.0]])
    cov = corr * scale[:, None] * scale[None, :]
    mean = torch.tensor([5.0, -3.0])
    prec = torch.linalg.inv(cov)

    def log_p(x: torch.Tensor) -> torch.Tensor:
        d = x - mean.to(x.dtype)
        return -0.5 * ((d @ prec.to(x.dtype)) * d).sum(-1)

    w = Whitened.from_laplace(log_p, dim=2)
    q = flows.build("full-gaussian", 2)
    fit(q, w, 300, lr=1e-2, seed=0, progress=False)
    torch.manual_seed(1)
    x = w.unwhiten(q.sample(20_000)).double()
    assert ((x.mean(0) - mean) / scale).abs().max() < 0.1
    torch.testing.assert_close(
        x.std(0) / scale, torch.ones(2, dtype=torch.float64), atol=0.05, rtol=0
    )
