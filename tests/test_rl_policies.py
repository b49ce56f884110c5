"""Policy families: batched K-θ evaluation, Box/Discrete heads, §3.1/§3.2 posteriors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rl.adapter import policy_log_density, posterior_loss, reinforce_objective
from rl.buffer import Batch
from rl.policies import ActionMeanPolicy, AuxiliaryPolicy, BNNPolicy, ParticlePolicy

BOX = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
DISCRETE = gym.spaces.Discrete(3)


def test_batched_k_theta_matches_separate_networks():
    torch.manual_seed(0)
    policy = BNNPolicy(4, DISCRETE, hidden=(8, 5), posterior="gaussian")
    k, b = 6, 7
    theta = policy.q(torch.randn(k, policy.noise_dim))[0]
    obs = torch.randn(k, b, 4)
    logits = policy.evaluate(theta, obs).logits
    for i in range(k):
        flat = policy.theta0 + theta[i]
        net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 3))
        start = 0
        for layer in net[::2]:
            n_w = layer.in_features * layer.out_features
            layer.weight.data = flat[start : start + n_w].reshape(layer.in_features, -1).T
            layer.bias.data = flat[start + n_w : start + n_w + layer.out_features]
            start += n_w + layer.out_features
        expected = torch.log_softmax(net(obs[i]), -1)
        assert torch.allclose(logits[i], expected, atol=1e-5)


@pytest.mark.parametrize("space", [BOX, DISCRETE])
@pytest.mark.parametrize(
    "family", [BNNPolicy, ParticlePolicy, ActionMeanPolicy, AuxiliaryPolicy, "point"]
)
def test_sessions_distribution_is_act_distribution_per_session(space, family):
    """The one-pass (K sessions × B states) evaluation of the diagnostics and the calibration:
    row k is act_distribution under session k's params at every state, for every family."""
    torch.manual_seed(0)
    if family == "point":
        policy = BNNPolicy(3, space, hidden=(8, 5), posterior="point")
    else:
        policy = family(3, space, hidden=(8, 5))
    if space is BOX:
        with torch.no_grad():  # a log σ per action dimension, not the default's one value
            policy.head.log_std.add_(torch.randn_like(policy.head.log_std))
    params = policy.session_params(policy.new_noise(torch.arange(4)))
    obs = torch.randn(6, 3)
    dist = policy.sessions_distribution(params, obs)
    assert dist.batch_shape == (4, 6)
    for k in range(4):
        one = policy.act_distribution(params[k : k + 1].expand(6, *params.shape[1:]), obs)
        for name in ("probs",) if space is DISCRETE else ("mean", "stddev"):
            torch.testing.assert_close(getattr(dist, name)[k], getattr(one, name))


@pytest.mark.parametrize("space", [BOX, DISCRETE])
@pytest.mark.parametrize("family", [BNNPolicy, ActionMeanPolicy, AuxiliaryPolicy])
def test_families_act_and_train_on_both_action_spaces(space, family):
    torch.manual_seed(0)
    policy = family(3, space, hidden=(8,))
    slots = torch.arange(4)
    params = policy.session_params(policy.new_noise(slots))
    obs = torch.randn(4, 3)
    dist = policy.act_distribution(params, obs)
    action = dist.sample()
    env_action = policy.head.to_env(action)
    assert env_action.shape == ((4,) if space is DISCRETE else (4, 2))
    if space is BOX:
        assert np.all(np.abs(env_action) <= 2.0)
    xi = policy.new_noise(slots)
    batch = Batch(
        obs=obs,
        actions=action,
        logp=dist.log_prob(action).detach(),
        advantages=torch.randn(4),
        returns=torch.zeros(4),
        values=torch.zeros(4),
        session=torch.tensor([0, 1, 1, 3]),
        xi=xi,
    )
    q, qxi, log_p = policy_log_density(policy, batch, reinforce_objective(batch.advantages), 0.1)
    loss = posterior_loss(q, log_p, qxi, policy.has_kl_term)
    loss.backward()
    params = [p for p in policy.parameters() if p.requires_grad]
    for p in params:  # every parameter gets a finite gradient that is not all zero
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # and a small step against it lowers the loss (the same batch and noise)
    with torch.no_grad():
        for p in params:
            p.sub_(1e-4 * p.grad)
    q, qxi, log_p = policy_log_density(policy, batch, reinforce_objective(batch.advantages), 0.1)
    assert float(posterior_loss(q, log_p, qxi, policy.has_kl_term)) < float(loss)


def test_state_gaussian_log_q_is_eq_8_log_det():
    torch.manual_seed(0)
    policy = ActionMeanPolicy(3, BOX, hidden=(8,))
    obs = torch.randn(5, 3)
    q = policy.q_at(obs)
    xi = torch.randn(5, 2)
    theta, log_q = q(xi)
    mu, log_std = q.moments()
    expected = torch.distributions.Normal(mu, log_std.exp()).log_prob(theta).sum(-1)
    assert torch.allclose(log_q, expected, atol=1e-5)


