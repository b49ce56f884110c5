"""infer: conditioning as an exact affine, recovery of a known Gaussian, verdicts, save/load."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch

from vi_flows import flows, targets
from vi_flows.infer import InferConfig, auto_flow, infer, psis_weights
from vi_flows.precondition import FixedAffine, choose, find_mode, precondition

MEAN = torch.tensor([1.0, -2.0, 0.5])
TRIL = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [-0.3, 0.2, 0.3]])
FAST = InferConfig(window=50, min_steps=200, eval_samples=4000)


def gaussian(x: torch.Tensor) -> torch.Tensor:
    z = torch.linalg.solve_triangular(TRIL, (x - MEAN).T, upper=False).T
    return -0.5 * z.square().sum(-1)


def test_infer_recovers_a_known_gaussian_with_the_stopping_rule() -> None:
    result = infer(gaussian, dim=3, seed=0, progress=False, config=FAST)
    assert result.precondition.method == "laplace"
    assert "plateaued" in result.stop_reason and len(result.history) < FAST.max_steps
    draws = result.sample(40_000)
    assert torch.allclose(draws.mean(0), MEAN, atol=0.03)
    assert torch.allclose(torch.cov(draws.T), TRIL @ TRIL.T, atol=0.03)
    assert result.diagnostics.k_hat < 0.5 and result.verdict.startswith("good")
    log_z = 3 * 0.5 * math.log(2 * math.pi) + float(TRIL.diagonal().log().sum())
    assert result.diagnostics.log_z == pytest.approx(log_z, abs=0.02)


def test_infer_without_conditioning_still_recovers_it() -> None:
    result = infer(
        gaussian,
        dim=3,
        flow="full-gaussian",
        precondition="none",
        steps=4000,
        seed=0,
        progress=False,
    )
    assert result.precondition.method == "none"
    draws = result.sample(40_000)
    assert torch.allclose(draws.mean(0), MEAN, atol=0.05)
    assert torch.allclose(torch.cov(draws.T), TRIL @ TRIL.T, atol=0.05)


def test_preconditioned_log_prob_is_whitened_log_prob_minus_log_det() -> None:
    torch.manual_seed(0)
    loc = torch.tensor([1.0, -1.0, 3.0], dtype=torch.float64)
    tril = torch.tensor([[2.0, 0, 0], [0.5, 0.1, 0], [-1.0, 0.3, 0.7]], dtype=torch.float64)
    q = precondition("realnvp", 3, loc, tril, layers=2, hidden=(8,))
    with torch.no_grad():  # move the couplings off the identity
        for p in q.parameters():
            p.add_(0.1 * torch.randn_like(p))
    inner = flows.Flow(q.transform.parts[0])
    theta = q.sample(100)
    z = torch.linalg.solve_triangular(tril.float(), (theta - loc.float()).T, upper=False).T
    expected = inner.log_prob(z) - float(tril.diagonal().log().sum())
    assert torch.allclose(q.log_prob(theta), expected, atol=1e-4)
    # sample_and_log_prob agrees with log_prob at the same points.
    theta2, log_q = q.sample_and_log_prob(50)
    assert torch.allclose(q.log_prob(theta2.detach()), log_q.detach(), atol=1e-4)


def test_inference_flow_saves_and_reloads_without_code(tmp_path) -> None:
    result = infer(gaussian, dim=3, steps=50, seed=0, progress=False)
    flows.save(result.flow, tmp_path / "flow.pt")
    blob = torch.load(tmp_path / "flow.pt", weights_only=True)  # plain data only
    assert blob["config"]["name"] == "preconditioned"
    back = flows.load(tmp_path / "flow.pt")
    theta = result.sample(200)
    assert torch.allclose(back.log_prob(theta), result.flow.log_prob(theta), atol=1e-6)


def test_a_miss_is_flagged_not_silent() -> None:
    student = torch.distributions.StudentT(2.0)  # tails a Gaussian q cannot cover

    with pytest.warns(UserWarning, match=r"k̂ = .* > 0.7: the flow misses mass .*objective='iw'"):
        result = infer(
            lambda x: student.log_prob(x).sum(-1),
            dim=2,
            flow="gaussian",
            steps=300,
            seed=0,
            progress=False,
        )
    assert result.diagnostics.k_hat > 0.7 and "UNRELIABLE" in result.summary()


def test_a_small_bias_that_k_hat_cannot_see_is_flagged() -> None:
    # Too few steps without conditioning: q is still 0.1+ sd off, yet k̂ is small.
    with pytest.warns(UserWarning, match=r"BIASED: .*worst mean shift"):
        result = infer(
            gaussian,
            dim=3,
            flow="full-gaussian",
            precondition="none",
            steps=300,
            seed=0,
            progress=False,
        )
    assert result.diagnostics.k_hat < 0.7 and result.shift >= 0.1


def test_summary_lists_every_parameter_and_the_verdict() -> None:
    result = infer(gaussian, dim=3, steps=100, seed=0, progress=False, objective="iw")
    text = result.summary()
    for needle in (
        "θ[1]",
        "θ[3]",
        "5%",
        "95%",
        "ELBO",
        "log Z (IS)",
        "ESS / n",
        "PSIS k̂",
        "verdict",
        "conditioning: laplace",
        "objective iw",
    ):
        assert needle in text, needle


def test_funnel_gets_the_pilot_gaussian_not_its_useless_mode() -> None:
    funnel = targets.get("funnel", dim=5)
    torch.manual_seed(0)
    cond = choose(funnel, 5, pilot_steps=400)
    assert cond.method == "pilot-gaussian", cond.detail
    assert find_mode(targets.get("correlated-gaussian", dim=4), 4).cov is not None


class _Clock:
    """``time`` for vi_flows.infer: each reading is 10 ms after the last (no host clock)."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 0.01
        return self.now


