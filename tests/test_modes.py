"""Mode discovery: AIS, the mass-covering losses, mixtures of flows, the sampling targets and the
mode metrics (issue 13)."""

from __future__ import annotations

import math

import pytest
import torch

from vi_flows import ais, build, fit
from vi_flows.ais import AISResult, NonFiniteWeightError
from vi_flows.diagnostics import diagnose
from vi_flows.losses import LOSSES, get_loss
from vi_flows.losses_mass import FAB, FAB_BASE, Renyi
from vi_flows.metrics import (
    count_modes,
    entropic_mode_coverage,
    eubo,
    forward_ess,
    log_z_estimates,
)
from vi_flows.targets import get
from vi_flows.targets.toys import GaussianMixture

# ---------------------------------------------------------------------------- AIS


def _gaussian_target(d: int, log_z: float, loc: float = 2.0, scale: float = 0.5):
    def log_prob(x):
        z = (x - loc) / scale
        return (
            log_z - 0.5 * z.square().sum(-1) - d * math.log(scale) - 0.5 * d * math.log(2 * math.pi)
        )

    return log_prob


@pytest.mark.parametrize("transition", ["hmc", "mala", "rwm"])
def test_ais_exact_log_z_gaussian_to_gaussian(transition):
    torch.manual_seed(0)
    q = build("gaussian", 3)  # N(0, I)
    r = ais(_gaussian_target(3, 1.5), q, 2000, num_temperatures=30, transition=transition)
    assert abs(r.log_z - 1.5) < 3 * r.log_z_se, (r.log_z, r.log_z_se)
    # AIS beats plain IS from the same q on this problem (its ESS is higher)
    assert r.ess > torch.softmax(r.is_log_weights, 0).square().sum().reciprocal() / 2000
    assert r.acceptance.shape == (30,) and r.step_sizes.shape == (30,)
    assert r.samples.shape == (2000, 3) and r.log_weights.shape == (2000,)


def test_ais_with_one_temperature_is_importance_sampling():
    q = build("gaussian", 2, init_scale=2.0)
    target = _gaussian_target(2, 0.7, loc=1.0, scale=1.0)
    torch.manual_seed(3)
    x0, log_q = q.sample_and_log_prob(500)
    expected = (target(x0) - log_q).detach().double()
    torch.manual_seed(3)
    r = ais(target, q, 500, num_temperatures=1, tune=0)
    assert torch.allclose(r.log_weights, expected, atol=1e-5)
    expected_log_z = float(torch.logsumexp(expected, 0) - math.log(500))
    assert r.log_z == pytest.approx(expected_log_z, abs=1e-5)
    assert r.is_log_z == pytest.approx(expected_log_z, abs=1e-5)


def test_ais_merge_pools_batches_into_one_estimate():
    q = build("gaussian", 2)
    target = _gaussian_target(2, 0.3, loc=0.5, scale=1.0)
    torch.manual_seed(1)
    a = ais(target, q, 300, num_temperatures=5)
    b = ais(target, q, 100, num_temperatures=5, step_size=a.step_sizes, tune=0)
    m = AISResult.merge([a, b])
    pooled = torch.cat([a.log_weights, b.log_weights])
    assert m.log_z == pytest.approx(float(torch.logsumexp(pooled, 0) - math.log(400)), abs=1e-9)
    assert m.samples.shape == (400, 2) and m.is_log_weights.shape == (400,)
    # acceptance is the chain-weighted mean; step sizes are those the batches shared
    assert torch.allclose(m.acceptance, (3 * a.acceptance + b.acceptance) / 4)
    assert torch.equal(m.step_sizes, a.step_sizes)
    assert m.log_z_se < a.log_z_se and abs(m.log_z - 0.3) < 3 * m.log_z_se
    other = ais(target, q, 50, num_temperatures=4)
    with pytest.raises(ValueError, match="same temperatures"):
        AISResult.merge([a, other])
    with pytest.raises(ValueError, match="at least one"):
        AISResult.merge([])


