"""The calibrated default σ* of auto α (rl.calibration, posterior_std_target=None)."""

from __future__ import annotations

import csv
import json
import math

import gymnasium as gym
import pytest
import torch
from torch.distributions import Normal

from rl.algorithms import default_config
from rl.calibration import CALIBRATION_DRAWS, calibrate_std, initial_states, policy_spread
from rl.cli import main
from rl.config import alpha_schedule, with_overrides
from rl.policies import BNNPolicy
from rl.run import FIXED_STD_TARGET, build_policy, resolve_std_target
from rl.temperature import gaussian_entropy_per_param, policy_entropy_per_param
from rl.trainer import train

BOX = gym.spaces.Box(-1.0, 1.0, (2,))


def _builder(hidden=(16, 16), log_std=0.0, activation="tanh", space=BOX, obs_dim=3):
    def build(sigma: float) -> BNNPolicy:
        return BNNPolicy(
            obs_dim, space, hidden, "gaussian", {"init_scale": sigma}, log_std, True, activation
        )

    return build


def test_spread_of_a_gaussian_head_is_the_rms_mean_shift_in_action_noise_units():
    torch.manual_seed(0)
    policy = _builder(log_std=math.log(0.5))(0.05)
    obs, xi = torch.randn(20, 3), torch.randn(6, policy.noise_dim)
    with torch.no_grad():
        center = policy.session_params(torch.zeros(1, policy.noise_dim)).expand(20, -1)
        mu0 = policy.act_distribution(center, obs).mean
        params = policy.session_params(xi)
        shifts = torch.stack(
            [
                policy.act_distribution(params[k : k + 1].expand(20, -1), obs).mean - mu0
                for k in range(6)
            ]
        )
    # KL of two Gaussians with the same σ_a: |Δμ|² / (2σ_a²) summed over action dimensions
    expected = math.sqrt(float((shifts / 0.5).pow(2).sum(-1).mean()))
    assert policy_spread(policy, obs, xi) == pytest.approx(expected, rel=1e-5)
    assert policy_spread(_builder()(1e-9), obs, xi) < 1e-5  # a point mass does not move it


@pytest.mark.parametrize("space", [BOX, gym.spaces.Discrete(3)])
def test_calibration_hits_the_target_and_leaves_the_rng_alone(space):
    build, obs = _builder(space=space), torch.randn(32, 3)
    torch.manual_seed(1)
    before = torch.get_rng_state()
    sigma = calibrate_std(build, obs, target=0.04)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(1)
    policy = build(sigma)
    rho = policy_spread(policy, obs, torch.randn(64, policy.noise_dim))  # fresh draws
    assert rho == pytest.approx(0.04, rel=0.15)


def test_calibrated_sigma_follows_the_action_noise_and_dimension():
    def calibrated(obs_dim: int = 3, **kw) -> float:
        torch.manual_seed(0)
        obs = torch.randn(64, obs_dim)
        return calibrate_std(_builder(obs_dim=obs_dim, **kw), obs, target=0.03)

    base = calibrated()
    # the spread is measured in units of the action noise: 4× less noise, ~4× narrower σ*
    assert calibrated(log_std=math.log(0.25)) / base == pytest.approx(0.25, rel=0.1)
    # KL adds up over action dimensions: 4× as many, ~2× narrower σ*
    wide = gym.spaces.Box(-1.0, 1.0, (8,))
    assert calibrated(space=wide) / base == pytest.approx(0.5, rel=0.2)
    # HalfCheetah's regime (17 normalised inputs, 256-256 ReLU, 6 actions, noise e^-2) against
    # Pendulum's (3 inputs, 64-64 tanh, 1 action, noise 1): one fixed σ* is 10× off or more
    pendulum = calibrated(space=gym.spaces.Box(-1.0, 1.0, (1,)), hidden=(64, 64))
    cheetah = calibrated(
        obs_dim=17,
        space=gym.spaces.Box(-1.0, 1.0, (6,)),
        hidden=(256, 256),
        activation="relu",
        log_std=-2.0,
    )
    assert pendulum / cheetah > 10


class _Deaf:
    """A policy that ignores its θ (what policy_spread reads of a policy, and nothing more)."""

    noise_dim = 3

    def session_params(self, xi):
        return torch.zeros(xi.shape[0], 1)

    def act_distribution(self, params, obs):
        return Normal(torch.zeros(obs.shape[0]), 1.0)

    def sessions_distribution(self, params, obs):
        return Normal(torch.zeros(params.shape[0], obs.shape[0]), 1.0)


def test_a_calibration_that_does_not_converge_says_so():
    build, obs = _builder(), torch.randn(16, 3)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="did not converge"):
        sigma = calibrate_std(build, obs, target=0.03, steps=1, tol=1e-9)
    # it returns the last step's σ = σ₀ ρ*/ρ(σ₀), not σ₀: the spread at σ₀ on the same
    # network (the seed's) and the same draws
    torch.manual_seed(0)
    policy = build(0.01)
    rho = policy_spread(policy, obs, torch.randn(CALIBRATION_DRAWS, policy.noise_dim))
    assert sigma == pytest.approx(0.01 * 0.03 / rho, rel=1e-6)
    assert abs(sigma - 0.01) > 1e-4


def test_calibration_refuses_a_posterior_that_moves_nothing():
    with pytest.raises(ValueError, match="does not move the policy"):
        calibrate_std(lambda s: _Deaf(), torch.zeros(4, 3), target=0.03)
    with pytest.raises(ValueError, match="policy_spread_target must be > 0"):
        calibrate_std(_builder(), torch.zeros(4, 3), target=0.0)


