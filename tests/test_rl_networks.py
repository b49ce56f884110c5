"""The fused nodes of ``rl.networks`` (MLP passes) and ``rl.distributions`` (Gaussian log π) against
autograd through the plain ops.

Each differentiable forward of :class:`FlatMLP` and :class:`MLP` is one autograd node with a
hand-written backward; these tests hold its outputs, first derivatives (for the weights and the
inputs) and second derivatives (TRPO's Fisher-vector products differentiate the backward) to
autograd's, in float64 so that any disagreement is a wrong formula, not rounding.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rl.networks import ACTIVATIONS, MLP, FlatMLP, mlp

ACTS = sorted(ACTIVATIONS)


def _plain_flat(net: FlatMLP, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """θ sliced per layer, torch's own differentiable activation (the reference)."""
    act = torch.tanh if net.activation == "tanh" else torch.relu
    h = x
    for i, (w, b, n_in, n_out) in enumerate(net.slices):
        h = torch.baddbmm(theta[:, b].unsqueeze(-2), h, theta[:, w].reshape(-1, n_in, n_out))
        if i < len(net.slices) - 1:
            h = act(h)
    return h


def _plain_stack(net: MLP, x: torch.Tensor) -> torch.Tensor:
    """The same modules run one by one, as ``nn.Sequential`` would."""
    for layer in net:
        x = layer(x)
    return x


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("k,b,width", [(3, 5, 7), (2, 40, 64)])
def test_flat_mlp_node_matches_autograd(activation, k, b, width):
    torch.manual_seed(0)
    net = FlatMLP([4, width, width, 2], activation)
    theta = (0.3 * torch.randn(k, net.num_params, dtype=torch.float64)).requires_grad_()
    x = torch.randn(k, b, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(k, b, 2, dtype=torch.float64)
    out, ref = net(theta, x), _plain_flat(net, theta, x)
    assert out.grad_fn is not None and type(out.grad_fn).__name__ == "_FlatMLPFnBackward"
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    grads = torch.autograd.grad((out * weights).sum(), (theta, x))
    ref_grads = torch.autograd.grad((ref * weights).sum(), (theta, x))
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ACTS)
def test_fused_nodes_pass_gradcheck_and_gradgradcheck(activation):
    torch.manual_seed(1)
    net = FlatMLP([3, 6, 5, 2], activation)
    theta = (0.5 * torch.randn(2, net.num_params, dtype=torch.float64)).requires_grad_()
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, h: net(t, h), (theta, x))
    assert torch.autograd.gradgradcheck(lambda t, h: net(t, h), (theta, x))
    stack = mlp(3, 2, (6, 5), activation).double()
    params = dict(stack.named_parameters())
    leaves = [p.detach().requires_grad_() for p in params.values()]
    inputs = (x[0].detach().requires_grad_(), *leaves)

    def run(h, *values):
        return torch.func.functional_call(stack, dict(zip(params, values, strict=True)), (h,))

    assert torch.autograd.gradcheck(run, inputs)
    assert torch.autograd.gradgradcheck(run, inputs)


def test_fisher_vector_product_through_the_node_matches_autograd():
    """TRPO's kl-hessian product H v = ∂(∂KL/∂θ · v)/∂θ, through the fused node and through the
    plain ops: the double backward replays the forward, so the two agree."""
    torch.manual_seed(2)
    net = FlatMLP([3, 64, 64, 1])
    theta = (0.1 * torch.randn(1, net.num_params, dtype=torch.float64)).requires_grad_()
    x = torch.randn(1, 100, 3, dtype=torch.float64)
    v = torch.randn(1, net.num_params, dtype=torch.float64)
    products = []
    for forward in (net, lambda t, h: _plain_flat(net, t, h)):
        mean = forward(theta, x)
        kl = 0.5 * (mean - mean.detach()).square().mean()  # KL of unit-σ Gaussians at θ_old = θ
        (grad,) = torch.autograd.grad(kl, theta, create_graph=True)
        (hv,) = torch.autograd.grad((grad * v).sum(), theta)
        products.append(hv)
    assert products[0].abs().max() > 0
    torch.testing.assert_close(products[0], products[1], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("activation", ACTS)
def test_mlp_is_the_same_sequential_with_a_fused_forward(activation):
    torch.manual_seed(3)
    net = mlp(5, 3, (64, 64), activation).double()
    assert isinstance(net, nn.Sequential) and isinstance(net, MLP)
    assert list(net.state_dict()) == [
        f"{i}.{name}" for i in (0, 2, 4) for name in ("weight", "bias")
    ]  # checkpoints of the plain nn.Sequential load unchanged
    x = torch.randn(7, 11, 5, dtype=torch.float64, requires_grad=True)  # leading dims kept
    out, ref = net(x), _plain_stack(net, x)
    assert out.shape == (7, 11, 3)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    weights = torch.randn_like(out)
    params = [x, *net.parameters()]
    got = torch.autograd.grad((out * weights).sum(), params)
    want = torch.autograd.grad((ref * weights).sum(), params)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # the no-grad path (acting, value pass) computes the same
        torch.testing.assert_close(net(x), ref.detach(), rtol=0, atol=1e-12)


def test_only_the_inputs_that_need_a_gradient_get_one():
    net = mlp(3, 1, (8,))
    net[0].weight.requires_grad_(False)
    net(torch.randn(4, 3)).sum().backward()
    assert net[0].weight.grad is None and net[0].bias.grad is not None
    assert net[2].weight.grad is not None


def _plain_gaussian_log_prob(a, loc, log_scale):
    """log N(a; μ, diag σ²) by torch.distributions (the reference)."""
    from torch.distributions import Independent, Normal

    return Independent(Normal(loc, log_scale.exp().expand_as(loc)), 1).log_prob(a)


def test_gaussian_log_prob_node_matches_autograd():
    """``DiagGaussian.log_prob`` under autograd is one node (rl.distributions): its value and
    the gradients for the action, the mean and a broadcast log σ are torch.distributions'."""
    from rl.distributions import DiagGaussian

    torch.manual_seed(0)
    a = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    loc = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    log_scale = (0.5 * torch.randn(3, dtype=torch.float64)).requires_grad_()
    out = DiagGaussian(loc, log_scale).log_prob(a)
    ref = _plain_gaussian_log_prob(a, loc, log_scale)
    assert out.grad_fn is not None and "LogProb" in type(out.grad_fn).__name__
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)  # float64: a formula, not rounding
    weights = torch.randn(7, dtype=torch.float64)
    got = torch.autograd.grad(out @ weights, (a, loc, log_scale))
    want = torch.autograd.grad(ref @ weights, (a, loc, log_scale))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_gaussian_log_prob_node_passes_gradcheck_and_gradgradcheck():
    """Second derivatives too (TRPO's Fisher-vector products differentiate log π's gradient)."""
    from rl.distributions import DiagGaussian

    torch.manual_seed(1)
    a = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    loc = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    log_scale = (0.3 * torch.randn(2, dtype=torch.float64)).requires_grad_()

    def f(a, loc, log_scale):
        return DiagGaussian(loc, log_scale).log_prob(a)

    assert torch.autograd.gradcheck(f, (a, loc, log_scale), atol=1e-8, rtol=1e-6)
    assert torch.autograd.gradgradcheck(f, (a, loc, log_scale), atol=1e-8, rtol=1e-6)
