"""fit, the KL objective and diagnostics: recovery of known targets, checkpoints, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from vi_flows import flows
from vi_flows.diagnostics import diagnose
from vi_flows.fit import NonFiniteError, fit
from vi_flows.objectives import elbo_terms, kl_loss
from vi_flows.schedules import LinearSchedule

MEAN = torch.tensor([1.0, -2.0, 0.5])
TRIL = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [-0.3, 0.2, 0.3]])
COV = TRIL @ TRIL.T


def correlated_log_prob(x: torch.Tensor) -> torch.Tensor:
    d = x - MEAN
    return -0.5 * (d @ torch.linalg.inv(COV) * d).sum(-1)


def test_full_rank_affine_recovers_correlated_gaussian() -> None:
    q = flows.build("full-gaussian", 3)
    fit(q, correlated_log_prob, 1500, lr=2e-2, stl=True, seed=0, progress=False)
    tril = q.transform.scale_tril().detach()
    torch.testing.assert_close(q.transform.loc.detach(), MEAN, atol=0.05, rtol=0)
    torch.testing.assert_close(tril @ tril.T, COV, atol=0.05, rtol=0)


def test_diagonal_flow_recovers_mean_and_scale() -> None:
    m, s = torch.tensor([3.0, -1.0, 0.0, 2.0]), torch.tensor([0.5, 2.0, 1.0, 0.1])

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((x - m) / s).square().sum(-1)

    q = flows.build("gaussian", 4)
    fit(q, log_prob, 2000, lr=3e-2, stl=True, seed=1, progress=False)
    torch.testing.assert_close(q.transform.loc.detach(), m, atol=0.03, rtol=0)
    torch.testing.assert_close(q.transform.scale().detach(), s, atol=0, rtol=0.05)


def test_diagnostics_are_exact_when_q_equals_p() -> None:
    q = flows.build("full-gaussian", 3)
    with torch.no_grad():
        q.transform.loc.copy_(MEAN)
        rows, cols = torch.tril_indices(3, 3, offset=-1)
        q.transform.off_diag.copy_(TRIL[rows, cols])
        q.transform.raw_diag.copy_(torch.log(torch.expm1(TRIL.diagonal())))
    tril = q.transform.scale_tril().detach()
    torch.testing.assert_close(tril, TRIL)

    class Target:
        log_z = 0.5 * 3 * math.log(2 * math.pi) + 0.5 * float(torch.logdet(COV))
        log_prob = staticmethod(correlated_log_prob)

    d = diagnose(q, Target(), n=4000)
    assert d.ess == pytest.approx(1.0, abs=1e-4)
    assert d.log_z == pytest.approx(Target.log_z, abs=1e-4)
    assert d.kl == pytest.approx(0.0, abs=1e-4)
    assert d.k_hat < 0.5
    text = str(d)
    assert "ESS" in text and "KL" in text


def test_diagnostics_flag_a_poor_fit() -> None:
    q = flows.build("gaussian", 3, init_scale=0.2)  # far too narrow and off-centre
    d = diagnose(q, correlated_log_prob, n=4000)
    assert d.ess < 0.2 and d.k_hat > 0.7


def test_stl_gradient_vanishes_at_the_optimum() -> None:
    # With q = p the path-derivative estimator has zero variance: every sample's gradient is 0.
    q = flows.build("gaussian", 2)
    loss = kl_loss(q, lambda x: -0.5 * x.square().sum(-1), 16, stl=True)
    loss.backward()
    for p in q.parameters():
        torch.testing.assert_close(p.grad, torch.zeros_like(p), atol=1e-6, rtol=0)


def test_stl_needs_an_invertible_flow() -> None:
    with pytest.raises(ValueError, match="invertible"):
        elbo_terms(flows.build("planar", 2), lambda x: -x.square().sum(-1), 4, stl=True)


def test_saved_flow_reloads_with_identical_samples(tmp_path) -> None:
    q = flows.build("realnvp", 2, layers=4, hidden=(16,))
    fit(q, lambda x: -0.5 * (x - 1).square().sum(-1), 30, seed=0, progress=False)
    flows.save(q, tmp_path / "flow.pt")
    q2 = flows.load(tmp_path / "flow.pt")
    torch.manual_seed(7)
    a = q.sample(100)
    torch.manual_seed(7)
    b = q2.sample(100)
    assert torch.equal(a, b)
    assert q2.config == q.config


def test_resumed_fit_continues_exactly(tmp_path) -> None:
    def target(x: torch.Tensor) -> torch.Tensor:
        return correlated_log_prob(x)

    kwargs = dict(num_samples=32, lr=1e-2, lr_schedule="cosine", progress=False)
    torch.manual_seed(0)
    straight = flows.build("realnvp", 3, layers=2, hidden=(16,))
    init = {k: v.clone() for k, v in straight.state_dict().items()}
    full = fit(straight, target, 20, seed=3, **kwargs)

    first = flows.build("realnvp", 3, layers=2, hidden=(16,))
    first.load_state_dict(init)
    ckpt = tmp_path / "fit.ckpt"
    fit(
        first,
        target,
        20,
        seed=3,
        checkpoint=ckpt,
        checkpoint_every=10,
        **kwargs,
        callback=lambda step, info: step == 9,
    )  # stop after 10 steps, as if interrupted

    torch.manual_seed(123)  # a different RNG state and fresh weights: resume must restore both
    resumed = flows.build("realnvp", 3, layers=2, hidden=(16,))
    history = fit(resumed, target, 20, checkpoint=ckpt, resume=True, **kwargs)
    assert history.step == full.step and history.loss == full.loss
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_non_finite_target_names_the_step_and_count() -> None:
    calls = {"n": 0}

    def flaky(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        out = -0.5 * x.square().sum(-1)
        if calls["n"] == 4:
            out = out.clone()
            out[:3] = float("nan")
            out[3] = float("inf")
        return out

    with pytest.raises(NonFiniteError, match=r"step 3: .* at 4 of 64 samples \(3 NaN, 1 \+inf"):
        fit(flows.build("gaussian", 2), flaky, 10, num_samples=64, progress=False)


def test_bad_steps_may_be_skipped() -> None:
    calls = {"n": 0}

    def flaky(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        out = -0.5 * x.square().sum(-1)
        return out * float("nan") if calls["n"] in (2, 5) else out

    history = fit(flows.build("gaussian", 2), flaky, 8, max_bad_steps=2, progress=False)
    assert history.skipped == [False, True, False, False, True, False, False, False]
    calls["n"] = 0
    with pytest.raises(NonFiniteError, match="2 bad step"):
        fit(flows.build("gaussian", 2), flaky, 8, max_bad_steps=1, progress=False)


def test_non_finite_gradient_is_reported() -> None:
    def sqrt_target(x: torch.Tensor) -> torch.Tensor:
        # Finite value, but d/dx sqrt(|x - x|) is 0 · inf = NaN at every sample.
        return -(x[:, 0] - x[:, 0].detach()).abs().sqrt() - 0.5 * x.square().sum(-1)

    with pytest.raises(NonFiniteError, match="gradient of log_prob is non-finite"):
        fit(flows.build("gaussian", 2), sqrt_target, 3, progress=False)


def test_a_diverged_flow_is_blamed_not_the_target() -> None:
    q = flows.build("gaussian", 2, init_scale=1.0)
    with torch.no_grad():
        q.transform.raw_scale[0] = -200.0  # σ₀ underflows to 0: log q is +inf
    with pytest.raises(NonFiniteError, match="the flow's own samples or log-density") as err:
        fit(q, lambda x: -0.5 * x.square().sum(-1), 3, progress=False)
    assert "log_prob returned" not in str(err.value)
    q = flows.build("gaussian", 2)
    with torch.no_grad():
        q.transform.loc[0] = float("inf")  # θ itself is non-finite
    with pytest.raises(NonFiniteError, match="flow diverged"):
        fit(q, lambda x: -0.5 * x.square().sum(-1), 3, progress=False)


def test_wrong_shape_is_caught_at_step_zero() -> None:
    with pytest.raises(ValueError, match=r"step|shape \(\)"):
        fit(flows.build("gaussian", 2), lambda x: x.square().sum(), 5, progress=False)
    with pytest.raises(ValueError, match=r"expected \(16,\)"):
        fit(flows.build("gaussian", 2), lambda x: -x, 5, num_samples=16, progress=False)


def test_annealing_schedule_and_callback() -> None:
    seen = []
    history = fit(
        flows.build("gaussian", 2),
        lambda x: -0.5 * x.square().sum(-1),
        10,
        beta=LinearSchedule(0.0, 1.0, steps=4),
        callback=lambda step, info: seen.append(info["beta"]) or step == 6,
        progress=False,
    )
    assert history.beta == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert seen == history.beta


def test_history_writes_csv(tmp_path) -> None:
    history = fit(flows.build("gaussian", 2), lambda x: -x.square().sum(-1), 3, progress=False)
    history.to_csv(tmp_path / "h.csv")
    lines = (tmp_path / "h.csv").read_text().splitlines()
    assert lines[0] == "step,loss,elbo,beta,lr,skipped,masked" and len(lines) == 4


@pytest.mark.parametrize(
    "log_prob",
    [
        lambda x: -0.5 * x.detach().square().sum(-1),  # detached
        lambda x: torch.as_tensor(-0.5 * (x.detach().numpy() ** 2).sum(-1)),  # numpy round trip
        lambda x: -(x.square().sum(-1)).long(),  # integer dtype
        lambda x: -0.5 * (x - x).square().sum(-1) - 1.0,  # depends on θ, but gradient is zero
    ],
    ids=["detached", "numpy", "integer", "zero-gradient"],
)
def test_a_non_differentiable_target_is_refused_at_step_zero(log_prob) -> None:
    q = flows.build("gaussian", 2)
    with pytest.raises((ValueError, TypeError), match="log_prob"):
        fit(q, log_prob, 50, progress=False)
    assert float(q.transform.raw_scale.detach().abs().max()) < 1.0  # no step was taken


def test_checkpoint_folder_is_checked_before_the_first_step(tmp_path) -> None:
    calls = {"n": 0}

    def target(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return -0.5 * x.square().sum(-1)

    with pytest.raises(ValueError, match="checkpoint: folder .*missing_dir.* does not exist"):
        fit(flows.build("gaussian", 2), target, 5, checkpoint=tmp_path / "missing_dir" / "c.pt")
    assert calls["n"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": -1}, r"steps must be an integer >= 0, got -1"),
        ({"num_samples": 0}, r"num_samples must be an integer >= 1, got 0"),
        ({"checkpoint_every": -2}, r"checkpoint_every must be an integer >= 0"),
        ({"lr": float("nan")}, r"lr must be a finite number > 0"),
        ({"mask_fraction": 1.0}, r"mask_fraction must be in \[0, 1\)"),
        ({"grad_clip": -1.0}, r"grad_clip must be None or a finite number > 0, got -1.0"),
        ({"grad_clip": 0}, r"grad_clip must be None or a finite number > 0, got 0"),
        ({"beta": -1.0}, r"beta must be a finite number >= 0, got -1.0 at step 0"),
        ({"beta": float("nan")}, r"beta must be a finite number >= 0, got nan"),
        ({"resume": True}, r"resume and checkpoint_every need checkpoint"),
        ({"checkpoint_every": 2}, r"resume and checkpoint_every need checkpoint"),
    ],
)
def test_sizes_and_ranges_are_validated(kwargs, message) -> None:
    args = {"steps": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        fit(flows.build("gaussian", 2), lambda x: -x.square().sum(-1), progress=False, **args)


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ({}, {"lr_schedule": "cosine"}, r"lr_schedule None in the checkpoint, CosineAnnealingLR"),
        ({}, {"optimizer": torch.optim.SGD}, r"optimizer Adam in the checkpoint, SGD now"),
        ({"lr_schedule": "cosine"}, {}, r"lr_schedule CosineAnnealingLR in the checkpoint, None"),
    ],
)
def test_resume_with_another_optimizer_or_schedule_says_what_differs(
    tmp_path, first, second, message
) -> None:
    ckpt = tmp_path / "c.pt"
    target = lambda x: -0.5 * x.square().sum(-1)  # noqa: E731
    fit(flows.build("gaussian", 2), target, 4, checkpoint=ckpt, progress=False, **first)
    with pytest.raises(ValueError, match=message):
        fit(
            flows.build("gaussian", 2),
            target,
            8,
            checkpoint=ckpt,
            resume=True,
            progress=False,
            **second,
        )


def test_a_few_non_finite_samples_are_masked_not_fatal() -> None:
    def edge(x: torch.Tensor) -> torch.Tensor:
        # log p̃ = −inf outside the half-plane x₀ > −2.5 (under 1% of N(0, 1) mass).
        lp = -0.5 * (x - 1.0).square().sum(-1)
        return torch.where(x[:, 0] > -2.5, lp, torch.full_like(lp, -math.inf))

    torch.manual_seed(0)
    q = flows.build("gaussian", 2)
    with pytest.raises(NonFiniteError):
        fit(q, edge, 300, seed=0, progress=False)
    q = flows.build("gaussian", 2)
    history = fit(q, edge, 300, lr=3e-2, seed=0, mask_fraction=0.1, progress=False)
    assert sum(history.masked) > 0 and not any(history.skipped)
    mean = q.sample(20_000).mean(0)
    assert torch.allclose(mean, torch.ones(2), atol=0.1)


def test_a_flat_log_density_is_named_as_such_not_blamed_on_autograd() -> None:
    q = flows.build("gaussian", 2)
    uniform = lambda x: torch.where((x.abs() < 1).all(-1), 0.0 * x.sum(-1), -math.inf)  # noqa: E731
    for log_p in (lambda x: 0.0 * x.sum(-1), uniform):
        with pytest.raises(ValueError, match="one value at all of them: a flat .*log, logit"):
            fit(q, log_p, 5, progress=False, seed=0, mask_fraction=0.5)
    with pytest.raises(ValueError, match=r"zero at all .*samples of step 0.*\.item\(\)") as err:
        fit(q, lambda x: (x * 0).sum(-1) + x.detach().sum(-1), 5, progress=False, seed=0)
    assert "flat" not in str(err.value)  # varying values, no gradient: the autograd hint only
