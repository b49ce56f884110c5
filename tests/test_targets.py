"""Tests for ``vi_flows.targets``: shapes, dtypes, log Z by independent methods, exact samplers."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import trapezoid
from torch import distributions as D

from vi_flows import targets
from vi_flows.registry import UnknownNameError
from vi_flows.targets import Target, as_target, get, names

# (name, options) covering every registered target, some in higher dimensions
CASES = [(n, {}) for n in names()] + [
    ("funnel", {"dim": 5}),
    ("gaussian", {"dim": 7, "loc": 1.0, "scale": 2.0}),
    ("correlated-gaussian", {"dim": 6}),
    ("mixture", {"dim": 5, "k": 3}),
    ("banana", {"dim": 4}),
]
IDS = [n + "".join(f"-{k}{v}" for k, v in o.items()) for n, o in CASES]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_bad_options_are_one_line_naming_them() -> None:
    from vi_flows.targets import get

    with pytest.raises(ValueError, match="target 'hier-logreg': unknown option 'dim'; its options"):
        get("hier-logreg", dim=30)  # a fixed-size target
    with pytest.raises(ValueError, match="target 'funnel': unknown option 'sd'; its options: dim"):
        get("funnel", dim=3, sd=2.0)
    with pytest.raises(ValueError, match="df must be a finite number > 0, got inf"):
        get("student-t", dim=2, df=float("inf"))


def test_registry_names() -> None:
    expected = {"u1", "u2", "u3", "u4", "banana", "funnel", "ring", "moons", "gaussian"}
    assert expected | {"correlated-gaussian", "mixture"} <= set(names())


@pytest.mark.parametrize(("name", "opts"), CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtypes_and_gradients(name: str, opts: dict, dtype: torch.dtype) -> None:
    t = get(name, **opts)
    assert isinstance(t, Target) and t.name == name
    for batch in [(), (5,), (3, 4)]:
        x = torch.randn(*batch, t.dim, generator=_gen(1), dtype=dtype)
        lp = t.log_prob(x)
        assert lp.shape == batch and lp.dtype == dtype
        assert torch.isfinite(lp).all()
    # float32 and float64 agree; batched and single evaluations agree
    x64 = torch.randn(4, t.dim, generator=_gen(2), dtype=torch.float64)
    lp64 = t.log_prob(x64)
    torch.testing.assert_close(t.log_prob(x64.float()).double(), lp64, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(t.log_prob(x64[2]), lp64[2])
    # differentiable and finite gradients, including at the origin (‖z‖ is not smooth there)
    x = torch.cat([torch.zeros(1, t.dim, dtype=dtype), x64.to(dtype)]).requires_grad_(True)
    t.log_prob(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="shape"):
        t.log_prob(torch.zeros(3, t.dim + 1))


# boxes wide enough that the density vanishes at the edges (chosen independently of the
# module's own quadrature boxes), for trapezoid integration on an uneven 977 × 983 grid
BOXES = {
    "u1": ((-7, 7), (-7, 7)),
    "u2": ((-40, 40), (-9, 9)),
    "u3": ((-40, 40), (-9, 9)),
    "u4": ((-40, 40), (-9, 9)),
    "moons": ((-6, 6), (-6, 6)),
    "ring": ((-8, 8), (-8, 8)),
    "banana": ((-60, 60), (-110, 20)),
    "gaussian": ((-9, 9), (-9, 9)),
    "correlated-gaussian": ((-9, 9), (-9, 9)),
    "mixture": ((-30, 30), (-30, 30)),
}


@pytest.mark.parametrize("name", sorted(BOXES))
def test_log_z_by_trapezoid_quadrature(name: str) -> None:
    t = get(name)
    (a0, b0), (a1, b1) = BOXES[name]
    g0, g1 = np.linspace(a0, b0, 977), np.linspace(a1, b1, 983)
    xy = torch.from_numpy(np.stack(np.meshgrid(g0, g1, indexing="ij"), -1))
    with torch.no_grad():
        dens = torch.exp(t.log_prob(xy)).numpy()
    log_z = math.log(trapezoid(trapezoid(dens, g1, axis=1), g0))
    assert t.log_z is not None
    assert abs(t.log_z - log_z) < 1e-3, (t.log_z, log_z)


def test_u1_log_z_matches_literature_and_closed_forms() -> None:
    assert abs(get("u1").log_z - 1.8775) < 1e-3
    # envelope N(0, 4²)-type: Z_k = (Σ component sds)·√(2π)·4√(2π)
    for k, sds in [(2, 0.4), (3, 0.7), (4, 0.75)]:
        assert get(f"u{k}").log_z == pytest.approx(math.log(sds * 8 * math.pi), abs=1e-12)


def _energy_numpy(k: int, z: np.ndarray) -> np.ndarray:
    """U_k from Rezende & Mohamed (2015, Table 1), plus the z1 envelope z1²/32 for k ≥ 2."""
    z1, z2 = z[..., 0], z[..., 1]
    w1 = np.sin(2 * np.pi * z1 / 4)
    w2 = 3 * np.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + np.exp(-(z1 - 1) / 0.3))
    if k == 1:
        r = np.sqrt(z1**2 + z2**2)
        lobes = np.exp(-0.5 * ((z1 - 2) / 0.6) ** 2) + np.exp(-0.5 * ((z1 + 2) / 0.6) ** 2)
        return 0.5 * ((r - 2) / 0.4) ** 2 - np.log(lobes)
    if k == 2:
        u = 0.5 * ((z2 - w1) / 0.4) ** 2
    elif k == 3:
        u = -np.log(
            np.exp(-0.5 * ((z2 - w1) / 0.35) ** 2) + np.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2)
        )
    else:
        u = -np.log(
            np.exp(-0.5 * ((z2 - w1) / 0.4) ** 2) + np.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2)
        )
    return u + z1**2 / 32


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_rezende_energies_match_the_paper(k: int) -> None:
    z = np.random.default_rng(k).uniform(-4, 4, size=(200, 2))
    lp = get(f"u{k}").log_prob(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(lp, -_energy_numpy(k, z), rtol=1e-10, atol=1e-10)


def _reference_distribution(t: Target) -> D.Distribution | None:
    """The same density written with ``torch.distributions`` (None where there is none)."""
    if t.name == "gaussian":
        return D.Independent(D.Normal(t.mean, t.std), 1)
    if t.name == "correlated-gaussian":
        return D.MultivariateNormal(torch.zeros(t.dim, dtype=torch.float64), t.cov)
    if t.name in ("mixture", "ring"):
        k = t.modes.shape[0]
        comp = D.Independent(D.Normal(t.modes, t.sd * torch.ones_like(t.modes)), 1)
        return D.MixtureSameFamily(D.Categorical(torch.ones(k, dtype=torch.float64)), comp)
    return None


CLOSED_FORM = {"gaussian", "correlated-gaussian", "mixture", "ring", "funnel", "banana"}


@pytest.mark.parametrize(
    ("name", "opts"),
    [c for c in CASES if c[0] in CLOSED_FORM],
    ids=[i for i, c in zip(IDS, CASES, strict=True) if c[0] in CLOSED_FORM],
)
def test_log_prob_matches_torch_distributions(name: str, opts: dict) -> None:
    t = get(name, **opts)
    x = 2.0 * torch.randn(50, t.dim, generator=_gen(3), dtype=torch.float64)
    ref = _reference_distribution(t)
    if ref is not None:
        expected = ref.log_prob(x)
    elif name == "funnel":
        v, rest = x[:, 0], x[:, 1:]
        zero = torch.zeros((), dtype=torch.float64)
        expected = D.Normal(zero, 3.0 + zero).log_prob(v)
        expected = expected + D.Normal(zero, torch.exp(v / 2)[:, None]).log_prob(rest).sum(-1)
    elif name == "banana":  # N(0, diag(100, 1, ...)) at φ_b(x), with φ_b volume preserving
        y = x.clone()
        y[:, 1] = x[:, 1] + 0.03 * (x[:, 0] ** 2 - 100.0)
        scale = torch.ones(t.dim, dtype=torch.float64)
        scale[0] = 10.0
        expected = D.Independent(D.Normal(0.0, scale), 1).log_prob(y)
    else:
        raise AssertionError(f"no reference for {name}")
    assert t.log_z == 0.0
    torch.testing.assert_close(t.log_prob(x), expected, rtol=1e-10, atol=1e-10)


SAMPLEABLE = [(n, o) for n, o in CASES if get(n, **o).has_sample]


@pytest.mark.parametrize(("name", "opts"), SAMPLEABLE)
def test_samplers_are_reproducible(name: str, opts: dict) -> None:
    t = get(name, **opts)
    a, b = t.sample(100, _gen(7)), t.sample(100, _gen(7))
    assert a.shape == (100, t.dim) and a.dtype == torch.get_default_dtype()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, t.sample(100, _gen(8)))
    assert t.sample(3, _gen(7), dtype=torch.float64).dtype == torch.float64


def test_every_toy_has_an_exact_sampler_and_wrapped_callables_do_not() -> None:
    # hier-logreg is a posterior, not a toy: it ships HMC reference draws instead.
    assert all(get(n).has_sample for n in names() if n != "hier-logreg")
    assert get("hier-logreg").reference_unconstrained().shape == (4000, 30)
    t = as_target(lambda x: -x.pow(2).sum(-1), dim=2)
    assert not t.has_sample
    with pytest.raises(NotImplementedError):
        t.sample(3)


TWO_D = [n for n in names() if get(n).dim == 2 and n != "funnel"]


@pytest.mark.parametrize("name", TWO_D)
def test_2d_samples_match_density_histogram(name: str) -> None:
    """Bin probabilities from quadrature of p = exp(log p̃ − log Z) vs sample frequencies."""
    t = get(name)
    n = 20000
    x = t.sample(n, _gen(11), dtype=torch.float64)
    (a0, b0), (a1, b1) = t.bounds
    e0, e1 = np.linspace(a0, b0, 7), np.linspace(a1, b1, 7)
    counts, _, _ = np.histogram2d(x[:, 0].numpy(), x[:, 1].numpy(), bins=[e0, e1])
    m = 60  # midpoint rule with 60 × 60 nodes inside each of the 6 × 6 bins
    c0 = a0 + (b0 - a0) / (6 * m) * (np.arange(6 * m) + 0.5)
    c1 = a1 + (b1 - a1) / (6 * m) * (np.arange(6 * m) + 0.5)
    xy = torch.from_numpy(np.stack(np.meshgrid(c0, c1, indexing="ij"), -1))
    with torch.no_grad():
        dens = torch.exp(t.log_prob(xy) - t.log_z).numpy()
    cell = (b0 - a0) * (b1 - a1) / (6 * m) ** 2
    probs = dens.reshape(6, m, 6, m).sum((1, 3)) * cell
    freq = counts / n
    tol = 5 * np.sqrt(probs * (1 - probs) / n) + 1e-3
    assert (np.abs(freq - probs) < tol).all(), np.abs(freq - probs) / tol
    outside = 1 - probs.sum()
    assert abs((1 - counts.sum() / n) - outside) < 5 * math.sqrt(max(outside, 1e-4) / n) + 1e-3


@pytest.mark.parametrize(("k", "expected"), [(3, 0.5), (4, 0.4 / 0.75)])
def test_u3_u4_conditional_component_weights(k: int, expected: float) -> None:
    """Where the two z2 components are far apart, the share of the upper one is its weight."""
    z = get(f"u{k}").sample(100000, _gen(4), dtype=torch.float64)
    z1, z2 = z[:, 0], z[:, 1]
    w1 = torch.sin(math.pi * z1 / 2)
    if k == 3:
        gap = 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    else:
        gap = 3 * torch.sigmoid((z1 - 1) / 0.3)
    sel = gap > 2.5
    upper = (z2[sel] > w1[sel] - gap[sel] / 2).double()
    se = math.sqrt(expected * (1 - expected) / int(sel.sum()))
    assert abs(float(upper.mean()) - expected) < 4 * se


@pytest.mark.parametrize(
    ("name", "opts"), [c for c in SAMPLEABLE if get(c[0], **c[1]).mean is not None]
)
def test_sample_moments(name: str, opts: dict) -> None:
    t = get(name, **opts)
    n = 40000
    x = t.sample(n, _gen(5), dtype=torch.float64)
    if name == "funnel":  # x_i has infinite kurtosis-like tails: check v and x_i e^{−v/2}
        z = torch.cat([x[:, :1] / 3.0, x[:, 1:] * torch.exp(-x[:, :1] / 2)], 1)
        torch.testing.assert_close(z.mean(0), torch.zeros(t.dim, dtype=z.dtype), atol=0.03, rtol=0)
        torch.testing.assert_close(z.std(0), torch.ones(t.dim, dtype=z.dtype), atol=0.02, rtol=0)
        return
    se = t.std / math.sqrt(n)
    assert ((x.mean(0) - t.mean).abs() < 5 * se).all(), (x.mean(0), t.mean)
    torch.testing.assert_close(x.std(0), t.std, rtol=0.03, atol=0)


def test_correlated_gaussian_covariance() -> None:
    t = get("correlated-gaussian", dim=6, rho=0.9)
    assert t.cov[0, 1] == pytest.approx(0.9) and t.cov[0, 5] == pytest.approx(0.9**5)
    x = t.sample(40000, _gen(2), dtype=torch.float64)
    assert (torch.cov(x.T) - t.cov).abs().max() < 0.04
    ev = torch.linalg.eigvalsh(get("correlated-gaussian", dim=200).cov)
    assert 300 < float(ev.max() / ev.min()) < 361


def test_mixture_modes_are_separated_and_equally_weighted() -> None:
    t = get("mixture", dim=10, k=5, sd=1.0, separation=8.0, seed=3)
    torch.testing.assert_close(get("mixture", dim=10, k=5, seed=3).modes, t.modes)
    assert not torch.equal(get("mixture", dim=10, k=5, seed=4).modes, t.modes)
    dist = torch.cdist(t.modes, t.modes) + 1e9 * torch.eye(5, dtype=torch.float64)
    assert dist.min() >= 8.0
    x = t.sample(10000, _gen(0), dtype=torch.float64)
    nearest = torch.cdist(x, t.modes).argmin(1)
    counts = torch.bincount(nearest, minlength=5).double()
    assert ((counts - 2000).abs() < 5 * math.sqrt(10000 * 0.2 * 0.8)).all()
    # each sample sits a χ_10-distributed distance from its mode (mean ≈ √9.5)
    r = (x - t.modes[nearest]).norm(dim=1)
    assert abs(float(r.mean()) - math.sqrt(9.5)) < 0.05


def test_ring_modes() -> None:
    t = get("ring", radius=5.0, sd=0.3, n_modes=6)
    assert t.modes.shape == (6, 2)
    torch.testing.assert_close(t.modes.norm(dim=1), torch.full((6,), 5.0, dtype=torch.float64))
    at_modes = t.log_prob(t.modes)
    assert (at_modes > t.log_prob(torch.zeros(2, dtype=torch.float64)) + 50).all()
    expected = -math.log(6) - math.log(2 * math.pi * 0.09)  # the own component dominates
    torch.testing.assert_close(at_modes, torch.full((6,), expected, dtype=torch.float64))


def test_moons_shape() -> None:
    t = get("moons")
    th = torch.linspace(0.3, math.pi - 0.3, 7, dtype=torch.float64)
    upper = torch.stack([-1 + 2 * th.cos(), -0.5 + 2 * th.sin()], -1)  # on the first moon
    lower = torch.stack([1 - 2 * th.cos(), 0.5 - 2 * th.sin()], -1)  # on the second moon
    off = torch.tensor([[0.0, 3.0], [-1.0, -2.7], [-3.0, 2.0], [3.0, -2.0]], dtype=torch.float64)
    assert t.log_prob(upper).min() > t.log_prob(off).max() + 10
    assert t.log_prob(lower).min() > t.log_prob(off).max() + 10


def test_get_errors_and_aliases() -> None:
    with pytest.raises(UnknownNameError, match="unknown target 'nope'; known: ") as info:
        get("nope")
    assert all(n in str(info.value) for n in names())
    assert "posteriordb:<name>" in str(info.value)
    assert get("U1").name == "u1" and get("correlated_gaussian").name == "correlated-gaussian"
    with pytest.raises(ValueError, match="2-D"):
        get("u1", dim=3)
    with pytest.raises(ValueError, match="dim"):
        get("funnel", dim=1)


def test_as_target() -> None:
    t = get("funnel", dim=3)
    assert as_target(t) is t
    with pytest.raises(ValueError, match="dim 3"):
        as_target(t, dim=4)
    assert as_target("gaussian", dim=5).dim == 5
    assert as_target("u2").name == "u2"

    def log_p(x: torch.Tensor) -> torch.Tensor:  # only handles (n, d) batches
        assert x.ndim == 2
        return -0.5 * (x**2).sum(1)

    w = as_target(log_p, dim=3)
    assert w.name == "log_p" and w.dim == 3 and w.log_z is None
    x = torch.randn(2, 4, 3, generator=_gen(0))
    torch.testing.assert_close(w.log_prob(x), -0.5 * (x**2).sum(-1))
    assert w.log_prob(x[0, 0]).shape == ()
    with pytest.raises(ValueError, match="dim=..."):
        as_target(log_p)
    with pytest.raises(ValueError, match=r"expected \(5,\)"):
        as_target(lambda x: x, dim=2).log_prob(torch.zeros(5, 2))
    with pytest.raises(TypeError, match="cannot make a target"):
        as_target(42)


def test_as_target_wraps_distributions_and_duck_typed_objects() -> None:
    mvn = D.MultivariateNormal(torch.zeros(3), torch.eye(3) * 4.0)
    t = as_target(mvn)
    assert t.dim == 3 and t.name == "MultivariateNormal" and not t.has_sample
    x = torch.randn(2, 6, 3, generator=_gen(0))
    torch.testing.assert_close(t.log_prob(x), mvn.log_prob(x))
    scalar = as_target(D.Normal(3.0, 0.5))  # one coordinate: log_prob of (n, 1) is (n,)
    assert scalar.dim == 1
    x1 = torch.randn(7, 1, generator=_gen(1))
    torch.testing.assert_close(scalar.log_prob(x1), D.Normal(3.0, 0.5).log_prob(x1[:, 0]))
    with pytest.raises(ValueError, match=r"batch_shape \(3,\) .*Independent\(dist, 1\)"):
        as_target(D.Normal(torch.zeros(3), torch.ones(3)), dim=3)
    with pytest.raises(ValueError, match="dim=..."):
        as_target(lambda x: -x.square().sum(-1))
    for bad in (0, -1, 2.5, "2", True):
        with pytest.raises(ValueError, match="dim must be None or an integer >= 1"):
            as_target(lambda x: -x.square().sum(-1), dim=bad)

    class Duck:
        dim = 2
        name = "duck"

        def log_prob(self, x: torch.Tensor) -> torch.Tensor:
            return -x.abs().sum(-1)

    d = as_target(Duck())
    assert d.name == "duck" and d.log_prob(torch.ones(4, 2)).tolist() == [-2.0] * 4


def test_grid_log_z_helper() -> None:
    t = get("gaussian", loc=[1.0, -2.0], scale=[0.5, 2.0])
    assert abs(targets.grid_log_z(t.log_prob, ((-4, 6), (-12, 8)), 301)) < 1e-6
