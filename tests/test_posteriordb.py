"""Tests for ``vi_flows.posteriordb`` against independent scipy implementations of the Stan models
and against the reference draws. Skipped when ../shared/posteriordb is absent."""

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import expit, logsumexp

from vi_flows import targets
from vi_flows.targets import posteriordb
from vi_flows.targets.posteriordb import PosteriorTarget, available, implemented, load

NAMES = available()
needs_data = pytest.mark.skipif(
    not NAMES, reason=f"posteriordb folder {posteriordb.root()} is absent"
)


@pytest.fixture(scope="module")
def models() -> dict[str, PosteriorTarget]:
    return {n: load(n) for n in NAMES}


# --- independent numpy/scipy versions: constrain u -> declared parameters, and log density ------


def _con_eight(u: np.ndarray) -> np.ndarray:
    return np.concatenate([u[:9], np.exp(u[9:])])


def _lp_eight(p: np.ndarray, data: dict) -> float:
    tt, mu, tau = p[:8], p[8], p[9]
    y, sig = np.array(data["y"]), np.array(data["sigma"])
    return (
        stats.norm.logpdf(tt).sum()
        + stats.norm.logpdf(y, mu + tau * tt, sig).sum()
        + stats.norm.logpdf(mu, 0, 5)
        + stats.cauchy.logpdf(tau, 0, 5)
    )


def _con_last_positive(u: np.ndarray) -> np.ndarray:
    return np.concatenate([u[:-1], np.exp(u[-1:])])


def _lp_blr(p: np.ndarray, data: dict) -> float:
    beta, sigma = p[:-1], p[-1]
    mean = np.array(data["X"]) @ beta
    return (
        stats.norm.logpdf(beta, 0, 10).sum()
        + stats.norm.logpdf(sigma, 0, 10)
        + stats.norm.logpdf(np.array(data["y"]), mean, sigma).sum()
    )


def _lp_ark(p: np.ndarray, data: dict) -> float:
    k, y = data["K"], data["y"]
    alpha, beta, sigma = p[0], p[1 : 1 + k], p[-1]
    total = stats.norm.logpdf(alpha, 0, 10) + stats.norm.logpdf(beta, 0, 10).sum()
    total += stats.cauchy.logpdf(sigma, 0, 2.5)
    for t in range(k, data["T"]):  # Stan's loop t in (K+1):T, 0-based
        mu = alpha + sum(beta[j] * y[t - j - 1] for j in range(k))
        total += stats.norm.logpdf(y[t], mu, sigma)
    return total


def _lp_kidiq(p: np.ndarray, data: dict) -> float:
    mean = p[0] + p[1] * np.array(data["mom_iq"])
    return (
        stats.cauchy.logpdf(p[2], 0, 2.5) + stats.norm.logpdf(data["kid_score"], mean, p[2]).sum()
    )


def _con_garch(u: np.ndarray) -> np.ndarray:
    a1 = expit(u[2])
    return np.array([u[0], np.exp(u[1]), a1, (1 - a1) * expit(u[3])])


def _lp_garch(p: np.ndarray, data: dict) -> float:
    mu, a0, a1, b1 = p
    y = data["y"]
    sigma = [data["sigma1"]]
    for t in range(1, data["T"]):
        sigma.append(math.sqrt(a0 + a1 * (y[t - 1] - mu) ** 2 + b1 * sigma[-1] ** 2))
    return stats.norm.logpdf(y, mu, sigma).sum()


def _con_gmix(u: np.ndarray) -> np.ndarray:
    return np.array([u[0], u[0] + np.exp(u[1]), np.exp(u[2]), np.exp(u[3]), expit(u[4])])


def _lp_gmix(p: np.ndarray, data: dict) -> float:
    mu, sigma, theta = p[:2], p[2:4], p[4]
    y = np.array(data["y"])
    mix = np.stack(
        [np.log(theta) + stats.norm.logpdf(y, mu[0], sigma[0]),
         np.log1p(-theta) + stats.norm.logpdf(y, mu[1], sigma[1])]
    )  # fmt: skip
    return (
        stats.norm.logpdf(sigma, 0, 2).sum()
        + stats.norm.logpdf(mu, 0, 2).sum()
        + stats.beta.logpdf(theta, 5, 5)
        + logsumexp(mix, axis=0).sum()
    )


def _con_gp(u: np.ndarray) -> np.ndarray:
    return np.concatenate([np.exp(u[:2]), u[2:]])


