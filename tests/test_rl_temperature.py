"""Automatic temperature (rl.temperature): the entropy estimate, the dual step and its fixed point.

The toy fixed point: a Gaussian posterior q over P parameters fitted by the algorithms' own loss,
α·kl_loss(q, R/α), against R(θ) = g·θ − ½ c‖θ‖² (a fixed linear gradient g plus curvature c).
At temperature α the posterior's optimum is σ_i² = α/c, so the entropy target σ* is met exactly
at the multiplier α* = c σ*²: auto α must find it from far above and far below.
"""

from __future__ import annotations

import csv
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl.algorithms import default_config
from rl.cli import main
from rl.policies import ActionMeanPolicy, BNNPolicy, ParticlePolicy
from rl.run import build_policy
from rl.temperature import (
    HALF_LOG_2PIE,
    AutoTemperature,
    entropy_per_param,
    gaussian_entropy_per_param,
    policy_entropy_per_param,
)
from rl.trainer import train
from vi_flows.flows import build
from vi_flows.objectives import kl_loss

BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


@pytest.mark.parametrize("family", ["gaussian", "lowrank-gaussian", "full-gaussian"])
def test_entropy_of_affine_flows_is_the_closed_form(family):
    torch.manual_seed(0)
    q = build(family, 7, init_scale=0.3)
    with torch.no_grad():  # move off the initial (diagonal) point so the low-rank part counts
        for p in q.parameters():
            p.add_(0.2 * torch.randn_like(p))
    matrix = torch.func.jacrev(lambda x: q(x)[0])(torch.zeros(7))
    exact = HALF_LOG_2PIE + float(torch.linalg.slogdet(matrix.detach())[1]) / 7
    assert entropy_per_param(q, torch.zeros(1, 7)) == pytest.approx(exact, abs=1e-5)
    assert entropy_per_param(q, torch.randn(5, 7)) == pytest.approx(exact, abs=1e-5)


def test_entropy_of_a_nonlinear_flow_matches_a_plain_monte_carlo_estimate():
    torch.manual_seed(0)
    q = build("planar", 3, layers=4)
    with torch.no_grad():
        for p in q.parameters():
            p.add_(0.5 * torch.randn_like(p))
    xi = torch.randn(20_000, 3)
    plain = -float(q(xi)[1].detach().mean()) / 3  # −E[log q] / d, the definition
    assert entropy_per_param(q, xi) == pytest.approx(plain, abs=0.02)


@pytest.mark.parametrize(
    ("family", "hidden"),
    [("gaussian", (64, 64)), ("lowrank-gaussian", (64, 64)), ("full-gaussian", (16,))],
)
def test_the_dual_steps_affine_entropy_is_entropy_per_param_at_zero(family, hidden):
    """policy_entropy_per_param's closed-form path for affine flows (run after every optimizer
    step) against the straightforward entropy_per_param(q, ξ = 0) through the flow's forward,
    at a real network's size (d = 4546, log q(h(0)) ≈ 1.7·10⁴: the reference's float32 round
    trip through log q rounds h by ~ulp(10⁴)/d ≈ 2·10⁻⁷)."""
    torch.manual_seed(0)
    options = {"init_scale": 0.01}
    policy = BNNPolicy(3, BOX, hidden=hidden, posterior=family, posterior_options=options)
    for _ in range(3):
        with torch.no_grad():
            for p in policy.q.parameters():
                p.add_(0.1 * torch.randn_like(p))
        reference = entropy_per_param(policy.q, torch.zeros(1, policy.noise_dim))
        assert policy_entropy_per_param(policy) == pytest.approx(reference, abs=2e-6)