def test_ais_bad_inputs_name_the_problem():
    q = build("gaussian", 2)
    with pytest.raises(ValueError, match="num_temperatures must be >= 1"):
        ais(lambda x: -x.square().sum(-1), q, 10, num_temperatures=0)
    with pytest.raises(ValueError, match="alpha must be a finite number, got nan"):
        ais(lambda x: -x.square().sum(-1), q, 10, alpha=float("nan"))

    def nan_left_half(x):  # NaN wherever x₀ < 0: half of q's draws
        return torch.where(x[:, 0] < 0, torch.nan, -x.square().sum(-1))

    with pytest.raises(NonFiniteWeightError, match=r"temperature 1 of 4"):
        ais(nan_left_half, q, 64, num_temperatures=4, tune=0)

    def zero_left_half(x):  # p̃ = 0 (log −inf) where x₀ < 0: zero weights there, not an error
        return torch.where(x[:, 0] < 0, -torch.inf, -x.square().sum(-1))

    r = ais(zero_left_half, q, 256, num_temperatures=4, tune=0)
    assert math.isfinite(r.log_z) and (r.is_log_weights == -math.inf).any()
    with pytest.raises(ValueError, match="transition"):
        ais(lambda x: -x.square().sum(-1), q, 10, transition="gibbs")


# ---------------------------------------------------------------- loss gradients


_GRID = torch.linspace(-20.0, 20.0, 40_001, dtype=torch.float64)[:, None]
_H = float(_GRID[1, 0] - _GRID[0, 0])
_LOG_P = _gaussian_target(1, 0.4, loc=1.0, scale=1.0)  # p̃ = e^{0.4} N(1, 1)


def _integral(log_f):
    return torch.logsumexp(log_f, 0) + math.log(_H)


# The exact objective each loss's gradient estimates, by quadrature with log q on a grid.
_EXACT = {
    "kl": lambda lq, lp: (lq.exp() * (lq - lp)).sum() * _H,
    "stl": lambda lq, lp: (lq.exp() * (lq - lp)).sum() * _H,
    "renyi": lambda lq, lp: -_integral(0.5 * lq + 0.5 * lp) / 0.5,  # α = 0.5
    "renyi-cubo": lambda lq, lp: 0.5 * _integral(2 * lp - lq),  # α = −1
    "forward": lambda lq, lp: -((lp - 0.4).exp() * lq).sum() * _H,
    "chi2": lambda lq, lp: _integral(2 * lp - lq),
    "fab": lambda lq, lp: _integral(2 * lp - lq),
}
# (loss object, samples per estimate, replicates, unbiased?) — the SNIS/VR ones are consistent,
# so they are checked with many samples, where their O(1/n) bias is below the tolerance.
_ESTIMATORS = {
    "kl": (lambda: get_loss("kl"), 256, 200, True),
    "stl": (lambda: get_loss("stl"), 256, 200, True),
    "renyi": (lambda: Renyi(0.5), 20_000, 10, False),
    "renyi-cubo": (lambda: Renyi(-1.0), 20_000, 10, False),
    "forward": (lambda: get_loss("forward"), 20_000, 10, False),
    "chi2": (lambda: get_loss("chi2"), 20_000, 10, False),
    "fab": (lambda: FAB(num_temperatures=3, transition="mala"), 4_000, 10, False),
}


def _q_1d():
    q = build("gaussian", 1, init_scale=1.5).double()
    with torch.no_grad():
        q.transform.loc.fill_(0.3)
    return q


def _grads(q):
    return torch.cat([p.grad.flatten() for p in q.parameters()])


@pytest.mark.parametrize("name", sorted(_EXACT))
def test_loss_gradient_matches_brute_force_on_1d_gaussian(name):
    torch.manual_seed(0)
    q = _q_1d()
    _EXACT[name](q.log_prob(_GRID), _LOG_P(_GRID)).backward()
    exact = _grads(q)
    make, n, reps, unbiased = _ESTIMATORS[name]
    loss = make()
    estimates = []
    for _ in range(reps):
        q.zero_grad()
        loss(q, _LOG_P, n).loss.backward()
        estimates.append(_grads(q))
    est = torch.stack(estimates)
    mean, se = est.mean(0), est.std(0) / math.sqrt(reps)
    tol = 4 * se + (0.0 if unbiased else 0.03 * exact.abs().max())
    assert ((mean - exact).abs() <= tol + 1e-3).all(), (name, mean, exact, se)


