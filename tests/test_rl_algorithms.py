"""The update rules' pieces against hand or dense computations: PPO's KL penalty and β, TRPO's
score-covariance Fisher (Eq. 12), conjugate gradient, the rejected line search, gradient clipping,
and the linear α schedule."""

from __future__ import annotations

import dataclasses
import math
import warnings

import gymnasium as gym
import pytest
import torch
from torch.nn.utils import parameters_to_vector

import rl.algorithms.trpo as trpo_module
from rl.adapter import kl_penalty_objective
from rl.algorithms import default_config
from rl.algorithms.base import adam_step, reinforce_loss
from rl.algorithms.ppo import PPO
from rl.algorithms.trpo import TRPO, conjugate_gradient
from rl.buffer import Batch
from rl.calibration import policy_spread
from rl.config import alpha_schedule
from rl.networks import mlp
from rl.optim import _fast_adam_groups, clip_grad_norm, optimizer_step, zero_grad
from rl.policies import make_policy

BOX = gym.spaces.Box(-1.0, 1.0, (2,))


def _setup(algo: str, m: int = 24, seed: int = 0, **fields):
    """A small point-mass policy, its critic and a batch of its own actions."""
    torch.manual_seed(seed)
    cfg = default_config(algo, hidden=(4,), seed=seed, **fields)
    policy = make_policy("bnn", 3, BOX, hidden=(4,), posterior="point")
    critic = mlp(3, 1, (4,), "tanh", out_gain=1.0)
    obs = torch.randn(m, 3)
    with torch.no_grad():
        params = policy.session_params(policy.new_noise(torch.arange(m)))  # θ₀ + loc
        dist = policy.act_distribution(params, obs)
        actions = dist.sample()
        logp = dist.log_prob(actions)
    batch = Batch(
        obs=obs,
        actions=actions,
        logp=logp,
        advantages=torch.randn(m),
        returns=torch.randn(m),
        values=torch.zeros(m),
        session=torch.zeros(m, dtype=torch.long),
        xi=torch.zeros(1, 0),
    )
    return cfg, policy, critic, batch


def test_kl_penalty_objective_is_ratio_times_advantage_minus_beta_kl():
    logp_old = torch.tensor([-1.0, -0.5, -2.0])
    adv = torch.tensor([1.0, -2.0, 0.5])
    logp = torch.tensor([-0.8, -0.9, -2.0], requires_grad=True)
    s = kl_penalty_objective(logp_old, adv, beta=3.0)(logp)
    r = torch.exp(logp.detach() - logp_old)
    expected = r * adv - 3.0 * ((r - 1.0) - torch.log(r))
    torch.testing.assert_close(s.detach(), expected)
    # d s / d log π = r Â − β (r − 1): the penalty pulls r back to 1 and vanishes there.
    (grad,) = torch.autograd.grad(s.sum(), logp)
    torch.testing.assert_close(grad, r * adv - 3.0 * (r - 1.0))


@pytest.mark.parametrize("kl_target, factor", [(1e-12, 2.0), (1e6, 0.5)])
def test_ppo_beta_doubles_above_and_halves_below_the_target(kl_target, factor):
    cfg, policy, critic, batch = _setup(
        "ppo", objective="kl-penalty", kl_coef=0.3, kl_target=kl_target, epochs=2, lr=1e-2
    )
    algo = PPO(cfg, policy, critic)
    stats = algo.update(batch, alpha=1.0)
    assert stats["kl"] > 0
    assert algo.beta == pytest.approx(0.3 * factor) and stats["kl_coef"] == algo.beta


def test_score_fisher_is_the_covariance_of_per_sample_scores():
    cfg, policy, critic, batch = _setup("trpo", fisher="score", cg_damping=0.1)
    algo = TRPO(cfg, policy, critic)
    with torch.no_grad():
        old = algo._dists(batch)
    fvp = algo._fvp(batch, old)
    # Dense Eq. 12: F = (1/M) Σ_i g_i g_iᵀ with g_i = ∇ log π(a_i|s_i), one autograd call each.
    logp = algo._dists(batch).log_prob(batch.actions)
    rows = []
    for i in range(len(batch)):
        grads = torch.autograd.grad(logp[i], algo.params, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1)
                    for g, p in zip(grads, algo.params, strict=True)
                ]
            )
        )
    scores = torch.stack(rows)
    dense = scores.T @ scores / len(batch) + 0.1 * torch.eye(scores.shape[1])
    v = torch.randn(scores.shape[1])
    torch.testing.assert_close(fvp(v), dense @ v, rtol=1e-4, atol=1e-5)