def test_initial_states_are_reset_states_or_normal_draws():
    states = initial_states("CartPole-v1", 4, normalized=False, seed=0, n=8)
    env = gym.make("CartPole-v1")
    first = torch.as_tensor(env.reset(seed=0)[0], dtype=torch.float32)
    assert states.shape == (8, 4) and torch.equal(states[0], first)
    assert states.abs().max() <= 0.05  # CartPole resets within ±0.05
    normal = initial_states("CartPole-v1", 4, normalized=True, seed=0, n=500)
    assert normal.std().item() == pytest.approx(1.0, abs=0.1)


def test_resolve_only_calibrates_the_default_of_a_weight_posterior_under_auto_alpha():
    space, n = gym.spaces.Discrete(2), 4
    small = {"env_id": "CartPole-v1", "hidden": (16,)}
    cfg, calibrated = resolve_std_target(default_config("vppo", **small), n, space)
    assert calibrated and 0 < cfg.posterior_std_target < 1
    for fields, expected in [
        ({"posterior_std_target": 0.003}, 0.003),  # set by hand: kept
        ({"policy": "action-mean"}, FIXED_STD_TARGET),  # θ(s) is not weights
        ({"posterior_options": '{"init_scale": 0.02}'}, 0.02),  # the width is fixed already
        ({"alpha_schedule": "constant"}, None),  # σ* is unused
    ]:
        resolved, calibrated = resolve_std_target(
            default_config("vppo", **small, **fields), n, space
        )
        assert not calibrated and resolved.posterior_std_target == expected, fields
    assert (
        resolve_std_target(default_config("ppo", **small), n, space)[0].posterior_std_target is None
    )


def test_unset_target_parses_and_cannot_build_auto_alpha():
    cfg = default_config("vppo")
    assert cfg.posterior_std_target is None
    assert with_overrides(cfg, {"posterior_std_target": "0.003"}).posterior_std_target == 0.003
    assert with_overrides(cfg, {"posterior_std_target": "none"}).posterior_std_target is None
    with pytest.raises(ValueError, match="posterior_std_target"):
        with_overrides(cfg, {"posterior_std_target": "wide"})
    with pytest.raises(ValueError, match="policy_spread_target must be > 0"):
        default_config("vppo", policy_spread_target=-1.0)
    with pytest.raises(ValueError, match="posterior_std_target is None"):
        alpha_schedule(cfg)


SMALL = {
    "env_id": "CartPole-v1",
    "num_envs": 2,
    "rollout_steps": 16,
    "hidden": (16,),
    "tensorboard": False,
}


def test_a_run_records_its_calibrated_target_starts_there_and_resumes(tmp_path):
    cfg = default_config("vppo", **SMALL, total_steps=64, checkpoint_every=1)
    out = tmp_path / "r"
    train(cfg, out, progress=False)
    sigma = json.loads((out / "config.json").read_text())["posterior_std_target"]
    torch.manual_seed(cfg.seed)  # the run calibrates on the network it builds from its seed
    resolved, _ = resolve_std_target(cfg, 4, gym.spaces.Discrete(2))
    assert sigma == pytest.approx(resolved.posterior_std_target)
    first = _row(out, 0)
    assert float(first["entropy_target"]) == pytest.approx(gaussian_entropy_per_param(sigma))
    # the resume passes the unset default again: it keeps the saved σ*, it does not recalibrate
    # (calibration is deterministic, so only a calibration that never runs shows it)
    import rl.run

    def no_calibration(*args, **kwargs):
        raise AssertionError("a resumed run calibrated σ* again")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rl.run, "calibrate_std", no_calibration)
        train(
            default_config("vppo", **SMALL, total_steps=96, checkpoint_every=1),
            out,
            resume=True,
            progress=False,
        )
    assert json.loads((out / "config.json").read_text())["posterior_std_target"] == sigma
    assert len(_rows(out)) == 3


def test_the_posterior_starts_at_the_calibrated_width():
    cfg = default_config("vppo", **SMALL)
    torch.manual_seed(0)
    resolved, _ = resolve_std_target(cfg, 4, gym.spaces.Discrete(2))
    expected = gaussian_entropy_per_param(resolved.posterior_std_target)
    torch.manual_seed(0)
    policy = build_policy(resolved, 4, gym.spaces.Discrete(2))
    assert policy_entropy_per_param(policy) == pytest.approx(expected)
    torch.manual_seed(0)  # an unresolved config is calibrated on the way: the same width
    policy = build_policy(cfg, 4, gym.spaces.Discrete(2))
    assert policy_entropy_per_param(policy) == pytest.approx(expected)


def test_cli_says_which_target_it_calibrated(tmp_path, capsys):
    run = ["train", "--env", "CartPole-v1", "--steps", "32", "--quiet", "--no-preset"]
    run += ["--set", "num_envs=2", "--set", "rollout_steps=16", "--set", "tensorboard=false"]
    assert main([*run, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    sigma = json.loads((tmp_path / "a" / "config.json").read_text())["posterior_std_target"]
    assert f"calibrated posterior_std_target = {sigma:.3g}" in err
    assert main([*run, "--out", str(tmp_path / "b"), "--set", "posterior_std_target=0.02"]) == 0
    assert "calibrated" not in capsys.readouterr().err


def _rows(out) -> list[dict]:
    with (out / "progress.csv").open() as f:
        return list(csv.DictReader(f))


def _row(out, i: int) -> dict:
    return _rows(out)[i]