def _lp_gp(p: np.ndarray, data: dict) -> float:
    rho, alpha, ft = p[0], p[1], p[2:]
    x = np.array(data["x"], dtype=float)
    cov = alpha**2 * np.exp(-(np.subtract.outer(x, x) ** 2) / (2 * rho**2)) + 1e-10 * np.eye(len(x))
    f = np.linalg.cholesky(cov) @ ft
    return (
        stats.gamma.logpdf(rho, 25, scale=1 / 4)
        + stats.norm.logpdf(alpha, 0, 2)
        + stats.norm.logpdf(ft).sum()
        + stats.poisson.logpmf(data["k"], np.exp(f)).sum()
    )


REFERENCE: dict[str, tuple[Callable, Callable]] = {
    "eight_schools-eight_schools_noncentered": (_con_eight, _lp_eight),
    "sblrc-blr": (_con_last_positive, _lp_blr),
    "arK-arK": (_con_last_positive, _lp_ark),
    "kidiq-kidscore_momiq": (_con_last_positive, _lp_kidiq),
    "garch-garch11": (_con_garch, _lp_garch),
    "low_dim_gauss_mix-low_dim_gauss_mix": (_con_gmix, _lp_gmix),
    "gp_pois_regr-gp_pois_regr": (_con_gp, _lp_gp),
}


def _log_abs_det_jacobian(con: Callable, u: np.ndarray, h: float = 1e-5) -> float:
    """log|det ∂con/∂u| by central differences (independent of any hand-derived Jacobian)."""
    cols = [(con(u + h * e) - con(u - h * e)) / (2 * h) for e in np.eye(len(u))]
    return float(np.linalg.slogdet(np.stack(cols, 1))[1])


def _test_points(m: PosteriorTarget, n: int = 3) -> np.ndarray:
    """The reference mean in unconstrained space and points scattered around it."""
    xu = m.reference_unconstrained()
    rng = np.random.default_rng(0)
    mean, sd = xu.mean(0).numpy(), xu.std(0).numpy()
    return np.stack([mean] + [mean + 1.5 * sd * rng.standard_normal(m.dim) for _ in range(n)])


def test_every_implemented_model_has_a_reference() -> None:
    assert set(REFERENCE) == set(implemented())
    required = {"eight_schools-eight_schools_noncentered", "sblrc-blr", "arK-arK"}
    assert required <= set(implemented())


@needs_data
@pytest.mark.parametrize("name", NAMES)
def test_log_prob_matches_scipy(models: dict, name: str) -> None:
    m = models[name]
    con, lp_ref = REFERENCE[name]
    pts = _test_points(m)
    ours = m.log_prob(torch.from_numpy(pts)).numpy()
    for u, value in zip(pts, ours, strict=True):
        expected = lp_ref(con(u), m.data) + _log_abs_det_jacobian(con, u)
        assert value == pytest.approx(expected, rel=1e-7, abs=1e-5)
        # constrain agrees with the independent map on the declared parameters, in order
        c = m.constrain(torch.from_numpy(u))
        flat = torch.cat([c[p].reshape(-1) for p in m.params]).numpy()
        np.testing.assert_allclose(flat, con(u), rtol=1e-10, atol=1e-12)


@needs_data
@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_and_gradients(models: dict, name: str) -> None:
    m = models[name]
    assert m.log_z is None and not m.has_sample
    with pytest.raises(NotImplementedError):
        m.sample(2)
    centre = m.reference_unconstrained().mean(0)
    for dtype in (torch.float32, torch.float64):
        for batch in [(), (3,), (2, 3)]:
            x = (centre + 0.1 * torch.randn(*batch, m.dim, dtype=torch.float64)).to(dtype)
            x.requires_grad_(True)
            lp = m.log_prob(x)
            assert lp.shape == batch and lp.dtype == dtype
            (grad,) = torch.autograd.grad(lp.sum(), x)
            assert torch.isfinite(lp).all() and torch.isfinite(grad).all()
            for key, val in m.constrain(x).items():
                assert val.shape[: len(batch)] == batch, key
    x64 = centre + 0.1 * torch.randn(4, m.dim, dtype=torch.float64)
    torch.testing.assert_close(
        m.log_prob(x64.float()).double(), m.log_prob(x64), rtol=1e-4, atol=1e-2
    )