def test_a_time_budget_splits_into_explore_and_decay_and_stops(monkeypatch) -> None:
    """1 s of budget at 10 ms a step (the controller reads the clock once a step): the constant
    phase ends at 60% of it (explore_budget), the decay is fitted into the rest, and the fit
    ends within the budget, long before the plateau rule's minimum of 500 steps."""
    import sys

    # the module (vi_flows.infer the attribute is the function of that name)
    monkeypatch.setattr(sys.modules["vi_flows.infer"], "time", _Clock())
    result = infer(gaussian, dim=3, time_budget=1.0, seed=0, progress=False, config=FAST)
    assert "constant phase reached its share of the budget at step 60," in result.stop_reason
    assert 90 < len(result.history) <= 100  # the decay's 0.95 × 0.4 s at 10 ms a step


def test_resample_uses_psis_weights() -> None:
    w = psis_weights(torch.zeros(1000))
    assert torch.allclose(w, torch.full((1000,), 1e-3, dtype=torch.float64))
    w = psis_weights(torch.cat([torch.randn(999), torch.tensor([50.0])]))
    assert float(w.max()) < 1.0 and float(w.sum()) == pytest.approx(1.0)
    result = infer(gaussian, dim=3, steps=50, seed=0, progress=False)
    assert result.resample(300).shape == (300, 3)
    # q left at its start N(0, 1) (one step) against p = N(0, 1.2²): resampling restores p's sd
    wide = torch.distributions.Normal(0.0, 1.2)
    with pytest.warns(UserWarning, match="BIASED"):  # the verdict sees q's sd ratio ≈ 0.85
        result = infer(
            lambda x: wide.log_prob(x).sum(-1),
            dim=1,
            flow="gaussian",
            precondition="none",
            steps=1,
            seed=0,
            progress=False,
        )
    draws = result.resample(4000, generator=torch.Generator().manual_seed(1))
    assert float(result.flow.sample(4000).std()) < 1.05
    assert float(draws.std()) == pytest.approx(1.2, rel=0.05)


def test_a_few_non_finite_values_do_not_abort_infer() -> None:
    def edge(x: torch.Tensor) -> torch.Tensor:
        lp = -0.5 * x.square().sum(-1)
        return torch.where(x[:, 0] > -2.7, lp, torch.full_like(lp, -math.inf))

    result = infer(
        edge, dim=2, flow="gaussian", precondition="none", steps=200, seed=0, progress=False
    )
    assert sum(result.history.masked) > 0