def test_conjugate_gradient_matches_a_dense_solve():
    torch.manual_seed(0)
    a = torch.randn(6, 6, dtype=torch.float64)
    spd = a @ a.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    x = conjugate_gradient(lambda v: spd @ v, b, iters=6)
    torch.testing.assert_close(x, torch.linalg.solve(spd, b), rtol=1e-6, atol=1e-8)


def test_rejected_line_search_restores_the_parameters(monkeypatch):
    cfg, policy, critic, batch = _setup("trpo", backtrack_steps=4)
    algo = TRPO(cfg, policy, critic)
    start = parameters_to_vector(algo.params).detach().clone()
    # Step against the gradient: every backtracked step lowers the surrogate and is rejected.
    monkeypatch.setattr(trpo_module, "conjugate_gradient", lambda fvp, b, iters: -b)
    stats = algo.update(batch, alpha=1.0)
    assert stats["step_frac"] == 0.0 and stats["kl"] == 0.0
    assert torch.equal(parameters_to_vector(algo.params).detach(), start)


@pytest.mark.parametrize("max_norm, expected_step", [(0.5, 0.5), (0.0, 200.0)])
def test_adam_step_clips_the_gradient_norm(max_norm, expected_step):
    p = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([p], lr=1.0)
    norm = adam_step(100.0 * p.sum(), opt, max_norm)
    assert norm == pytest.approx(200.0)  # the pre-clipping norm, ‖(100, 100, 100, 100)‖
    assert float(p.detach().norm()) == pytest.approx(expected_step)


def test_linear_alpha_schedule_ramps_then_holds():
    cfg = default_config(
        "vppo", alpha=1e-2, alpha_end=1e-4, alpha_schedule="linear", alpha_updates=10
    )
    schedule = alpha_schedule(cfg)
    assert schedule(0) == pytest.approx(1e-2)
    assert schedule(5) == pytest.approx(0.5 * (1e-2 + 1e-4))
    assert schedule(10) == pytest.approx(1e-4) and schedule(50) == pytest.approx(1e-4)
    values = [schedule(t) for t in range(11)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


def _adam_steps(algo) -> int:
    return int(next(iter(algo.opt.state.values()))["step"])


def test_ppo_target_kl_ends_the_update_after_the_epoch_whose_mean_kl_exceeds_it():
    runs = {}
    for target_kl in (0.0, 1e-12, 1e3):
        cfg, policy, critic, batch = _setup(
            "ppo", epochs=10, minibatch_size=8, lr=1e-2, target_kl=target_kl
        )
        algo = PPO(cfg, policy, critic)
        stats = algo.update(batch, alpha=1.0)
        assert 0.0 <= stats["clipfrac"] <= 1.0
        runs[target_kl] = (_adam_steps(algo), stats["step_frac"])
    # 3 minibatches per epoch. The first meets π_old (KL̂ = 0), the next two have moved: the
    # first epoch's mean KL̂ exceeds 1e-12 and the update ends after its 3 steps.
    assert runs == {0.0: (30, 1.0), 1e-12: (3, pytest.approx(0.1)), 1e3: (30, 1.0)}


def test_ppo_target_kl_reads_the_mean_over_the_epoch_not_one_minibatch(monkeypatch):
    """One minibatch estimate above the target, even the epoch's last (CleanRL's rule), does not
    end the update; an epoch mean above it does."""
    import rl.algorithms.ppo as ppo_module

    def fake_means(per_minibatch):
        kls, calls = iter(per_minibatch), iter(range(10**6))

        def global_group_means(x, sizes):
            # per epoch: the clip fractions first, then the KL̂s (target_kl > 0)
            is_kl = next(calls) % 2 == 1
            return [next(kls) if is_kl else 0.0 for _ in sizes]

        return global_group_means

    cases = (
        ([0.0, 0.0, 0.5] * 10, 30),  # every epoch mean 1/6 < 0.2, though its last one is 0.5
        ([0.0, 0.5, 0.5] * 10, 3),  # the first epoch's mean 1/3 > 0.2
        ([0.0] * 3 + [0.3] * 27, 6),  # the second epoch's mean 0.3 (the running mean 0.15)
    )
    for per_minibatch, steps in cases:
        cfg, policy, critic, batch = _setup(
            "ppo", epochs=10, minibatch_size=8, lr=1e-2, target_kl=0.2
        )
        monkeypatch.setattr(ppo_module, "global_group_means", fake_means(per_minibatch))
        algo = PPO(cfg, policy, critic)
        stats = algo.update(batch, alpha=1.0)
        assert _adam_steps(algo) == steps
        assert stats["step_frac"] == pytest.approx(steps / 30)


def _value_steps(algo) -> int:
    return int(next(iter(algo.value_opt.state.values()))["step"])


@pytest.mark.parametrize(
    "fields, policy_steps, value_steps",
    [
        ({"value_epochs": 10}, 30, 30),  # every critic epoch shares the policy's minibatches
        ({"value_epochs": 4}, 30, 12),  # the first 4 epochs share them, the critic stops there
        ({"value_epochs": 13}, 30, 39),  # 10 shared, 3 after on the critic's own permutation
        ({"value_epochs": 10, "value_minibatch_size": 12}, 30, 20),  # other size: all after
        ({"value_epochs": 10, "target_kl": 1e-12}, 3, 30),  # 1 shared, the 9 left after
    ],
)
def test_ppo_critic_takes_its_value_epochs_shared_or_not(fields, policy_steps, value_steps):
    fields = {"value_minibatch_size": 8, **fields}  # 24 samples: 3 minibatches per epoch
    cfg, policy, critic, batch = _setup("ppo", epochs=10, minibatch_size=8, lr=1e-2, **fields)
    algo = PPO(cfg, policy, critic)
    stats = algo.update(batch, alpha=1.0)
    assert (_adam_steps(algo), _value_steps(algo)) == (policy_steps, value_steps)
    assert math.isfinite(stats["value_loss"]) and stats["value_loss"] > 0


def test_joint_step_is_the_two_separate_steps_to_the_bit():
    """One backward of policy loss + value loss, then each network's own clip and Adam step,
    against the policy's adam_step and the critic's step taken apart (the networks share no
    parameter, so the sum's gradient is each loss's own)."""
    from rl.value import value_loss, value_step

    results = []
    for joint in (True, False):
        cfg, policy, critic, batch = _setup("ppo", max_grad_norm=0.05, lr=1e-2)
        algo = PPO(cfg, policy, critic)
        for _ in range(3):
            loss = reinforce_loss(algo, batch, 1.0)
            if joint:
                norm, value = algo.joint_step(loss, batch)
            else:
                norm = adam_step(loss, algo.opt, cfg.max_grad_norm)
                value = value_loss(critic, batch.obs, batch.returns)  # fit_value's step
                zero_grad(algo.value_opt)
                value.backward()
                value_step(algo.value_opt, list(critic.parameters()), cfg.max_grad_norm)
        results.append(
            (
                norm,
                float(value.detach()),
                [p.detach().clone() for p in (*policy.parameters(), *critic.parameters())],
            )
        )
    (norm_a, value_a, params_a), (norm_b, value_b, params_b) = results
    assert norm_a == norm_b and value_a == value_b
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b, strict=True))