def test_policy_entropy_per_param_for_each_posterior_kind():
    torch.manual_seed(0)
    bnn = BNNPolicy(3, BOX, hidden=(8,), posterior_options={"init_scale": 0.05})
    assert policy_entropy_per_param(bnn) == pytest.approx(gaussian_entropy_per_param(0.05))
    lowrank = BNNPolicy(3, BOX, hidden=(8,), posterior="lowrank-gaussian")
    assert math.isfinite(policy_entropy_per_param(lowrank))
    action_mean = ActionMeanPolicy(3, BOX, hidden=(8,))
    obs = torch.randn(11, 3)
    log_std = action_mean.q_at(obs).moments()[1].detach()
    expected = HALF_LOG_2PIE + float(log_std.mean())
    assert policy_entropy_per_param(action_mean, obs) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="obs"):
        policy_entropy_per_param(action_mean)
    for no_density in [BNNPolicy(3, BOX, posterior="point"), ParticlePolicy(3, BOX)]:
        with pytest.raises(ValueError, match="constant alpha_schedule"):
            policy_entropy_per_param(no_density)


@pytest.mark.parametrize("family", ["gaussian", "lowrank-gaussian"])
def test_dual_step_moves_alpha_towards_the_entropy_target(family):
    target = 0.05
    for std, direction in [(0.005, +1), (0.5, -1), (target, 0)]:
        q = build(family, 40, init_scale=std)  # low-rank: V starts small, σ̄ ≈ D
        temp = AutoTemperature(target, init_alpha=1e-3, min_alpha=1e-30, max_alpha=1e30)
        logs = temp.update(entropy_per_param(q, torch.zeros(1, 40)))
        assert logs["entropy_std"] == pytest.approx(std, rel=1e-2)
        assert logs["entropy_target"] == pytest.approx(gaussian_entropy_per_param(target))
        change = math.log(logs["alpha_next"] / 1e-3)
        gap = logs["entropy_per_param"] - logs["entropy_target"]
        # the integral step η·gap (at most max_step) plus the proportional term κ·gap
        integral = min(max(temp.lr * gap, -temp.max_step), temp.max_step)
        assert change == pytest.approx(-(integral + temp.kp * gap), rel=1e-6, abs=1e-9)
        if direction == 0:
            assert abs(gap) < 0.01
        else:
            assert direction * change > 0.5


def test_dual_step_is_bounded_and_clipped():
    temp = AutoTemperature(0.1, init_alpha=1e-3, lr=10.0, kp=0.0, max_step=0.5, min_alpha=1e-4)
    temp.update(temp.entropy_target - 3.0)
    assert temp.alpha == pytest.approx(1e-3 * math.exp(0.5))
    for _ in range(20):
        temp.update(temp.entropy_target + 3.0)
    assert temp.alpha == pytest.approx(1e-4)


def _toy(
    init_alpha: float,
    *,
    curvature: float,
    init_scale: float,
    updates: int,
    seed: int = 0,
    steps_per_dual: int = 1,
):
    """Fit q by the algorithms' loss α·kl_loss(q, R/α) for 20 Adam steps per update with a dual
    step after every ``steps_per_dual`` Adam steps (1: as the algorithms do); returns the
    temperature, the last dual step's logs and the largest σ̄ seen."""
    torch.manual_seed(seed)
    dim, target = 16, 0.1
    q = build("gaussian", dim, init_scale=init_scale)
    grad = torch.linspace(-1.0, 1.0, dim)  # the fixed linear part of the reward

    def reward(theta: torch.Tensor) -> torch.Tensor:
        return theta @ grad - 0.5 * curvature * theta.square().sum(-1)

    opt = torch.optim.Adam(q.parameters(), lr=0.05)
    temp = AutoTemperature(target, init_alpha=init_alpha, min_alpha=1e-8, max_alpha=10.0)
    logs: dict[str, float] = {}
    widest = 0.0
    for step in range(20 * updates):
        alpha = temp.alpha
        loss = alpha * kl_loss(q, lambda theta, a=alpha: reward(theta) / a, 32)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % steps_per_dual == 0:
            logs = temp.update(entropy_per_param(q, torch.zeros(1, dim)))
            widest = max(widest, logs["entropy_std"])
    return temp, logs, widest


