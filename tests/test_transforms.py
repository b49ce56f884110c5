"""Generic tests run on every exported transform (a meta-test guards the list of cases)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import pytest
import torch
from nflows.transforms import PiecewiseRationalQuadraticCouplingTransform
from pyro.distributions import transforms as pyro_transforms
from pyro.nn import DenseNN
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import vi_flows.transforms as T
from vi_flows.transforms.coupling import alternating_mask, mlp
from vi_flows.transforms.planar import IDENTITY_OFFSET, MARGIN

DIM = 4


def _nflows_spline() -> T.Transform:
    def net(i: int, o: int) -> nn.Module:
        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.body = mlp(i, o, (16,))
                self.hidden_features = 16

            def forward(self, x, context=None):
                return self.body(x)

        return Net()

    mask = alternating_mask(DIM, 1).to(torch.int64)
    inner = PiecewiseRationalQuadraticCouplingTransform(
        mask, net, num_bins=5, tails="linear", tail_bound=3.0
    )
    return T.NflowsTransform(inner, DIM)


def _pyro_coupling() -> T.Transform:
    net = DenseNN(DIM // 2, [16], param_dims=[DIM - DIM // 2, DIM - DIM // 2])
    return T.PyroTransform(pyro_transforms.AffineCoupling(DIM // 2, net), DIM, has_inverse=True)


# Every exported transform must appear here (see test_every_export_has_a_case).
CASES: dict[str, Callable[[], T.Transform]] = {
    "elementwise": lambda: T.ElementwiseAffine(DIM),
    "lower-triangular": lambda: T.LowerTriangularAffine(DIM),
    "low-rank": lambda: T.LowRankAffine(DIM, rank=2),
    "low-rank-scaled": lambda: T.LowRankAffine(DIM, rank=2, init_factor=0.3, factor_scale=0.2),
    "planar": lambda: T.Planar(DIM),
    "radial": lambda: T.Radial(DIM),
    "coupling": lambda: T.AffineCoupling(DIM, alternating_mask(DIM, 1), hidden=(16, 16)),
    "permutation": lambda: T.Permutation(DIM),
    "reverse": lambda: T.Reverse(DIM),
    "compose": lambda: T.Compose(
        [T.AffineCoupling(DIM, hidden=(8,)), T.Reverse(DIM), T.LowerTriangularAffine(DIM)]
    ),
    "compose-planar": lambda: T.Compose([T.Planar(DIM), T.Radial(DIM), T.ElementwiseAffine(DIM)]),
    "inverse": lambda: T.Inverse(T.Compose([T.LowRankAffine(DIM), T.AffineCoupling(DIM)])),
    "nflows-spline": _nflows_spline,
    "pyro-planar": lambda: T.PyroTransform(pyro_transforms.Planar(DIM), DIM, has_inverse=False),
    "pyro-coupling": _pyro_coupling,
    "coupling-generic": lambda: T.Coupling(DIM, T.AffineTransformer(2.0), hidden=(8,)),
    "spline-coupling": lambda: T.SplineCoupling(
        DIM, alternating_mask(DIM, 1), hidden=(16,), bins=5, bound=2.0
    ),
    # bound 1.5 with inputs 1.5·N(0, 1): many coordinates land in the linear tails.
    "elementwise-spline": lambda: T.ElementwiseSpline(DIM, bins=4, bound=1.5),
    "iaf-affine": lambda: T.MaskedAutoregressive(
        DIM, "affine", hidden=(16, 16), order=[2, 0, 3, 1]
    ),
    "iaf-spline": lambda: T.MaskedAutoregressive(
        DIM, "spline", hidden=(16,), order=[1, 3, 0, 2], bins=4, bound=2.0
    ),
    "iaf-residual": lambda: T.MaskedAutoregressive(DIM, "affine", hidden=(12, 12), residual=True),
    "maf-spline": lambda: T.Inverse(T.MaskedAutoregressive(DIM, "spline", hidden=(16,), bins=3)),
}


def make(name: str, dtype: torch.dtype = torch.float64, seed: int = 0) -> T.Transform:
    """Build a case and move its parameters away from their (often identity) initial values."""
    torch.manual_seed(seed)
    t = CASES[name]().to(dtype)
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return t


def test_every_export_has_a_case() -> None:
    exported = {
        obj
        for name in T.__all__
        if inspect.isclass(obj := getattr(T, name)) and issubclass(obj, T.Transform)
    }
    exported.discard(T.Transform)
    covered: set[type] = set()
    for name in CASES:
        stack = [make(name)]
        while stack:
            t = stack.pop()
            covered.add(type(t))
            stack.extend(m for m in t.children() if isinstance(m, T.Transform))
            stack.extend(m for m in t.modules() if isinstance(m, T.Transform) and m is not t)
    missing = sorted(cls.__name__ for cls in exported - covered)
    assert not missing, f"exported transforms without a generic test case: {missing}"


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [(), (5,), (2, 3)])
def test_shapes_and_dtype(name: str, dtype: torch.dtype, batch: tuple[int, ...]) -> None:
    t = make(name, dtype)
    x = torch.randn(*batch, DIM, dtype=dtype)
    y, ladj = t(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert ladj.shape == batch and ladj.dtype == dtype
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    if t.has_inverse:
        x2, ladj2 = t.inverse(y)
        assert x2.shape == x.shape and ladj2.shape == batch


@pytest.mark.parametrize("name", CASES)
def test_round_trip_and_log_dets_cancel(name: str) -> None:
    t = make(name)
    x = torch.randn(64, DIM, dtype=torch.float64)
    y, ladj = t(x)
    if not t.has_inverse:
        with pytest.raises(NotImplementedError):
            t.inverse(y)
        return
    x2, ladj_inv = t.inverse(y)
    torch.testing.assert_close(x2, x, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(ladj + ladj_inv, torch.zeros_like(ladj), atol=1e-8, rtol=0)


def _jacobian_log_det(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.linalg.slogdet(torch.func.jacrev(fn)(xi)).logabsdet for xi in x])


@pytest.mark.parametrize("name", CASES)
def test_log_det_matches_autograd_jacobian(name: str) -> None:
    t = make(name)
    x = 1.5 * torch.randn(8, DIM, dtype=torch.float64)
    y, ladj = t(x)
    expected = _jacobian_log_det(lambda v: t(v)[0], x)
    torch.testing.assert_close(ladj, expected, atol=1e-8, rtol=1e-8)
    if t.has_inverse:
        _, ladj_inv = t.inverse(y)
        expected_inv = _jacobian_log_det(lambda v: t.inverse(v)[0], y.detach())
        torch.testing.assert_close(ladj_inv, expected_inv, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize(
    "make_affine",
    [
        lambda: T.ElementwiseAffine(DIM, init_scale=0.3),
        lambda: T.LowRankAffine(DIM, rank=2, init_factor=0.5),
        lambda: T.LowerTriangularAffine(DIM, init_scale=0.3),
    ],
)
def test_affine_log_abs_det_is_the_forwards_log_det_to_the_bit(make_affine) -> None:
    """The closed form the dual step of auto α reads (rl.temperature) is the forward's own."""
    torch.manual_seed(0)
    t = make_affine()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.3 * torch.randn_like(p))
    _, ladj = t(torch.randn(3, DIM))
    assert t.log_abs_det().shape == ()
    assert torch.equal(t.log_abs_det().expand(3), ladj)