def test_every_registered_loss_has_a_gradient_check():
    checked = {"kl", "stl", "renyi", "forward", "chi2", "fab", "mixture-kl"}
    assert checked >= set(LOSSES.names()) - {"iw"}  # iw is covered by its own branch's tests


def test_mixture_kl_gradient_matches_brute_force():
    torch.manual_seed(0)
    q = build("mixture", 1, components=2, family="gaussian", spread=1.0).double()
    with torch.no_grad():
        q.transform.logits.copy_(torch.tensor([0.3, -0.2]))
    _EXACT["kl"](q.log_prob(_GRID), _LOG_P(_GRID)).backward()
    exact = _grads(q)
    estimates = []
    for _ in range(200):
        q.zero_grad()
        get_loss("mixture-kl")(q, _LOG_P, 256).loss.backward()
        estimates.append(_grads(q))
    est = torch.stack(estimates)
    mean, se = est.mean(0), est.std(0) / math.sqrt(len(est))
    assert ((mean - exact).abs() <= 4 * se + 1e-3).all(), (mean, exact, se)
    assert exact[0].abs() > 1e-3  # the weights' gradient is really checked (non-zero)


def test_mixture_kl_on_a_preconditioned_mixture_is_the_whitened_one():
    # infer(flow="mixture", objective="mixture-kl") fits Compose([mixture, θ = m + L z]): the
    # loss must be that of the bare mixture on the whitened target, draw for draw.
    from vi_flows.precondition import Whitened, precondition

    loc, cov = torch.tensor([1.0, -2.0]), torch.tensor([[4.0, 1.0], [1.0, 0.5]])
    target = get("gaussian", loc=[0.5, -1.0], scale=[1.5, 0.7])
    torch.manual_seed(0)
    wrapped = precondition("mixture", 2, loc, torch.linalg.cholesky(cov), components=3).double()
    bare = build("mixture", 2, components=3).double()
    bare.transform.load_state_dict(wrapped.transform.parts[0].state_dict())
    loss = get_loss("mixture-kl")
    torch.manual_seed(1)
    out = loss(wrapped, target.log_prob, 96)
    torch.manual_seed(1)
    ref = loss(bare, Whitened(target, loc, cov), 96)
    torch.testing.assert_close(out.loss, ref.loss)
    torch.testing.assert_close(out.elbo, ref.elbo)
    torch.testing.assert_close(out.theta, Whitened(target, loc, cov).unwhiten(ref.theta))


def test_tempering_reaches_every_loss():
    # β scales log p̃ in every loss but fab, and only log p̃: at β = 0.3 the gradient differs
    # from β = 1 and equals the β = 1 gradient of the target 0.3 log p̃ (the same draws)
    target = _gaussian_target(1, 0.0, loc=3.0)

    def tempered(x: torch.Tensor) -> torch.Tensor:
        return 0.3 * target(x)

    for name in ["kl", "renyi", "forward", "chi2", "fab"]:
        grads = []
        for log_p, beta in ((target, 1.0), (target, 0.3), (tempered, 1.0)):
            torch.manual_seed(0)
            q = build("gaussian", 1)
            loss = FAB(num_temperatures=2) if name == "fab" else get_loss(name)
            loss(q, log_p, 64, beta=beta).loss.backward()
            grads.append(q.transform.loc.grad.clone())
        assert not torch.allclose(grads[0], grads[1]), name
        if name != "fab":
            torch.testing.assert_close(grads[1], grads[2], rtol=1e-5, atol=1e-6, msg=name)


def test_fab_tempers_the_divergence_order_along_a_proper_path():
    """fab's β is the order of D_{2β}: its AIS ends at p̃^{2β} q^{1−2β}, i.e. at q for β = 0 and
    at p for β = ½ (p = N(3, 0.5²), q = N(0, 1) here), and a buffered fab refuses β ≠ 1."""
    target = _gaussian_target(1, 0.0, loc=3.0)
    q = build("gaussian", 1)
    for beta, mean, var in ((0.0, 0.0, 1.0), (0.5, 3.0, 0.25)):
        torch.manual_seed(0)
        res = FAB(num_temperatures=8).run_ais(q, target, 4000, beta)
        weights = torch.softmax(res.log_weights, 0)
        x = res.samples[:, 0].double()
        assert float((weights * x).sum()) == pytest.approx(mean, abs=0.1), beta
        assert float((weights * (x - mean).square()).sum()) == pytest.approx(var, rel=0.15)
    with pytest.raises(ValueError, match=r"fab: tempering \(beta = 0.5\) needs buffer_size = 0"):
        FAB(buffer_size=64)(q, target, 8, beta=0.5)


