"""Native splines, MADE, autoregressive layers, the Student-t base, and life without nflows/pyro.

The generic round-trip / Jacobian / gradient tests of every new transform live in
``test_transforms.py``; these are the properties specific to each piece.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import vi_flows.transforms as T
from vi_flows import flows
from vi_flows.bases import StudentT
from vi_flows.transforms.made import MADE

ROOT = Path(__file__).resolve().parents[1]


def random_spline(
    bins: int, bound: float, n: int, seed: int = 0
) -> tuple[T.RQSpline, torch.Tensor]:
    """A spline and n sets of strongly non-identity parameters (float64)."""
    torch.manual_seed(seed)
    spline = T.RQSpline(bins, bound)
    return spline, 2.0 * torch.randn(n, spline.num_params, dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spline_at_the_bound_and_far_outside_round_trips(dtype: torch.dtype) -> None:
    bound = 3.0
    spline, raw = random_spline(6, bound, 8)
    raw = raw.to(dtype)
    x = torch.tensor([-1e4, -bound, bound, 1e4, -bound - 1e-3, bound + 1e-3, 0.0, 2.5], dtype=dtype)
    x.requires_grad_(True)
    y, ladj = spline.forward(x, raw)
    x2, ladj_inv = spline.inverse(y, raw)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all() and torch.isfinite(ladj_inv).all()
    tol = 2e-4 if dtype == torch.float32 else 1e-10  # float32: a steep random spline
    torch.testing.assert_close(x2, x, atol=tol, rtol=tol)
    torch.testing.assert_close(ladj + ladj_inv, torch.zeros_like(ladj), atol=tol, rtol=0)
    # ±B are fixed points; the tails are lines through them with the boundary slopes δ₀, δ_K.
    assert abs(y[1].item() + bound) < tol and abs(y[2].item() - bound) < tol
    tail_slopes = ladj[[0, 3]].exp()
    torch.testing.assert_close((y[[0, 3]] - y[[1, 2]]) / (x[[0, 3]] - x[[1, 2]]), tail_slopes)
    (y.sum() + ladj.sum()).backward()
    assert torch.isfinite(x.grad).all()


def test_spline_is_monotone_across_the_boundary() -> None:
    bound = 2.0
    spline, raw = random_spline(5, bound, 1, seed=1)
    x = torch.linspace(-bound - 1.0, bound + 1.0, 20_001, dtype=torch.float64)
    x = torch.cat([x, torch.tensor([-bound, bound], dtype=torch.float64)]).sort().values
    y, ladj = spline.forward(x, raw.expand(len(x), -1))
    assert (y.diff() >= 0).all() and (y.diff()[x.diff() > 0] > 0).all()
    assert torch.isfinite(ladj).all()


@pytest.mark.parametrize("side", [-1.0, 1.0])
def test_spline_derivative_is_continuous_at_the_bound(side: float) -> None:
    # C¹: dy/dx just inside ±B must approach the tail's slope just outside, the gap shrinking
    # linearly in the distance (a boundary knot derivative unequal to the tail slope would
    # leave a constant gap).
    bound = 2.5
    spline, raw = random_spline(7, bound, 1, seed=2)

    def slope(x: float) -> float:
        v = torch.tensor([x], dtype=torch.float64, requires_grad=True)
        y, ladj = spline.forward(v, raw)
        (grad,) = torch.autograd.grad(y.sum(), v)
        assert math.isclose(float(ladj.detach().exp()), float(grad), rel_tol=1e-10)
        return float(grad)

    tail = slope(side * (bound + 1e-9))
    assert tail == pytest.approx(slope(side * (bound + 10.0)), rel=1e-12)  # linear tail
    assert abs(tail - 1.0) > 0.05  # the parameters really move the tail slope off 1
    assert slope(side * bound) == pytest.approx(tail, rel=1e-12)
    gap_far, gap_near = (abs(slope(side * (bound - eps)) - tail) for eps in (1e-5, 1e-8))
    assert gap_near < 1e-4 and gap_near <= 0.01 * gap_far + 1e-12, (gap_far, gap_near)


def test_spline_identity_init_and_coupling_start_at_identity() -> None:
    x = 4.0 * torch.randn(64, 3)
    for t in [
        T.ElementwiseSpline(3, bins=4, bound=2.0),
        T.SplineCoupling(3, hidden=(8,)),
        T.MaskedAutoregressive(3, "spline", hidden=(8,)),
    ]:
        y, ladj = t(x)
        torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-5)
        assert ladj.abs().max() < 1e-5


@pytest.mark.parametrize("residual", [False, True])
def test_made_jacobian_is_triangular_in_its_order(residual: bool) -> None:
    d, order = 5, [3, 0, 4, 1, 2]
    torch.manual_seed(0)
    made = MADE(d, 3, hidden=(16, 16), order=order, residual=residual).double()
    with torch.no_grad():
        for p in made.parameters():
            p.add_(0.5 * torch.randn_like(p))
    rank = torch.argsort(torch.tensor(order))
    allowed = rank[None, :] < rank[:, None]  # output i may depend on input j
    dependence = torch.zeros(d, d, dtype=torch.bool)
    for x in torch.randn(4, d, dtype=torch.float64):
        jac = torch.func.jacrev(made)(x)  # (d, P, d)
        nonzero = jac.abs().amax(1) > 0
        assert not (nonzero & ~allowed).any(), "an output depends on an input not before it"
        dependence |= nonzero
    assert (dependence == allowed).all(), "some allowed dependence is missing"


def test_autoregressive_layer_jacobian_is_triangular_in_its_order() -> None:
    order = [2, 0, 3, 1]
    torch.manual_seed(1)
    t = T.MaskedAutoregressive(4, "spline", hidden=(16,), order=order).double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.3 * torch.randn_like(p))
    jac = torch.func.jacrev(lambda v: t(v)[0])(torch.randn(4, dtype=torch.float64))
    permuted = jac[order][:, order]
    assert (permuted.triu(1) == 0).all() and (permuted.diagonal() > 0).all()


def test_student_t_base_log_prob_and_sampling_are_exact() -> None:
    base = StudentT(df=3.0).double()
    like = torch.zeros((), dtype=torch.float64)
    x = torch.linspace(-50, 50, 11, dtype=torch.float64)[:, None].expand(11, 2)
    expected = torch.distributions.StudentT(torch.tensor(3.0).double()).log_prob(x).sum(-1)
    torch.testing.assert_close(base.log_prob(x), expected, atol=1e-12, rtol=1e-12)
    torch.manual_seed(0)
    xi = base.sample((100_000, 2), like)
    # t₃'s 0.995 quantile is 5.8409; ±3 % covers the Monte Carlo error at this n.
    assert xi.abs().quantile(0.99).item() == pytest.approx(5.8409, rel=0.03)


def test_student_t_base_learns_df_and_is_saved(tmp_path) -> None:
    q = flows.build("iaf", 3, base="student-t", df=4.0, learn_df=True, hidden=(8,))
    theta, log_q = q.sample_and_log_prob(64)
    (theta.square().sum() + log_q.sum()).backward()
    assert q.base.raw_df.grad is not None and q.base.raw_df.grad.abs() > 0
    torch.testing.assert_close(q.log_prob(theta), log_q, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        q.base.raw_df.add_(0.7)
    flows.save(q, tmp_path / "q.pt")
    q2 = flows.load(tmp_path / "q.pt")
    assert isinstance(q2.base, StudentT) and q2.base.learn_df
    assert q2.base.df().item() == q.base.df().item()
    xi = torch.randn(5, 3)
    torch.testing.assert_close(q2(xi)[1], q(xi)[1], atol=0, rtol=0)


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: flows.build("nsf", 2, bins=1), "bins"),
        (lambda: flows.build("nsf-ar", 2, bound=0.0), "bound"),
        (lambda: flows.build("nsf", 2, bound=-1.0), "bound"),
        (lambda: T.ElementwiseSpline(2, bins=0), "bins"),
        (lambda: flows.build("iaf", 2, base="student-t", df=0.0), "df"),
        (lambda: flows.build("maf", 2, base="student-t", df=-3.0), "df"),
        (lambda: flows.build("maf", 2, df=3.0), "df"),
        (lambda: flows.build("maf", 2, base="cauchy"), "base"),
        (lambda: T.MaskedAutoregressive(3, order=[0, 1, 1]), "order"),
        (lambda: T.MaskedAutoregressive(3, order=[0, 1]), "order"),
        (lambda: T.MaskedAutoregressive(3, "quadratic"), "transformer"),
        (lambda: flows.build("gaussian", 2, init_scale=0.0), "init_scale"),
        (lambda: flows.build("lowrank-gaussian", 2, init_scale=float("nan")), "init_scale"),
        (lambda: flows.build("iaf", 2, scale_bound=float("inf")), "scale_bound"),
    ],
)
def test_bad_options_name_the_argument(make, argument: str) -> None:
    with pytest.raises(ValueError, match=rf"^{argument}\b"):
        make()


_BLOCKED = textwrap.dedent(
    """
    import sys

    class Block:  # refuses nflows and pyro (and their submodules) as if not installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"nflows", "pyro"}:
                raise ImportError(f"{name} is blocked for this test")
            return None

    sys.meta_path.insert(0, Block())
    import torch
    torch.set_num_threads(1)
    from vi_flows import flows
    from vi_flows.fit import fit

    shift = torch.tensor([1.0, -0.5, 0.5])
    for name in ["maf", "iaf", "nsf", "nsf-ar"]:
        torch.manual_seed(0)
        q = flows.build(name, 3, hidden=(16, 16))
        fit(q, lambda x: -0.5 * (x - shift).square().sum(-1), 150, num_samples=128, lr=2e-2, seed=0,
            progress=False)
        theta, log_q = q.sample_and_log_prob(2000)
        assert torch.isfinite(theta).all() and torch.isfinite(log_q).all(), name
        err = (theta.mean(0) - shift).abs().max().item()
        assert err < 0.2, (name, err)
        torch.testing.assert_close(q.log_prob(theta[:50]), log_q[:50], atol=1e-3, rtol=1e-3)
    assert not any(m.split(".")[0] in {"nflows", "pyro"} for m in sys.modules)
    try:
        flows.build("nflows-spline", 2)
    except ImportError:
        pass
    else:
        raise AssertionError("the nflows adapter should need nflows")
    print("ok")
    """
)


def test_native_families_work_without_nflows_and_pyro() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _BLOCKED], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_iaf_samples_in_one_pass_and_maf_inverts_in_one_pass() -> None:
    # Count conditioner evaluations: IAF's forward (VI's sample + log q) and MAF's inverse
    # (density of given points) are one MADE pass per layer; the other directions take d.
    d = 4
    calls = {"n": 0}

    def count(*_) -> None:
        calls["n"] += 1

    for name, forward_calls, inverse_calls in [("iaf", 1, d), ("maf", d, 1)]:
        q = flows.build(name, d, layers=2, hidden=(8,))
        for m in q.modules():
            if isinstance(m, MADE):
                m.register_forward_hook(count)
        calls["n"] = 0
        theta, _ = q.sample_and_log_prob(3)
        assert calls["n"] == 2 * forward_calls, name
        calls["n"] = 0
        q.log_prob(theta)
        assert calls["n"] == 2 * inverse_calls, name
        # the flags that say so (rl refuses a posterior that samples one weight at a time)
        flags = (q.transform.sequential_forward, q.transform.sequential_inverse)
        assert flags == (forward_calls > 1, inverse_calls > 1), name
    # a mixture's sample needs log q, which runs every component's inverse
    mix = flows.build("mixture", d, components=2, family="iaf", layers=1, hidden=(8,))
    assert mix.transform.sequential_forward and mix.transform.sequential_inverse
    assert not flows.build("realnvp", d).transform.sequential_forward
    # a wrapper cannot see inside a foreign library's layer: its caller says
    from vi_flows.transforms import Compose, NflowsTransform

    inner = flows.build("nflows-spline", d, layers=1).transform
    assert not (inner.sequential_forward or inner.sequential_inverse)
    layer = inner.parts[0].inner
    wrapped = Compose([NflowsTransform(layer, d, sequential_inverse=True)])
    assert (wrapped.sequential_forward, wrapped.sequential_inverse) == (False, True)


def test_student_t_target_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    from vi_flows import targets

    t = targets.get("student-t", dim=4, df=3.0, scale=2.0)
    x = torch.randn(6, 4, dtype=torch.float64) * 3
    expected = stats.multivariate_t(loc=[0.0] * 4, shape=4.0 * torch.eye(4).numpy(), df=3.0)
    torch.testing.assert_close(
        t.log_prob(x), torch.as_tensor(expected.logpdf(x.numpy())), atol=1e-10, rtol=1e-10
    )
    draws = t.sample(50_000, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert stats.kstest(draws[:, 1].numpy() / 2.0, "t", args=(3.0,)).pvalue > 1e-3
    assert math.isclose(float(t.std[0]), 2.0 * math.sqrt(3.0), rel_tol=1e-12)


def test_generalized_pareto_fit_matches_pyro() -> None:
    pyro_stats = pytest.importorskip("pyro.ops.stats")
    from vi_flows.diagnostics import fit_generalized_pareto

    torch.manual_seed(0)
    for k_true in (0.2, 0.7, 1.2):
        x = (torch.rand(500, dtype=torch.float64).pow(-k_true) - 1) / k_true  # GPD(k, σ = 1)
        ours = fit_generalized_pareto(x)
        theirs = pyro_stats.fit_generalized_pareto(x)
        assert ours == pytest.approx(theirs, rel=1e-10)
        assert abs(ours[0] - k_true) < 0.25