def test_auto_flow_rule_and_argument_checks() -> None:
    assert auto_flow(1) == ("gaussian", {})
    assert auto_flow(10) == ("realnvp", {"layers": 8, "hidden": (64, 64)})
    assert auto_flow(100) == ("realnvp", {"layers": 8, "hidden": (200, 200)})
    with pytest.raises(ValueError, match="steps must be None or an integer >= 1"):
        infer(gaussian, dim=3, steps=0)
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        infer(gaussian, dim=3, objective="nope")
    with pytest.raises(ValueError, match="needs dim"):
        infer(gaussian)
    for budget in (float("inf"), 0.0, float("nan"), "5"):
        with pytest.raises(ValueError, match="time_budget must be None or a finite number > 0"):
            infer(gaussian, dim=3, time_budget=budget)
    for seed in ("a", 1.5, -1, True):
        with pytest.raises(ValueError, match="seed must be None or an integer >= 0"):
            infer(gaussian, dim=3, seed=seed)
    for config in ({}, {"lr": 1e-3}, 0):
        with pytest.raises(TypeError, match="config must be None or an InferConfig, got"):
            infer(gaussian, dim=3, config=config)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("schedule", "bogus", "schedule must be 'plateau-cosine' or 'constant'"),
        ("lr", -1.0, "lr must be None or a finite number > 0"),
        ("window", 0, "window must be an integer >= 1"),
        ("num_samples", 0, "num_samples must be an integer >= 1"),
        ("max_steps", 0, "max_steps must be an integer >= 1"),
        ("min_steps", 1.5, "min_steps must be an integer >= 0"),
        ("eval_samples", 1, "eval_samples must be an integer >= 100"),
        ("decay_fraction", -1.0, "decay_fraction must be a finite number > 0"),
        ("tol_gain", float("nan"), "tol_gain must be a finite number > 0"),
        ("explore_budget", 1.0, r"explore_budget must be in \(0, 1\)"),
        ("mask_fraction", 2.0, r"mask_fraction must be in \[0, 1\)"),
        ("base", "cauchy", "base must be 'normal' or 'student-t'"),
    ],
)
def test_infer_config_names_the_bad_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InferConfig(**{field: value})


def test_fixed_affine_inverts_exactly() -> None:
    t = FixedAffine(3)
    t.set(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([[2.0, 0, 0], [1.0, 0.5, 0], [0, 1, 3]]))
    x = torch.randn(10, 3)
    y, ladj = t(x)
    back, ladj_inv = t.inverse(y)
    assert torch.allclose(back, x, atol=1e-5) and torch.allclose(ladj, -ladj_inv)
    assert torch.allclose(ladj, torch.full((10,), math.log(3.0)))


def _raw_covariate_regression() -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """y = a + b·x + N(0, σ²) on raw years x ∈ [1950, 2015], flat priors, x = (a, b, log σ).

    The posterior sds span 1e-3 (log σ, b) to 1e1 (a) with a and b correlated to 1 − 1e-7: a
    Hessian condition number near 1e12, where L-BFGS from 0 stops far from the mode.
    """
    gen = torch.Generator().manual_seed(0)
    years = torch.arange(1950.0, 2016.0, dtype=torch.float64)
    y = -30.0 + 0.02 * years + 0.5 * torch.randn(years.shape, generator=gen, dtype=torch.float64)

    def log_p(x: torch.Tensor) -> torch.Tensor:
        a, b, log_s = x[..., :1], x[..., 1:2], x[..., 2]
        resid = y.to(x) - a - b * years.to(x)
        return -years.numel() * log_s - 0.5 * resid.square().sum(-1) / torch.exp(2 * log_s)

    design = torch.stack([torch.ones_like(years), years], -1)
    ols = torch.linalg.lstsq(design, y[:, None]).solution[:, 0]
    resid = y - design @ ols
    return log_p, torch.cat([ols, 0.5 * torch.log(resid.square().mean())[None]])


def test_find_mode_reaches_the_mode_of_a_badly_scaled_regression() -> None:
    log_p, exact = _raw_covariate_regression()
    mode = find_mode(log_p, 3)
    assert mode.cov is not None, mode.reason
    # each coordinate within 1e-3 of its own posterior sd (L-BFGS alone is off by thousands)
    sd = mode.cov.diagonal().sqrt()
    assert bool(((mode.loc - exact).abs() / sd < 1e-3).all()), (mode.loc, exact)


def test_find_mode_keeps_the_mode_with_the_most_mass_not_the_highest() -> None:
    # a tall narrow peak at the origin (mass 0.2) and a wide mode at −1.5 (mass 0.8)
    def log_p(x: torch.Tensor) -> torch.Tensor:
        narrow = math.log(0.2) + torch.distributions.Normal(0.0, 0.05).log_prob(x[..., 0])
        wide = math.log(0.8) + torch.distributions.Normal(-1.5, 0.5).log_prob(x[..., 0])
        return torch.logaddexp(narrow, wide)

    only_origin = find_mode(log_p, 1, restarts=0)
    assert float(only_origin.loc[0]) == pytest.approx(0.0, abs=1e-3)  # the taller peak
    gen = torch.Generator().manual_seed(0)
    best = find_mode(log_p, 1, restarts=6, generator=gen)
    assert best.starts == 7
    assert float(best.loc[0]) == pytest.approx(-1.5, abs=1e-2), best
    assert best.log_mass == pytest.approx(math.log(0.8), abs=0.05)
    assert best.log_p < only_origin.log_p  # lower, yet holding four times the mass