# ---------------------------------------------------------------------- mixture


def test_mixture_log_prob_integrates_to_one_and_is_exact():
    torch.manual_seed(0)
    q = build("mixture", 2, components=3, family="realnvp", layers=2, spread=1.5)
    with torch.no_grad():
        q.transform.logits.copy_(torch.tensor([0.5, -1.0, 0.2]))
        g = torch.linspace(-14.0, 14.0, 561)
        xx, yy = torch.meshgrid(g, g, indexing="ij")
        grid = torch.stack([xx, yy], -1).reshape(-1, 2)
        mass = q.log_prob(grid).exp().sum() * (g[1] - g[0]) ** 2
        assert float(mass) == pytest.approx(1.0, abs=2e-3)
        theta, log_q = q.sample_and_log_prob(1000)
        assert torch.allclose(log_q, q.log_prob(theta), atol=1e-4)
        xi, _ = q.transform.inverse(theta)
        assert torch.allclose(q.transform(xi)[0], theta, atol=1e-4)
        # each component is drawn with its weight (moved apart, so each draw's source is clear)
        for j, comp in enumerate(q.transform.components):
            comp.parts[-1].loc.copy_(torch.tensor([30.0 * j, 0.0]))
        k = q.transform.component_log_probs(q.sample(2000)).argmax(-1)
        share = torch.bincount(k, minlength=3).double() / 2000
        pi = torch.softmax(q.transform.logits, 0).double()
        assert (share - pi).abs().max() < 0.04, (share, pi)


def test_mixture_refuses_a_base_its_log_det_does_not_hold_for():
    """The mixture's log-det is log N(ξ) − log q(θ): on a Student-t base log q would be off (by
    hundreds of nats at df = 3), so the flow refuses it, and a Compose refuses the mixture
    anywhere but first (its inputs would not be N(0, I) either)."""
    from vi_flows import infer
    from vi_flows.bases import make_base
    from vi_flows.flows import Flow
    from vi_flows.transforms import Compose, ElementwiseAffine

    with pytest.raises(ValueError, match="^base: MixtureTransform .*standard-normal"):
        build("mixture", 2, components=2, family="gaussian", base="student-t", df=3.0)
    mix = build("mixture", 2, components=2, family="gaussian").transform
    with pytest.raises(ValueError, match="MixtureTransform needs N\\(0, I\\) inputs"):
        Compose([ElementwiseAffine(2), mix])
    assert Compose([mix, ElementwiseAffine(2)]).needs_normal_base
    with pytest.raises(ValueError, match="^base: MixtureTransform"):  # named inside a Compose
        Flow(Compose([mix, ElementwiseAffine(2)]), base=make_base("student-t", 3.0))
    # infer puts fab's flow on a Student-t base itself: refused up front, saying why
    with pytest.raises(ValueError, match="infer: flow='mixture' needs the normal base"):
        infer(lambda x: -x.square().sum(-1), dim=2, flow="mixture", objective="fab")


def test_mixture_save_load_round_trip(tmp_path):
    from vi_flows.flows import load, save

    torch.manual_seed(0)
    q = build("mixture", 2, components=2, family="gaussian")
    save(q, tmp_path / "m.pt")
    r = load(tmp_path / "m.pt")
    x = torch.randn(5, 2)
    assert torch.allclose(q.log_prob(x), r.log_prob(x))


# ------------------------------------------------------------- mode discovery