@pytest.mark.parametrize("name", CASES)
def test_gradients_reach_every_parameter(name: str) -> None:
    t = make(name)
    x = torch.randn(32, DIM, dtype=torch.float64, requires_grad=True)
    y, ladj = t(x)
    (y.square().sum() + ladj.sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, p in t.named_parameters():
        assert p.grad is not None, f"no gradient reached {pname}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient at {pname}"
        assert p.grad.abs().sum() > 0, f"zero gradient at {pname}"


def test_planar_stays_invertible_for_adversarial_parameters() -> None:
    t = T.Planar(2).double()
    for wu in (-50.0, -5.0, -1.0, -0.999, 0.0, 3.0):
        with torch.no_grad():
            t.w.copy_(torch.tensor([2.0, 0.0]))
            t.u.copy_(torch.tensor([wu / 2.0, 1.0]))
            t.b.zero_()
        assert float((t.w @ t.u_hat()).detach()) > -1.0
        # Along w the map is s ↦ s + (wᵀû) tanh(‖w‖ s): strictly increasing iff wᵀû > -1.
        s = torch.linspace(-5, 5, 2001, dtype=torch.float64)
        x = s[:, None] * t.w / t.w.norm()
        proj = (t(x)[0] @ t.w / t.w.norm()).detach()
        assert (proj.diff() > 0).all()
        assert torch.isfinite(t(x)[1]).all()


def test_planar_projection_divides_by_squared_norm() -> None:
    # With ‖w‖ ≠ 1, dividing by ‖w‖ instead of ‖w‖² leaves wᵀû ≠ m(wᵀu); this test catches it.
    t = T.Planar(3).double()
    with torch.no_grad():
        t.w.copy_(torch.tensor([3.0, -1.0, 2.0]))
        t.u.copy_(torch.tensor([-4.0, 1.0, 0.5]))
    wu = float((t.w @ t.u).detach())
    expected = -1.0 + MARGIN + math.log1p(math.exp(wu + IDENTITY_OFFSET))  # m(wᵀu), m(0) = 0
    assert float((t.w @ t.u_hat()).detach()) == pytest.approx(expected, abs=1e-12)


def test_radial_stays_invertible_for_adversarial_parameters() -> None:
    t = T.Radial(2).double()
    with torch.no_grad():
        t.raw_alpha.fill_(0.5)
        t.raw_beta.fill_(-800.0)  # softplus underflows: β sits at the edge, -α + margin
        t.z0.zero_()
    alpha, beta = t.alpha_beta()
    assert float(beta) > -float(alpha)
    r = torch.linspace(1e-3, 10, 2000, dtype=torch.float64)
    x = torch.stack([r, torch.zeros_like(r)], -1)
    y, ladj = t(x)
    assert (y[:, 0].diff() > 0).all()  # the radius map r ↦ r(1 + βh(r)) stays increasing
    assert torch.isfinite(ladj).all()


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of entries of any tensor an op returns inside the block."""

    numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def test_low_rank_is_cheap_in_high_dimension() -> None:
    # d = 5,000 with rank 8 must not form any d × d matrix in forward/inverse: the lemma's
    # log-det and the Woodbury inverse match the dense A = D(I + VVᵀ) built here for the check.
    d, r = 5000, 8
    t = T.LowRankAffine(d, rank=r).double()
    with torch.no_grad():
        t.factor.normal_(0, 0.05)
        t.raw_diag.normal_(0, 0.2)
    x = torch.randn(3, d, dtype=torch.float64)
    with _LargestTensor() as seen:  # every tensor forward and inverse make, whatever the op
        y, ladj = t(x)
        x2, ladj_inv = t.inverse(y)
    assert seen.numel <= d * r, f"a tensor of {seen.numel} entries (d·r = {d * r}, d² = {d * d})"
    torch.testing.assert_close(x2, x, atol=1e-8, rtol=1e-8)
    dense = t.matrix()
    torch.testing.assert_close(ladj[0], torch.linalg.slogdet(dense).logabsdet, atol=1e-6, rtol=0)
    torch.testing.assert_close(y, t.loc + x @ dense.T, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ladj + ladj_inv, torch.zeros_like(ladj), atol=1e-8, rtol=0)


def test_compose_requires_matching_dims() -> None:
    with pytest.raises(ValueError, match="share one dim"):
        T.Compose([T.ElementwiseAffine(2), T.ElementwiseAffine(3)])


def test_wrong_event_size_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        T.ElementwiseAffine(4)(torch.zeros(2, 3))


def test_inverse_of_non_invertible_is_rejected() -> None:
    with pytest.raises(ValueError, match="no closed-form inverse"):
        T.Inverse(T.Planar(2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", CASES)
def test_runs_on_cuda(name: str) -> None:
    t = make(name, torch.float32).cuda()
    x = torch.randn(16, DIM, device="cuda")
    y, ladj = t(x)
    assert y.device.type == "cuda" and ladj.device.type == "cuda"
    if t.has_inverse:
        torch.testing.assert_close(t.inverse(y)[0], x, atol=1e-4, rtol=1e-4)


#: nflows' spline indexes with ``nonzero``, which the meta device cannot run.
_NOT_ON_META = {"nflows-spline"}


@pytest.mark.parametrize("name", [c for c in CASES if c not in _NOT_ON_META])
def test_makes_every_tensor_on_its_inputs_device(name: str) -> None:
    """On the meta device (shapes, no data) a tensor made without ``device=`` lands on the CPU
    and the op mixing it with the transform's fails: the CUDA test's device check (skipped on
    a CPU-only machine) runs here on every machine."""
    t = make(name, torch.float32).to("meta")
    y, ladj = t(torch.empty(16, DIM, device="meta"))
    assert y.device.type == "meta" and ladj.device.type == "meta"
    assert (y.shape, ladj.shape) == ((16, DIM), (16,))
    if t.has_inverse:
        x, ladj_inv = t.inverse(y)
        assert x.device.type == "meta" and ladj_inv.device.type == "meta"


def test_low_rank_factor_scale_is_kept_with_the_weights() -> None:
    """V = s W: s travels in the state dict (a loaded flow uses the saved s, not its
    constructor's); a state dict from before the option holds V itself and loads as s = 1; and
    V starts with entries of std ``init_factor`` whatever s is."""
    torch.manual_seed(0)
    scaled = T.LowRankAffine(5000, rank=4, init_factor=0.01, factor_scale=5000**-0.5)
    assert abs(float(scaled.low_rank().std()) / 0.01 - 1.0) < 0.05
    state = scaled.state_dict()
    assert float(state["factor_scale"]) == pytest.approx(5000**-0.5)
    fresh = T.LowRankAffine(5000, rank=4)  # s = 1 by default, overwritten by the load
    fresh.load_state_dict(state)
    x = torch.randn(3, 5000)
    torch.testing.assert_close(fresh(x)[0], scaled(x)[0])
    old = {k: v for k, v in state.items() if k != "factor_scale"}
    before = T.LowRankAffine(5000, rank=4, factor_scale=0.5)
    before.load_state_dict(old)
    assert float(before.factor_scale) == 1.0
    torch.testing.assert_close(before.low_rank(), state["factor"])
    with pytest.raises(ValueError, match="factor_scale"):
        T.LowRankAffine(4, factor_scale=0.0)