def test_ppo_anneal_lr_decays_linearly_per_update():
    cfg, policy, critic, batch = _setup("ppo", epochs=1, anneal_lr=True, lr=1e-3)
    cfg = dataclasses.replace(cfg, total_steps=4 * cfg.batch_size)  # 4 updates in the run
    algo = PPO(cfg, policy, critic)
    lrs = [algo.update(batch, alpha=1.0)["lr"] for _ in range(3)]
    assert lrs == pytest.approx([1e-3, 0.75e-3, 0.5e-3])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("max_norm", [0.3, 0.5, 0.7, 1e3, 3e38, float("inf")])
@pytest.mark.parametrize("scale", [1.0, 1e4, 1e-7, float("inf"), float("nan")])
def test_clip_grad_norm_is_torchs_clip_to_the_bit(max_norm, dtype, scale):
    """The lean clip (run after every optimizer step) against torch's clip_grad_norm_: the same
    returned norm and clipped gradients, bit for bit, including a parameter without a gradient,
    over many draws and limits that are not powers of two (the coefficient's rounding: torch
    takes max_norm · (1 / (‖g‖ + 1e-6)), two roundings), norms around every limit, tiny and
    non-finite gradients and a dtype the lean path leaves to torch."""
    torch.manual_seed(0)
    sizes = [(64, 3), (64,), (64, 64), (1,), (7,)]
    clipped = 0
    for _ in range(30):
        ours = [torch.nn.Parameter(torch.randn(s, dtype=dtype)) for s in sizes]
        theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
        for a, b in zip(ours[:-1], theirs[:-1], strict=True):  # the last one has no gradient
            a.grad = torch.randn_like(a) * torch.rand(()).to(dtype) * scale
            b.grad = a.grad.clone()
        before = [a.grad.clone() for a in ours[:-1]]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy's scalar arithmetic stays quiet
            norm = clip_grad_norm(ours, max_norm)
        expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, foreach=True)
        torch.testing.assert_close(norm, expected, rtol=0, atol=0, equal_nan=True)
        for a, b in zip(ours[:-1], theirs[:-1], strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, equal_nan=True)
        clipped += not all(torch.equal(a.grad, g) for a, g in zip(ours[:-1], before, strict=True))
        assert ours[-1].grad is None
    if math.isfinite(scale) and scale * 66 > 2 * max_norm:  # ‖g‖ ≈ 66·scale·U(0, 1)
        assert clipped > 0  # the comparison saw clipped gradients