def test_fab_finds_both_modes_where_kl_finds_one():
    # q starts on the mode at the origin; the other lies 6 sd away. Reverse KL never sees it;
    # FAB's AIS towards p²/q (large exactly where q is small) carries samples there.
    modes = torch.tensor([[0.0, 0.0], [6.0, 0.0]], dtype=torch.float64)
    target = GaussianMixture("two-modes", modes, 1.0)
    shares = {}
    for name in ["kl", "fab"]:
        torch.manual_seed(0)
        q = build("realnvp", 2, layers=4)
        loss = FAB(num_temperatures=4) if name == "fab" else name
        fit(q, target, 200, loss=loss, lr=3e-3, num_samples=128, progress=False)
        with torch.no_grad():
            dist = torch.cdist(q.sample(4000).double(), modes)
        near = dist.argmin(-1)[dist.min(-1).values < 2.5]
        shares[name] = torch.bincount(near, minlength=2).double() / 4000
    assert shares["kl"][0] > 0.8 and shares["kl"][1] < 0.02, shares
    assert (shares["fab"] > 0.25).all(), shares


def test_fab_needs_heavy_tails_where_p_has_them():
    # D₂(p‖q) = log ∫ p²/q is infinite for a Gaussian q against a Student-t(3) p, so FAB's AIS
    # target p²/q is improper and every fit widens q further: the runaway that, on Funnel-10,
    # put a Gaussian-base flow's draws at |v| ~ 10⁵ where p̃ underflows to 0. FAB_BASE's
    # polynomial tail keeps D₂ finite: the scale settles at p's and ν is learned near 3.
    def student_t3(x):
        return (-2.0 * torch.log1p(x.square() / 3.0)).sum(-1)

    scales = {}
    for name, base in [("normal", {}), ("fab", FAB_BASE)]:
        torch.manual_seed(0)
        q = build("gaussian", 2, **base)
        trace = []

        def record(step, info, q=q, trace=trace):
            if step % 50 == 0:
                trace.append(
                    float(torch.nn.functional.softplus(q.transform.raw_scale.detach()).mean())
                )
            return False

        loss = FAB(num_temperatures=2)
        fit(q, student_t3, 300, loss=loss, lr=2e-2, num_samples=64, progress=False, callback=record)
        scales[name] = trace
        df = float(q.base.df().detach()) if name == "fab" else math.inf
    normal, heavy = scales["normal"], scales["fab"]
    assert 2.0 < df < 4.5, df
    rising = all(normal[i + 1] > normal[i] for i in range(1, len(normal) - 1))
    assert normal[-1] > 1.5 and rising, scales
    assert all(abs(s - 1.0) < 0.2 for s in heavy), scales


def test_infer_fab_builds_the_heavy_tailed_base(tmp_path):
    from vi_flows import flows
    from vi_flows.infer import InferConfig, infer

    cfg = InferConfig(eval_samples=200)
    r = infer(
        lambda x: -0.5 * x.square().sum(-1), dim=2, objective="fab", steps=2, seed=0,
        precondition="none", progress=False, config=cfg,
    )  # fmt: skip
    assert r.flow.config["base"] == FAB_BASE
    flows.save(r.flow, tmp_path / "q.pt")
    assert flows.load(tmp_path / "q.pt").config["base"] == FAB_BASE


def test_diagnose_keeps_zero_weights_and_counts_them():
    # p̃ underflowing to 0 at a draw (log w = −inf) is a zero weight, not an error; dropping it
    # would bias log Z up. NaN stays an error.
    torch.manual_seed(0)
    q = build("gaussian", 2)

    def half_line(x):  # N(0, I) restricted to x₀ > 0, unnormalized: Z = 1/2
        lp = -0.5 * x.square().sum(-1) - math.log(2 * math.pi)
        return torch.where(x[:, 0] > 0, lp, torch.full_like(lp, -math.inf))

    d = diagnose(q, half_line, n=20_000)
    assert 9_000 < d.zero_weights < 11_000
    assert abs(d.log_z - math.log(0.5)) < 3 * d.log_z_se + 1e-3 and d.elbo == -math.inf
    assert "zero weights" in str(d)
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        diagnose(q, lambda x: torch.full_like(x[:, 0], math.nan), n=100)
    with pytest.raises(ValueError, match="at least one finite weight"):
        diagnose(q, lambda x: torch.full_like(x[:, 0], -math.inf), n=100)