def test_point_mass_posterior_has_zero_std_and_mean_is_loc():
    policy = BNNPolicy(3, DISCRETE, hidden=(4,), posterior="point")
    assert not policy.has_kl_term and policy.posterior_std() == 0.0
    assert torch.equal(policy.mean_params(), policy.q.loc[None])


def test_diag_gaussian_matches_independent_normal():
    from torch.distributions import Independent, Normal, kl_divergence

    from rl.distributions import DiagGaussian

    gen = torch.Generator().manual_seed(0)
    m1, m2 = (torch.randn(6, 3, dtype=torch.float64, generator=gen) for _ in range(2))
    l1, l2 = (torch.randn(3, dtype=torch.float64, generator=gen) for _ in range(2))
    ours, other = DiagGaussian(m1, l1), DiagGaussian(m2, l2)
    ref = Independent(Normal(m1, l1.exp().expand_as(m1)), 1)
    ref_other = Independent(Normal(m2, l2.exp().expand_as(m2)), 1)
    x = torch.randn(6, 3, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(ours.log_prob(x), ref.log_prob(x))
    torch.testing.assert_close(ours.entropy(), ref.entropy())
    torch.testing.assert_close(kl_divergence(ours, other), kl_divergence(ref, ref_other))
    torch.manual_seed(0)
    draws = ours.sample((20000,))
    assert draws.shape == (20000, 6, 3) and not draws.requires_grad
    torch.testing.assert_close(draws.mean(0), m1, atol=0.05 * l1.exp().max(), rtol=0)
    torch.testing.assert_close(draws.std(0), l1.exp().expand_as(m1), atol=0.03, rtol=0.03)
    # rsample carries the gradient to the mean and the log-scale
    loc, log_scale = m1.clone().requires_grad_(), l1.clone().requires_grad_()
    DiagGaussian(loc, log_scale).rsample().sum().backward()
    assert loc.grad is not None and log_scale.grad is not None


def _sliced_flat_mlp(net, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The straightforward FlatMLP: slice θ per layer (the reference for the split version)."""
    h = x
    for i, (w, b, n_in, n_out) in enumerate(net.slices):
        h = torch.baddbmm(theta[:, b].unsqueeze(-2), h, theta[:, w].reshape(-1, n_in, n_out))
        if i < len(net.slices) - 1:
            h = torch.tanh(h)
    return h


def test_flat_mlp_output_and_theta_gradient_equal_the_sliced_reference():
    torch.manual_seed(0)
    policy = BNNPolicy(4, BOX, hidden=(8, 5), posterior="gaussian")
    theta = torch.randn(6, policy.net.num_params, requires_grad=True)
    obs, weights = torch.randn(6, 7, 4), torch.randn(6, 7, 2)
    out = policy.net(theta, obs)
    (grad,) = torch.autograd.grad((out * weights).sum(), theta)
    ref = _sliced_flat_mlp(policy.net, theta, obs)
    (ref_grad,) = torch.autograd.grad((ref * weights).sum(), theta)
    assert torch.equal(out, ref) and torch.equal(grad, ref_grad)


def test_grouped_distribution_matches_one_network_per_sample():
    """The padded K-θ evaluation equals gathering θ per sample (uneven and empty groups)."""
    torch.manual_seed(0)
    policy = BNNPolicy(3, BOX, hidden=(8,), posterior="gaussian")
    k, m = 5, 40
    xi = torch.randn(k, policy.noise_dim)
    rows = torch.cat([torch.zeros(20), torch.ones(3), torch.full((17,), 3)]).long()[
        torch.randperm(m)
    ]
    batch = Batch(
        obs=torch.randn(m, 3),
        actions=torch.randn(m, 2),
        logp=torch.zeros(m),
        advantages=torch.zeros(m),
        returns=torch.zeros(m),
        values=torch.zeros(m),
        session=rows,
        xi=xi,
    )
    theta = policy.q(xi)[0]
    grouped = policy.log_prob(batch, theta)
    per_sample = policy.distribution(theta[rows], batch.obs).log_prob(batch.actions)
    assert torch.allclose(grouped, per_sample, atol=1e-6)
    params = list(policy.q.parameters())
    g_grouped = torch.autograd.grad(grouped.square().sum(), params, retain_graph=True)
    g_sample = torch.autograd.grad(per_sample.square().sum(), params)
    for a, b in zip(g_grouped, g_sample, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_grouped_distribution_is_the_padded_layout_to_the_bit():
    """Samples padded per θ row to the largest group, in batch order within a group: the
    layout's values and gradients, bit for bit (the update's results depend on it)."""
    torch.manual_seed(0)
    policy = BNNPolicy(3, BOX, hidden=(16, 16), posterior="gaussian")
    k, m = 7, 90
    xi = torch.randn(k, policy.noise_dim)
    rows = torch.cat([torch.zeros(40), torch.ones(3), torch.full((30,), 3), torch.full((17,), 6)])
    rows = rows.long()[torch.randperm(m)]
    zeros = torch.zeros(m)
    batch = Batch(torch.randn(m, 3), torch.randn(m, 2), zeros, zeros, zeros, zeros, rows, xi)
    theta = policy.q(xi)[0]
    # The reference layout: rank of each sample among its row's samples by a stable sort.
    order = torch.argsort(rows, stable=True)
    counts = torch.bincount(rows, minlength=k)
    pos = torch.empty_like(rows)
    pos[order] = torch.arange(m) - (torch.cumsum(counts, 0) - counts)[rows[order]]
    padded = torch.zeros(k, int(counts.max()), 3)
    padded[rows, pos] = batch.obs
    out = policy.net(policy.theta0 + theta, padded)[rows, pos]
    reference = policy.head(out).log_prob(batch.actions)
    grouped = policy.log_prob(batch, theta)
    assert torch.equal(grouped, reference)
    params = list(policy.q.parameters())
    g_grouped = torch.autograd.grad(grouped.square().sum(), params, retain_graph=True)
    g_reference = torch.autograd.grad(reference.square().sum(), params)
    for a, b in zip(g_grouped, g_reference, strict=True):
        assert torch.equal(a, b)


def test_acting_with_session_params_is_pi_under_the_session_theta():
    torch.manual_seed(0)
    policy = BNNPolicy(3, BOX, hidden=(8,), posterior="gaussian")
    xi, obs = policy.new_noise(torch.arange(4)), torch.randn(4, 3)
    acting = policy.act_distribution(policy.session_params(xi), obs)
    direct = policy.distribution(policy.q(xi)[0], obs)
    assert torch.allclose(acting.mean, direct.mean) and torch.equal(acting.stddev, direct.stddev)


HALF_CHEETAH_LIKE = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)


@pytest.mark.parametrize("space", [BOX, DISCRETE, HALF_CHEETAH_LIKE])
@pytest.mark.parametrize("posterior", ["gaussian", "point"])
def test_actor_draws_exactly_what_sampling_act_distribution_draws(space, posterior):
    """The rollout's fast path (θ split once, σ read once, no distribution object) against the
    straightforward ``dist = act_distribution(params, obs)``, ``dist.sample()``, ``log_prob``:
    bit-identical actions and RNG stream, log-probs equal to float32 rounding (a Box head takes
    them at the draw's own z = ε), also after rows of ``params`` are rewritten in place (new
    sessions) and with 8 slots × 6 action dims (48 values: a vectorised exp and a scalar tail,
    so shapes must match too). Acting runs without gradients, as the collector."""
    torch.manual_seed(0)
    policy = BNNPolicy(3, space, hidden=(16, 16), posterior=posterior)
    if not policy.head.discrete:
        policy.head.log_std.data.uniform_(-1.0, 0.5)  # σ ≠ 1, different per dimension
    with torch.no_grad():
        params = policy.session_params(policy.new_noise(torch.arange(8))).clone()
        _check_actor(policy, params, policy.actor(params))


def _check_actor(policy, params, act):
    for step in range(3):
        obs = torch.randn(8, 3)
        state = torch.get_rng_state()
        expected_dist = policy.act_distribution(params, obs)
        expected = expected_dist.sample()
        expected_logp = expected_dist.log_prob(expected)
        after = torch.get_rng_state()
        torch.set_rng_state(state)
        action, logp = act(obs)
        assert torch.equal(action, expected)
        if policy.head.discrete:
            assert torch.equal(logp, expected_logp)
        else:
            torch.testing.assert_close(logp, expected_logp, rtol=1e-6, atol=1e-5)
        assert torch.equal(torch.get_rng_state(), after)
        slots = torch.tensor([step, 5])  # sessions end: the collector rewrites their rows
        params[slots] = policy.session_params(policy.new_noise(slots))


def test_action_mean_actor_matches_sampling_its_distribution():
    torch.manual_seed(0)
    policy = ActionMeanPolicy(3, BOX, hidden=(8,))
    params, obs = policy.session_params(policy.new_noise(torch.arange(4))), torch.randn(4, 3)
    with torch.no_grad():
        state = torch.get_rng_state()
        dist = policy.act_distribution(params, obs)
        expected = dist.sample()
        torch.set_rng_state(state)
        action, logp = policy.actor(params)(obs)
    assert torch.equal(action, expected) and torch.equal(logp, dist.log_prob(expected))


def test_to_env_clips_box_actions_like_np_clip():
    policy = BNNPolicy(3, BOX, hidden=(8,), posterior="point")
    action = torch.tensor([[-3.0, 0.5], [2.5, float("nan")], [-2.0, 2.0]])
    got = policy.head.to_env(action)
    want = np.clip(action.numpy(), BOX.low, BOX.high)
    assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=True)


def test_low_rank_weight_posterior_steps_v_in_units_of_one_over_sqrt_d():
    """A lowrank-gaussian weight posterior defaults to V = W/√d (LowRankAffine's
    factor_scale), so that an Adam step of lr moves a column of V by ~lr, not lr·√d; an explicit
    option wins."""
    space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    policy = BNNPolicy(3, space, hidden=(16,), posterior="lowrank-gaussian")
    d = policy.net.num_params
    assert float(policy.q.transform.factor_scale) == pytest.approx(d**-0.5)
    theta = policy.q.transform.factor
    loss = policy.q(torch.randn(5, d))[0].square().sum()
    loss.backward()
    opt = torch.optim.Adam([theta], lr=1e-3)
    before = policy.q.transform.low_rank().detach().clone()
    opt.step()
    moved = (policy.q.transform.low_rank().detach() - before).norm(dim=0)
    assert torch.all(moved < 2e-3)  # each column by ~lr (at s = 1: ~lr·√d ≈ 0.009)
    explicit = BNNPolicy(
        3, space, hidden=(16,), posterior="lowrank-gaussian", posterior_options={"factor_scale": 1}
    )
    assert float(explicit.q.transform.factor_scale) == 1.0


@pytest.mark.parametrize(
    "family,options",
    [
        ("gaussian", {"init_scale": 0.3}),
        ("full-gaussian", {"init_scale": 0.3}),
        ("lowrank-gaussian", {"rank": 3, "init_scale": 0.3}),
    ],
)
def test_affine_marginal_std_is_the_row_norms_of_the_flows_matrix(family, options):
    from rl.posteriors import affine_marginal_std
    from vi_flows.flows import build

    torch.manual_seed(0)
    q = build(family, 6, **options).double()
    with torch.no_grad():  # move every parameter off its initial value
        for p in q.parameters():
            p.add_(0.2 * torch.randn_like(p))
    # the Jacobian of the affine map, by autograd: std θᵢ = ‖∂θᵢ/∂ξ‖
    jac = torch.func.jacrev(lambda x: q(x[None])[0][0])(torch.zeros(6, dtype=torch.float64))
    assert torch.allclose(affine_marginal_std(q), jac.norm(dim=1), atol=1e-10)


def test_posterior_std_is_exact_for_affine_flows_and_leaves_the_rng_alone_otherwise():
    policy = BNNPolicy(3, BOX, hidden=(4,), posterior="gaussian")
    with torch.no_grad():
        policy.q.transform.raw_scale.normal_()
    expected = float(torch.nn.functional.softplus(policy.q.transform.raw_scale.detach()).mean())
    assert policy.posterior_std() == pytest.approx(expected, rel=1e-6)

    planar = BNNPolicy(3, BOX, hidden=(4,), posterior="planar")
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first = planar.posterior_std()
    assert torch.equal(torch.get_rng_state(), state)  # the training run's stream is untouched
    assert first > 0 and planar.posterior_std() == first  # the same draws on every call


@pytest.mark.parametrize("posterior", ["gaussian", "full-gaussian", "lowrank-gaussian"])
def test_mean_params_of_an_affine_posterior_is_its_location_exactly(posterior):
    policy = BNNPolicy(3, BOX, hidden=(4,), posterior=posterior).double()
    with torch.no_grad():
        policy.q.transform.loc.normal_()
    state = torch.get_rng_state()
    assert torch.equal(policy.mean_params(), policy.q.transform.loc[None])
    assert torch.equal(torch.get_rng_state(), state)


def test_a_student_t_weight_posterior_acts_with_student_t_noise():
    """ξ of a session comes from the flow's own base: a Cauchy (ν = 1) base gives draws far
    outside anything N(0, I) gives, and its moments are not the affine Gaussian's closed form."""
    from rl.posteriors import affine_marginal_std

    options = {"base": "student-t", "df": 1.0}
    policy = BNNPolicy(3, BOX, hidden=(4,), posterior="gaussian", posterior_options=options)
    torch.manual_seed(0)
    xi = policy.new_noise(torch.arange(200))
    assert xi.shape == (200, policy.noise_dim) and float(xi.abs().max()) > 100.0
    assert affine_marginal_std(policy.q) is None
    with pytest.raises(ValueError, match="learn_df"):
        BNNPolicy(3, BOX, posterior="gaussian", posterior_options={**options, "learn_df": True})