@needs_data
@pytest.mark.parametrize("name", NAMES)
def test_reference_draws_round_trip_and_sit_at_high_density(models: dict, name: str) -> None:
    m = models[name]
    ref = m.reference_draws()
    xu = m.reference_unconstrained()
    assert xu.shape == (10000, m.dim) and torch.isfinite(xu).all()
    back = m.constrain(xu)
    for key, val in ref.items():
        assert val.shape[0] == 10000
        torch.testing.assert_close(back[key], val, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        lp_draws = m.log_prob(xu[::4])
        lp_mean = m.log_prob(xu.mean(0))
        # far away: 8 posterior sds from the mean along random directions
        dirs = torch.randn(20, m.dim, generator=torch.Generator().manual_seed(0), dtype=xu.dtype)
        far = xu.mean(0) + 8 * xu.std(0) * dirs / dirs.norm(dim=1, keepdim=True)
        lp_far = m.log_prob(far)
    assert lp_mean > torch.quantile(lp_draws, 0.95)
    assert lp_far.max() < lp_draws.min()


@needs_data
@pytest.mark.parametrize("name", NAMES)
def test_stein_identity_on_reference_draws(models: dict, name: str) -> None:
    """E_p[∇ log p(x)] = 0: any wrong term in log p (a prior, a Jacobian, a likelihood scale)
    shifts the average score over exact posterior draws away from 0."""
    m = models[name]
    x = m.reference_unconstrained()[::2].clone().requires_grad_(True)
    (score,) = torch.autograd.grad(m.log_prob(x).sum(), x)
    z = score.mean(0) / (score.std(0) / math.sqrt(len(score)))
    assert z.abs().max() < 5, z


@needs_data
def test_map_and_laplace_for_blr(models: dict) -> None:
    """The MAP of the (near-Gaussian) sblrc-blr posterior lands on the reference mean and the
    Laplace standard deviations match the reference draws'.

    L-BFGS rather than Adam: the posterior sds differ 70-fold (beta: 1e-3, log sigma: 0.07) with
    correlations 0.8 between the betas, and a few hundred Adam steps do not resolve that.
    """
    if "sblrc-blr" not in models:
        pytest.skip("sblrc-blr absent")
    m = models["sblrc-blr"]
    x = torch.zeros(m.dim, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([x], max_iter=200, line_search_fn="strong_wolfe", tolerance_grad=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -m.log_prob(x)
        loss.backward()
        return loss

    opt.step(closure)
    x_map = x.detach()
    xu = m.reference_unconstrained()
    mean, sd = xu.mean(0), xu.std(0)
    # beta: MAP = mean up to skewness, which is negligible here
    assert ((x_map[:5] - mean[:5]).abs() < 0.1 * sd[:5]).all(), (x_map - mean) / sd
    # log sigma: the joint mode has e^{2u} = RSS/(N − 1) while the marginal posterior (beta
    # integrated out) centres at RSS/(N − D − 1), so the MAP sits ½ log(99/94) below the mean
    n, d = m.data["N"], m.data["D"]
    shift = 0.5 * math.log((n - 1) / (n - d - 1))
    assert abs(x_map[5] - (mean[5] - shift)) < 0.15 * sd[5], (x_map[5] - mean[5]) / sd[5]
    hess = torch.autograd.functional.hessian(m.log_prob, x_map)
    laplace_sd = torch.linalg.inv(-hess).diagonal().sqrt()
    torch.testing.assert_close(laplace_sd, sd, rtol=0.1, atol=0)
    c, ref = m.constrain(x_map), m.reference_draws()
    assert ((c["beta"] - ref["beta"].mean(0)).abs() < 0.1 * ref["beta"].std(0)).all()


def test_errors_without_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="not implemented; implemented: .*sblrc-blr"):
        load("nope")
    with pytest.raises(FileNotFoundError, match=posteriordb.ENV_VAR):
        load("sblrc-blr", root_dir=tmp_path)
    monkeypatch.setenv(posteriordb.ENV_VAR, str(tmp_path))
    assert posteriordb.root() == tmp_path and available() == []
    with pytest.raises(FileNotFoundError, match="not found"):
        load("arK-arK")


@needs_data
def test_reachable_through_targets() -> None:
    t = targets.get("posteriordb:arK-arK")
    assert isinstance(t, PosteriorTarget) and t.dim == 7
    assert targets.as_target(t, dim=7) is t
    assert set(t.reference_draws()) == {"alpha", "beta", "sigma"}
    assert t.reference_draws()["beta"].shape == (10000, 5)