@pytest.mark.parametrize("init_alpha", [2.0, 1e-6])
def test_auto_alpha_holds_the_toy_posterior_at_its_entropy_target(init_alpha):
    curvature, target = 4.0, 0.1
    temp, logs, _ = _toy(init_alpha, curvature=curvature, init_scale=0.3, updates=80)
    assert logs["entropy_std"] == pytest.approx(target, rel=0.05)
    # the integral part of log α is the multiplier α* (α itself adds κ·(h − h*) of Adam's jitter)
    assert math.exp(temp.log_alpha) == pytest.approx(curvature * target**2, rel=0.1)


def test_a_dual_step_per_optimizer_step_keeps_the_start_from_widening_q():
    # The posterior starts at its target σ* = 0.1 with α 50× the multiplier α* = c σ*²: the
    # entropy gradient widens q at Adam's speed (lr = 0.05 per step here) until α has come
    # down. Stepping α after every Adam step bounds the overshoot; stepping it after every 20
    # (once per "update") lets q widen first.
    widest = {
        every: _toy(2.0, curvature=4.0, init_scale=0.1, updates=40, steps_per_dual=every)[2]
        for every in (1, 20)
    }
    assert widest[1] < 1.5 * 0.1
    assert widest[20] > 2 * widest[1]


def test_the_proportional_term_reacts_at_once_and_the_integral_keeps_the_multiplier():
    temp = AutoTemperature(0.1, init_alpha=1e-3, lr=0.5, kp=20.0)
    temp.update(temp.entropy_target + 0.05)  # 5 % wider than the target
    assert temp.log_alpha == pytest.approx(math.log(1e-3) - 0.5 * 0.05)
    assert temp.alpha == pytest.approx(math.exp(temp.log_alpha - 20.0 * 0.05))
    temp.update(temp.entropy_target)  # back on target: the P term vanishes, I stays
    assert temp.alpha == pytest.approx(math.exp(math.log(1e-3) - 0.5 * 0.05))
    temp.update(temp.entropy_target - 10.0)  # α never leaves [min_alpha, max_alpha]
    assert temp.alpha == pytest.approx(1.0)


def test_auto_alpha_goes_to_its_floor_when_the_reward_ignores_the_width():
    # R linear in θ: the width costs nothing, the constraint is slack and its multiplier is 0.
    temp, logs, _ = _toy(1e-3, curvature=0.0, init_scale=1.0, updates=20)
    assert logs["entropy_std"] > 0.1
    assert temp.alpha == pytest.approx(1e-8)


def test_state_round_trip(tmp_path):
    temp = AutoTemperature(0.05, init_alpha=1e-2)
    for h in [-3.0, -2.5, -4.0]:
        temp.update(h)
    torch.save(temp.state_dict(), tmp_path / "temp.pt")
    state = torch.load(tmp_path / "temp.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    other = AutoTemperature(0.05, init_alpha=1.0)
    other.load_state_dict(state)
    assert other.alpha == temp.alpha and other.updates == 3
    assert other.update(-2.0) == temp.update(-2.0)
    with pytest.raises(ValueError, match="log_alpha"):
        other.load_state_dict({"updates": torch.tensor(1)})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"std_target": 0.0}, "std_target"),
        ({"std_target": 0.1, "init_alpha": 2.0}, "init_alpha"),
        ({"std_target": 0.1, "lr": -1.0}, "lr"),
    ],
)
def test_bad_settings_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AutoTemperature(**kwargs)


def test_a_non_finite_entropy_is_refused():
    with pytest.raises(ValueError, match="finite"):
        AutoTemperature(0.1).update(float("nan"))


# --- auto α in the trainer (rl.config alpha_schedule="auto") ---

SMALL = {
    "env_id": "CartPole-v1",
    "num_envs": 2,
    "rollout_steps": 16,
    "hidden": (16,),
    "tensorboard": False,
    "total_steps": 96,
}


