"""psis_khat against an independent NumPy implementation of the PSIS tail fit, and against the known
tail index of Pareto weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vi_flows.diagnostics import psis_khat


def _reference_khat(log_w: np.ndarray) -> float:
    """PSIS k̂ written from the papers: tail of the largest min(0.2 n, 3√n) weights (Vehtari et
    al. 2017), the Zhang & Stephens (2009) profile-likelihood GPD fit, shrunk towards 0.5 with
    weight 10 (Vehtari et al.'s weakly informative prior)."""
    lw = np.sort(log_w - log_w.max())
    n = lw.size
    m_tail = math.ceil(min(0.2 * n, 3.0 * math.sqrt(n)))
    cutoff = max(math.log(1e-15), lw[-m_tail - 1])
    x = np.sort(np.exp(lw[lw > cutoff]) - math.exp(cutoff))
    size = x.size
    m = 30 + int(math.sqrt(size))
    j = np.arange(1, m + 1)
    theta = 1.0 / x[-1] + (1.0 - np.sqrt(m / (j - 0.5))) / (3.0 * x[int(size / 4 - 0.5)])
    k = np.array([np.mean(np.log1p(-t * x)) for t in theta])
    profile = size * (np.log(-theta / k) - k - 1.0)
    weights = np.array([1.0 / np.sum(np.exp(profile - p)) for p in profile])
    keep = weights > 1e-30
    weights = weights[keep] / weights[keep].sum()
    theta_hat = float(np.sum(theta[keep] * weights))
    k_hat = float(np.mean(np.log1p(-theta_hat * x)))
    return (size * k_hat + 10 * 0.5) / (size + 10)


@pytest.mark.parametrize("seed", [0, 1])
def test_psis_khat_matches_the_reference_implementation(seed):
    rng = np.random.default_rng(seed)
    log_w = rng.standard_t(df=3, size=5000)
    assert psis_khat(torch.as_tensor(log_w)) == pytest.approx(_reference_khat(log_w), abs=1e-9)


@pytest.mark.parametrize("alpha", [1.0, 2.0, 4.0])
def test_psis_khat_recovers_the_pareto_tail_index(alpha):
    # w ~ Pareto(α): the tail's GPD shape is k = 1/α (1, 0.5, 0.25: not all at the prior's 0.5)
    rng = np.random.default_rng(0)
    log_w = np.log(rng.pareto(alpha, size=100_000) + 1.0)
    assert psis_khat(torch.as_tensor(log_w)) == pytest.approx(1.0 / alpha, abs=0.1)