def test_student_t_base_is_used_saved_and_checked(tmp_path) -> None:
    with pytest.raises(ValueError, match="base must be 'normal' or 'student-t'"):
        InferConfig(base="cauchy")
    result = infer(
        gaussian, dim=3, steps=60, seed=0, progress=False, config=InferConfig(base="student-t")
    )
    assert result.flow.config["base"]["base"] == "student-t"
    path = tmp_path / "flow.pt"
    flows.save(result.flow, path)
    theta = result.flow.sample(7)
    assert torch.allclose(flows.load(path).log_prob(theta), result.flow.log_prob(theta))


def test_defensive_mixture_weights_are_exact_and_see_wider_tails() -> None:
    from vi_flows.importance import defensive_log_weights, moment_check
    from vi_flows.targets import as_target

    torch.manual_seed(0)
    q = flows.build("gaussian", 1)  # N(0, 1) as built
    wide = torch.distributions.Normal(0.0, 1.5)  # p is wider than q: q's own IS is heavy-tailed

    def log_p(x: torch.Tensor) -> torch.Tensor:
        return wide.log_prob(x[..., 0])

    draws, log_w = defensive_log_weights(q, as_target(log_p, 1), 20_000, scale=2.0)
    x = draws[:, 0].double()
    mixture = torch.logaddexp(
        torch.distributions.Normal(0.0, 1.0).log_prob(x),
        torch.distributions.Normal(0.0, 2.0).log_prob(x),
    ) - math.log(2.0)
    assert torch.allclose(log_w, wide.log_prob(x) - mixture, atol=1e-4)
    assert float(x[10_000:].std()) == pytest.approx(2.0, rel=0.05)  # the wide half
    # q (sd 1) against p (sd 1.5): the check reports q's sd at 1/1.5 of p's
    lo, hi = moment_check(q.sample(20_000), draws, log_w)["sd_ratio"]
    assert lo == pytest.approx(1 / 1.5, rel=0.04) and hi == lo