def test_funnel_log_prob_deep_in_the_neck_is_never_nan():
    # float32 e^{−v} overflows for v < −88: x = 0 there gave 0·inf = NaN.
    t = get("funnel", dim=3)
    x = torch.tensor([[-1000.0, 0.0, 0.0], [-1000.0, 1.0, 0.0], [-200.0, 3.0, 1.0]])
    x.requires_grad_(True)
    lp = t.log_prob(x)
    assert not torch.isnan(lp).any() and lp[0] > -1e5 and (lp[1:] < -1e30).all()
    lp.sum().backward()
    assert not torch.isnan(x.grad).any()


# ---------------------------------------------------------------------- targets


def test_sampling_targets_log_z_and_modes():
    from scipy.integrate import quad

    from vi_flows.targets.sampling import WELL_INTEGRAL

    # the module's constant against quadrature, and log Z of 16 (double well × Gaussian) pairs
    val, _ = quad(lambda x: math.exp(-(x**4) + 6 * x**2 + 0.5 * x), -10, 10, epsabs=1e-10)
    assert WELL_INTEGRAL == pytest.approx(val, rel=1e-9)
    mw = get("manywell", dim=32)
    assert mw.log_z == pytest.approx(16 * (math.log(val) + 0.5 * math.log(2 * math.pi)), rel=1e-9)
    assert mw.modes is None and get("manywell", dim=4).modes.shape == (4, 4)
    assert get("mog40").modes.shape == (40, 2) and get("mog40").log_z == 0.0
    mos = get("mos", dim=50)
    assert mos.modes.shape == (10, 50) and mos.sample(7).shape == (7, 50)
    with pytest.raises(ValueError, match="even dim"):
        get("manywell", dim=3)
    # exact ManyWell samples: the right well's share is its mass ratio
    x = get("manywell", dim=2).sample(20_000, torch.Generator().manual_seed(0))
    grid = torch.linspace(-4, 4, 100_001, dtype=torch.float64)
    dens = (-grid.pow(4) + 6 * grid.square() + 0.5 * grid).exp()
    right = float(dens[grid > 0].sum() / dens.sum())
    assert float((x[:, 0] > 0).double().mean()) == pytest.approx(right, abs=0.015)


# ---------------------------------------------------------------------- metrics


def test_mode_metrics_and_forward_measures():
    target = get("mixture", dim=2)
    exact = target.sample(4000, torch.Generator().manual_seed(0))
    assert count_modes(exact, target) == 4
    assert entropic_mode_coverage(exact, target) > 0.98
    one_mode = target.modes[:1].float() + torch.randn(1000, 2)
    assert count_modes(one_mode, target) == 1
    assert entropic_mode_coverage(one_mode, target) < 0.05
    with pytest.raises(ValueError, match="declares no modes"):
        count_modes(exact, get("banana"))
    with pytest.raises(ValueError, match="declares no modes"):
        entropic_mode_coverage(exact, get("manywell", dim=32))

    gauss = get("gaussian", dim=2)  # p = N(0, I) = q: EUBO = log Z = 0, forward ESS = 1
    q = build("gaussian", 2)
    ref = gauss.sample(2000, torch.Generator().manual_seed(1))
    assert eubo(q, gauss, ref) == pytest.approx(0.0, abs=1e-5)
    assert forward_ess(q, gauss, ref) == pytest.approx(1.0, abs=1e-5)
    # a q on one mode: its EUBO sits far above log Z = 0 and the forward ESS is tiny
    q1 = build("gaussian", 2)
    with torch.no_grad():
        q1.transform.loc.copy_(target.modes[0].float())
    ref = target.sample(2000, torch.Generator().manual_seed(2))
    assert eubo(q1, target, ref) > 5.0 and forward_ess(q1, target, ref) < 0.01
    est = log_z_estimates(q, gauss, n=500, num_temperatures=2)
    assert {"is_log_z", "ais_log_z", "log_z"} <= set(est)
    # q = p: every weight is 1, so both estimates are exact, and the target's own log Z is 0
    assert est["is_log_z"] == pytest.approx(0.0, abs=1e-5)
    assert est["ais_log_z"] == pytest.approx(0.0, abs=1e-5)
    assert est["log_z"] == 0.0