def _rows(out) -> list[dict]:
    with (out / "progress.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("target, direction", [(3.0, +1), (0.001, -1)])
def test_trainer_steps_alpha_towards_the_target_and_logs_it(target, direction, tmp_path):
    # The posterior's σ̄ stays well inside (0.001, 3) here: a target above it must raise α at
    # every update, one below it lower α.
    cfg = default_config(
        "vppo",
        **SMALL,
        alpha_schedule="auto",
        posterior_std_target=target,
        alpha=1e-3,
        posterior_options='{"init_scale": 0.05}',  # not at σ*, where auto α starts it
    )
    train(cfg, tmp_path, progress=False)
    rows = _rows(tmp_path)
    alphas = [float(r["alpha"]) for r in rows]
    assert alphas[0] == pytest.approx(1e-3)
    # α may sit at a clip: from σ̄ = 0.05 the P term alone asks for far more than 1 or 1e-8
    assert all(direction * (b - a) >= 0 for a, b in zip(alphas, alphas[1:], strict=False))
    assert direction * (alphas[-1] - alphas[0]) > 0
    for row in rows:
        assert float(row["entropy_target"]) == pytest.approx(gaussian_entropy_per_param(target))
        assert 3 * 0.001 < float(row["entropy_std"]) < 3.0 / 3
        assert float(row["entropy_per_param"]) == pytest.approx(
            gaussian_entropy_per_param(float(row["entropy_std"]))
        )


def test_auto_alpha_is_the_default_where_there_is_a_density():
    for algo in ["vppo", "vtrpo", "vreinforce"]:
        assert default_config(algo).alpha_schedule == "auto"
    for algo in ["ppo", "trpo", "reinforce", "svpg"]:  # no posterior density: α is unused
        assert default_config(algo).alpha_schedule == "constant"
    assert default_config("vppo", alpha_schedule="constant").alpha_schedule == "constant"


def test_auto_alpha_starts_the_posterior_at_its_target(tmp_path):
    for fields, std in [({}, 0.02), ({"alpha_schedule": "constant"}, 0.01)]:
        cfg = default_config("vppo", **SMALL, posterior_std_target=0.02, **fields)
        policy = build_policy(cfg, 4, gym.spaces.Discrete(2))
        assert policy_entropy_per_param(policy) == pytest.approx(gaussian_entropy_per_param(std))


@pytest.mark.parametrize(
    "algo, fields, match",
    [
        ("ppo", {}, "'ppo' uses a point mass"),
        ("svpg", {}, "'svpg' uses a point mass"),
        ("vppo", {"posterior_std_target": 0.0}, "posterior_std_target must be > 0"),
        ("vppo", {"alpha_lr": float("nan")}, "alpha_lr must be > 0"),
        ("vppo", {"alpha_min": -1.0}, "alpha_min must be > 0"),
        ("vppo", {"alpha": 2.0}, r"alpha must lie in \[alpha_min, alpha_max\]"),
        ("vppo", {"alpha_min": 1e-2, "alpha_max": 1e-3}, "alpha must lie in"),
    ],
)
def test_auto_alpha_bad_settings_are_one_clear_error(algo, fields, match):
    with pytest.raises(ValueError, match=match):
        default_config(algo, alpha_schedule="auto", **fields)


def test_auto_alpha_without_a_density_is_one_line_before_training(tmp_path, capsys):
    base = ["train", "--env", "CartPole-v1", "--no-preset", "--steps", "32", "--quiet"]
    base += ["--set", "num_envs=2", "--set", "rollout_steps=16", "--set", "alpha_schedule=auto"]
    for extra, message in [
        (["--algo", "svpg"], "needs a posterior with a density"),
        (["--set", "posterior=point"], "'vppo' uses a point mass"),
    ]:
        assert main([*base, *extra, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert not (tmp_path / "x").exists()