def test_moment_check_interval_is_tight_when_q_is_p_and_covers_a_true_deficit() -> None:
    from vi_flows.importance import defensive_log_weights, moment_check
    from vi_flows.targets import as_target

    torch.manual_seed(0)
    q = flows.build("gaussian", 2)  # N(0, I) as built

    def normal(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * x.square().sum(-1)

    def wider(x: torch.Tensor) -> torch.Tensor:  # p's first coordinate has sd 1.5
        return -0.5 * (x[..., 0] / 1.5).square() - 0.5 * x[..., 1].square()

    draws = q.sample(16_000)
    exact = moment_check(draws, *defensive_log_weights(q, as_target(normal, 2), 16_000))
    lo, hi = exact["sd_ratio_bounds"]
    assert 0.95 < lo <= exact["sd_ratio"][0] <= exact["sd_ratio"][1] <= hi < 1.05
    assert exact["shift"] <= exact["shift_bound"] < 0.05
    # q's sd is 1/1.5 of p's in one coordinate: the interval holds the truth and flags it
    miss = moment_check(draws, *defensive_log_weights(q, as_target(wider, 2), 16_000))
    m_lo, m_hi = miss["sd_ratio_bounds"]
    assert m_lo < 1 / 1.5 < 0.9 and 0.95 < m_hi < 1.05
    # the interval is the importance draws' sampling noise: 16× fewer draws, ~4× wider (1-D,
    # so the interval is one coordinate's)
    q1 = flows.build("gaussian", 1)
    one = as_target(lambda x: -0.5 * (x[..., 0] / 1.5).square(), 1)
    widths = [
        (lambda b: b[1] - b[0])(
            moment_check(draws[:, :1], *defensive_log_weights(q1, one, n))["sd_ratio_bounds"]
        )
        for n in (16_000, 1_000)
    ]
    assert widths[1] > 2.5 * widths[0]
    with pytest.raises(ValueError, match="resamples must be >= 0 and level in"):
        moment_check(draws, draws, torch.zeros(16_000), level=1.0)


def test_the_verdict_reads_the_interval_not_the_point_estimate() -> None:
    result = infer(gaussian, dim=3, seed=0, progress=False, config=FAST)
    assert result.verdict.startswith(("good", "usable"))
    unsure = dataclasses.replace(result, sd_ratio=(0.95, 1.0), sd_ratio_bounds=(0.85, 1.02))
    assert unsure.verdict.startswith("BIASED") and "90% interval 0.85-1.02" in unsure.verdict
    # the mean shift is judged on its point estimate (its bound is reported, not enforced)
    noisy = dataclasses.replace(result, shift=0.05, shift_bound=0.12)
    assert noisy.verdict.startswith(("good", "usable"))
    drifting = dataclasses.replace(result, shift=0.12, shift_bound=0.15)
    assert drifting.verdict.startswith("BIASED") and "up to 0.15" in drifting.verdict


def _two_modes(x: torch.Tensor) -> torch.Tensor:
    """0.9 N((6, 6), I) + 0.1 N((−6, −6), I): 17 sds apart, out of reach of q's draws, yet
    found from the mode search's starts in [−2, 2]²."""
    major = math.log(0.9) - 0.5 * (x - 6.0).square().sum(-1)
    minor = math.log(0.1) - 0.5 * (x + 6.0).square().sum(-1)
    return torch.logaddexp(major, minor)


def test_find_mode_keeps_every_separate_mode_with_its_mass() -> None:
    gen = torch.Generator().manual_seed(0)
    mode = find_mode(_two_modes, 2, restarts=8, generator=gen)
    assert mode.loc.tolist() == pytest.approx([6.0, 6.0], abs=1e-3)
    assert len(mode.others) == 1  # the starts that reached (6, 6) again are not repeats
    loc, log_mass = mode.others[0]
    assert loc.tolist() == pytest.approx([-6.0, -6.0], abs=1e-3)
    assert log_mass - mode.log_mass == pytest.approx(math.log(0.1 / 0.9), abs=1e-3)


def test_a_mode_q_never_draws_is_reported_and_a_mixture_starts_on_every_mode() -> None:
    # Reverse KL from the Laplace whitening stays on the major mode: k̂ and ESS look perfect
    # (no draw ever lands near the minor one), so only the mode search can tell.
    with pytest.warns(UserWarning, match="BIASED: .*misses 1 of the 2 separate modes"):
        one = infer(_two_modes, 2, flow="gaussian", steps=300, seed=0, progress=False)
    assert "2 separate modes (Laplace mass 90%, 10%)" in one.precondition.detail
    ((share, gap),) = one.missed_modes
    assert share == pytest.approx(0.1, abs=1e-3) and gap > 10
    # what the weights say: k̂ and the corrected means see nothing
    assert one.diagnostics.k_hat < 0.5 and one.shift < 0.1
    both = infer(
        _two_modes,
        2,
        flow="mixture",
        objective="mixture-kl",
        steps=300,
        seed=0,
        progress=False,
        config=FAST,
    )
    assert both.missed_modes == ()
    share_minor = float((both.sample(20_000)[:, 0] < 0).double().mean())
    assert 0.03 < share_minor < 0.3, share_minor
    # a mixture that still misses one is told to add components, not to become a mixture
    again = dataclasses.replace(both, missed_modes=((0.1, 50.0),)).verdict
    assert "flows.build('mixture', d, components=K)" in again and "flow='mixture'" not in again


def test_conditioning_says_why_laplace_was_not_used() -> None:
    pilot = choose(gaussian, 3, "pilot", pilot_steps=50)
    assert "Laplace not tried (precondition='pilot')" in pilot.detail
    big = choose(gaussian, 3, "auto", laplace_max_dim=2, pilot_steps=50)
    assert "Laplace skipped: d = 3 > 2" in big.detail
    # sds 1e-3 and 1e3 with correlation 0.99: positive definite, condition number 5e13
    cov = torch.tensor([[1e-6, 0.99 * 1e-3 * 1e3], [0.99 * 1e-3 * 1e3, 1e6]], dtype=torch.float64)
    prec = torch.linalg.inv(cov)
    mode = find_mode(lambda x: -0.5 * ((x.double() @ prec) * x.double()).sum(-1), 2)
    assert mode.cov is None and "too ill-conditioned to invert (condition number" in mode.reason
    saddle = find_mode(lambda x: -0.5 * x[..., 0].square() + 0.0 * x[..., 1], 2)
    assert saddle.cov is None and "not positive definite" in saddle.reason


def test_a_target_that_fails_on_a_batch_says_what_it_was_given() -> None:
    def one_point(x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 1, "expects one point"
        return -0.5 * x.square().sum()

    with pytest.raises(AssertionError, match="expects one point") as err:
        infer(one_point, dim=2, progress=False)
    assert "called on a batch of shape (1, 2): a log-density takes (n, 2)" in str(
        err.value.__notes__
    )


def test_draw_counts_are_checked() -> None:
    result = infer(gaussian, dim=3, steps=20, seed=0, progress=False, config=FAST)
    for n in (0, -1, 2.5, True):
        for method in (result.sample, result.resample):
            with pytest.raises(ValueError, match="n must be an integer >= 1"):
                method(n)


def test_a_q_a_little_too_wide_everywhere_is_not_a_missed_mode() -> None:
    # Equal modes at ±5·1 in d = 40, q the same mixture with sd 1.08: the gap at each mode is
    # 40 log 1.08 ≈ 3.08 > log 20, but the same at both, so neither counts as missed.
    from vi_flows.importance import missed_modes
    from vi_flows.targets import as_target

    d = 40

    def log_p(x: torch.Tensor) -> torch.Tensor:
        return torch.logaddexp(-0.5 * (x - 5.0).square().sum(-1), -0.5 * (x + 5.0).square().sum(-1))

    torch.manual_seed(0)
    q = flows.build("mixture", d, components=2, family="gaussian", init_scale=1.08).double()
    q.transform.start_at(torch.stack([torch.full((d,), 5.0), torch.full((d,), -5.0)]).double())
    modes = ((torch.full((d,), 5.0), 0.0), (torch.full((d,), -5.0), 0.0))
    log_z = math.log(2.0) + 0.5 * d * math.log(2 * math.pi)
    target = as_target(log_p, d)
    assert missed_modes(q, target, modes, log_z) == ()
    q.transform.start_at(torch.full((1, d), -5.0).double())  # both components on −5 now
    ((share, gap),) = missed_modes(q, target, modes, log_z)
    assert share == 0.5 and gap > 40


def test_missed_modes_reads_gaps_against_the_best_covered_mode() -> None:
    from vi_flows.importance import missed_modes
    from vi_flows.targets import as_target

    def log_p(x: torch.Tensor) -> torch.Tensor:  # 99.5% at +5, 0.5% at −5
        major = math.log(0.995) - 0.5 * (x - 5.0).square().sum(-1)
        return torch.logaddexp(major, math.log(0.005) - 0.5 * (x + 5.0).square().sum(-1))

    target = as_target(log_p, 1)
    modes = ((torch.tensor([5.0]), math.log(0.995)), (torch.tensor([-5.0]), math.log(0.005)))
    q = flows.build("gaussian", 1)
    with torch.no_grad():
        q.transform.loc.fill_(-5.0)  # on the 0.5% mode, which is below min_share itself
    log_z_hat = math.log(0.005) + 0.5 * math.log(2 * math.pi)  # what q's draws would say
    ((share, gap),) = missed_modes(q, target, modes, log_z_hat)
    assert share == pytest.approx(0.995) and gap > 40
    with torch.no_grad():
        q.transform.loc.fill_(float("nan"))  # a log q of NaN everywhere: every mode missed
    assert len(missed_modes(q, target, modes, log_z_hat, min_share=0.0)) == 2


def test_a_flow_without_log_q_says_the_modes_are_unchecked() -> None:
    result = infer(_two_modes, 2, flow="planar", steps=50, seed=0, progress=False)
    assert result.modes_unchecked and result.missed_modes == ()
    # the verdict's tail on a fit that passes every other check
    passing = dataclasses.replace(
        result,
        sd_ratio_bounds=(1.0, 1.0),
        shift=0.0,
        diagnostics=dataclasses.replace(result.diagnostics, k_hat=0.1),
    )
    assert "2 separate modes, and this flow has no log q at given points" in passing.verdict


def test_summary_says_when_q_has_no_variance() -> None:
    from vi_flows.transforms.affine import inv_softplus

    result = infer(
        gaussian, dim=3, steps=60, seed=0, progress=False, config=InferConfig(base="student-t")
    )
    assert "no finite" not in result.summary()  # ν starts at 5 and stays far above 2 here
    with torch.no_grad():
        result.flow.base.raw_df.fill_(inv_softplus(1.5, "df"))
    assert "Student-t base has ν = 1.50: q has no finite variance, so" in result.summary()
    with torch.no_grad():
        result.flow.base.raw_df.fill_(inv_softplus(0.8, "df"))
    assert "no finite variance nor mean" in result.summary()