@pytest.mark.parametrize(
    "options",
    [
        {"eps": 1e-5},
        {"weight_decay": 0.1, "maximize": True, "betas": (0.8, 0.99)},
        {"amsgrad": True},  # not the lean path: torch's step
    ],
)
def test_optimizer_step_is_torchs_fused_adam_step_to_the_bit(options):
    """The lean Adam step (run after every backward pass) against ``Adam.step``: the same
    parameters and state, bit for bit, over steps with a changing lr, two parameter groups and
    a parameter that gets no gradient; ``zero_grad`` leaves every gradient None."""
    torch.manual_seed(0)
    sizes = [(64, 3), (64,), (64, 64), (1,), (7,)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in sizes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]

    def make(params):
        groups = [{"params": params[:3]}, {"params": params[3:], "lr": 3e-3}]
        return torch.optim.Adam(groups, lr=1e-3, fused=True, **options)

    opt_ours, opt_theirs = make(ours), make(theirs)
    for step in range(6):
        zero_grad(opt_ours)
        opt_theirs.zero_grad()
        assert all(p.grad is None for p in ours)
        for a, b in zip(ours[:-1], theirs[:-1], strict=True):  # the last one has no gradient
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        if step == 3:
            for opt in (opt_ours, opt_theirs):
                opt.param_groups[0]["lr"] = 5e-4
        optimizer_step(opt_ours)
        opt_theirs.step()
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a, b)
        lean = _fast_adam_groups(opt_ours) is not None  # after the first step (it makes state)
        assert lean == (not options.get("amsgrad"))
    for a, b in zip(ours[:-1], theirs[:-1], strict=True):
        for key, value in opt_theirs.state[b].items():
            assert torch.equal(opt_ours.state[a][key], value)
    assert ours[-1] not in opt_ours.state
    torch.optim.lr_scheduler.StepLR(opt_ours, 1)  # wraps the instance's step: torch's path runs
    assert _fast_adam_groups(opt_ours) is None


def test_posterior_spread_is_the_std_of_the_policy_output_over_sessions():
    """posterior_spread against a direct computation: K sessions θ_k = θ₀ + q(ξ_k) evaluated at
    the same states, std over k of the action mean; wider q ⇒ larger spread; a point mass
    spreads nothing; the global RNG is left as found."""
    from rl.algorithms.base import posterior_spread

    obs = torch.randn(16, 3)
    spreads = []
    for scale in (0.01, 0.1):
        torch.manual_seed(0)
        policy = make_policy("bnn", 3, BOX, hidden=(16,), posterior_options={"init_scale": scale})
        torch.manual_seed(1)
        state = torch.get_rng_state()
        got = posterior_spread(policy, obs, draws=6)
        assert torch.equal(torch.get_rng_state(), state)
        torch.manual_seed(0)  # the probe sessions' noise
        xi = torch.randn(6, policy.noise_dim)
        with torch.no_grad():
            means = policy.evaluate(policy.q(xi)[0], obs.expand(6, -1, -1)).mean
        assert got["policy_spread"] == pytest.approx(float(means.std(0).mean()), rel=1e-5)
        # the calibration's ρ on the same sessions (KL units, against the ξ = 0 policy)
        assert got["policy_spread_kl"] == pytest.approx(policy_spread(policy, obs, xi), rel=1e-5)
        assert got["action_std"] == pytest.approx(float(policy.head.log_std.detach().exp().mean()))
        spreads.append(got["policy_spread"])
    assert spreads[1] > 5 * spreads[0] > 0
    point = make_policy("bnn", 3, BOX, hidden=(16,), posterior="point")
    assert posterior_spread(point, obs)["policy_spread"] == 0.0
    particles = make_policy("particles", 3, BOX, hidden=(16,), init_std=0.1)
    got = posterior_spread(particles, obs)
    assert got["policy_spread"] > 0 and math.isnan(got["policy_spread_kl"])  # no ξ = 0 centre


def test_posterior_spread_of_a_discrete_policy_is_in_probabilities():
    from rl.algorithms.base import posterior_spread

    torch.manual_seed(0)
    policy = make_policy(
        "bnn", 4, gym.spaces.Discrete(3), hidden=(16,), posterior_options={"init_scale": 0.3}
    )
    got = posterior_spread(policy, torch.randn(8, 4))
    assert 0 < got["policy_spread"] < 0.5 and math.isnan(got["action_std"])
