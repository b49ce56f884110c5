"""Failures a run must say instead of carrying on: non-finite gradients, batches too small to
normalise, evaluation episodes that never end, an interrupt before the first checkpoint."""

from __future__ import annotations

import csv
import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import rl.testing  # noqa: F401  (registers the Count* envs)
from rl import evaluate
from rl.algorithms.base import adam, adam_step
from rl.cli import main
from vi_flows.runfiles import load


def test_a_nonfinite_policy_gradient_is_refused_before_its_step():
    weight = torch.nn.Parameter(torch.ones(3))
    opt = adam([weight], lr=0.1)
    assert adam_step((weight * 2.0).sum(), opt, 0.5) > 0  # a finite step moves it
    before = weight.detach().clone()
    with pytest.raises(FloatingPointError, match="policy gradient is not finite"):
        adam_step((weight * float("nan")).sum(), opt, 0.5)
    assert torch.equal(weight.detach(), before)
    with pytest.raises(FloatingPointError):  # no clipping (max_grad_norm 0) is checked as well
        adam_step((weight * float("inf")).sum(), opt, 0.0)
    assert torch.equal(weight.detach(), before)


def test_a_one_sample_batch_trains_to_finite_weights(tmp_path):
    """One env, one step per rollout: the advantage of one sample has no spread to normalise
    by (its std is NaN), which used to turn every weight into NaN with exit status 0."""
    out = tmp_path / "one"
    argv = ["train", "--env", "CartPole-v1", "--algo", "ppo", "--no-preset", "--steps", "3"]
    argv += ["--set", "num_envs=1", "--set", "rollout_steps=1", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    state = load(out / "checkpoint.pt")
    floats = [t for t in state["policy"].values() if t.is_floating_point()]
    assert floats and all(bool(torch.isfinite(t).all()) for t in floats)


class _Endless(gym.Env):
    """Never terminates, no time limit: an evaluation must cut it."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 1.0, False, False, {}


def test_evaluation_episodes_without_a_time_limit_are_cut_with_a_warning(monkeypatch):
    if "EndlessGuard-v0" not in gym.registry:
        gym.register("EndlessGuard-v0", entry_point=_Endless)
    monkeypatch.setattr(evaluate, "MAX_EPISODE_STEPS", 7)
    with pytest.warns(UserWarning, match="2 of 2 evaluation episodes were still running after 7"):
        returns = evaluate.run_episodes("EndlessGuard-v0", 2, 0, lambda obs: np.zeros(2, int))
    assert returns.tolist() == [7.0, 7.0]
    # an env that ends its episodes is not cut (CountTerm: 3 steps of reward 1)
    assert evaluate.run_episodes("CountTerm-v0", 2, 0, lambda o: np.zeros(2, int)).tolist() == [
        3.0,
        3.0,
    ]


def test_an_interrupt_says_whether_there_is_a_checkpoint_to_resume(tmp_path, monkeypatch, capsys):
    import rl.trainer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rl.trainer, "train", interrupted)
    argv = ["train", "--steps", "64", "--quiet", "--out", str(tmp_path / "run")]
    assert main(argv) == 130
    assert "before the first checkpoint: nothing to resume" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")
    assert main([*argv, "--overwrite"]) == 130
    assert "--resume continues" in capsys.readouterr().err


def test_plot_shares_a_line_between_seeds_only(tmp_path):
    """Runs differing only in seed (or length) share a line; another lr is its own line, and the
    label names it."""
    import json

    from rl.plot import group_runs

    def run(name: str, **fields) -> str:
        folder = tmp_path / name
        folder.mkdir()
        cfg = {"algo": "ppo", "policy": "bnn", "posterior": "point", "env_id": "E", "lr": 1e-3}
        (folder / "config.json").write_text(json.dumps({**cfg, **fields}))
        (folder / "progress.csv").write_text("env_steps,return_mean\n1,0\n2,1\n")
        return str(folder)

    # σ* is calibrated per seed by default, so it differs between seeds of one config
    runs = [
        run("a", seed=0, posterior_std_target=0.0156),
        run("b", seed=1, total_steps=9, posterior_std_target=0.0147),
        run("c", seed=0, lr=1e-2),
    ]
    groups = group_runs(runs)
    assert sorted(len(m) for m in groups.values()) == [1, 2]
    assert sorted(groups) == ["ppo bnn/point E (lr=0.001)", "ppo bnn/point E (lr=0.01)"]
    assert list(group_runs(runs[:2])) == ["ppo bnn/point E"]


def test_an_update_without_critic_steps_logs_no_value_loss(tmp_path):
    """value_epochs = 0 fits no critic: its loss is NaN (nothing measured), not 0 (a perfect
    fit)."""
    from rl.algorithms import default_config
    from rl.trainer import train

    cfg = default_config(
        "ppo", env_id="CartPole-v1", num_envs=2, rollout_steps=16, hidden=(8,), total_steps=32
    )
    cfg = dataclasses.replace(cfg, value_epochs=0, tensorboard=False)
    row = train(cfg, tmp_path, progress=False)
    assert math.isnan(row["value_loss"])


def test_a_nonfinite_critic_gradient_is_refused_before_its_step():
    from rl.value import value_step

    weight = torch.nn.Parameter(torch.ones(3))
    opt = adam([weight], lr=0.1)
    (weight * float("nan")).sum().backward()
    with pytest.raises(FloatingPointError, match="critic gradient is not finite"):
        value_step(opt, [weight], 0.5)
    assert torch.equal(weight.detach(), torch.ones(3))


def test_box_settings_on_discrete_actions_are_refused_for_new_runs_only():
    """A new run refuses them (they would be ignored); a saved run that holds them, from before
    the check, still builds its policy (eval, resume)."""
    from rl.algorithms import default_config
    from rl.run import build_policy, check_action_settings

    cfg = default_config("vppo", env_id="CartPole-v1", learn_log_std=False)
    with pytest.raises(ValueError, match="learn_log_std is for Box actions; CartPole-v1"):
        check_action_settings(cfg, gym.spaces.Discrete(2))
    check_action_settings(cfg, gym.spaces.Box(-1.0, 1.0, (1,)))
    policy = build_policy(dataclasses.replace(cfg, hidden=(8,)), 4, gym.spaces.Discrete(2))
    assert policy.head.discrete


def test_box_actions_far_from_unit_scale_are_mapped_onto_the_box():
    from rl.action_head import ActionHead

    shifted = ActionHead(gym.spaces.Box(10.0, 11.0, (1,), np.float32))  # auto: 0 is outside
    assert "0 is not strictly inside the Box" in shifted.rescaled
    a = torch.tensor([[0.0], [1.0], [-1.0], [3.0], [0.6]])
    np.testing.assert_allclose(shifted.to_env(a)[:, 0], [10.5, 11.0, 10.0, 11.0, 10.8])
    wide = ActionHead(gym.spaces.Box(-100.0, 100.0, (2,), np.float32))
    assert "half-widths 100-100" in wide.rescaled
    np.testing.assert_allclose(wide.to_env(torch.tensor([[0.5, -0.25]])), [[50.0, -25.0]])
    pendulum = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)  # every preset env stays as it was
    assert ActionHead(pendulum).rescaled == ""
    np.testing.assert_allclose(
        ActionHead(pendulum).to_env(torch.tensor([[0.5], [3.0]])), [[0.5], [2.0]]
    )
    np.testing.assert_allclose(
        ActionHead(pendulum, rescale="on").to_env(torch.tensor([[0.5]])), [[1.0]]
    )
    assert ActionHead(gym.spaces.Box(10.0, 11.0, (1,)), rescale="off").rescaled == ""
    unbounded = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    assert ActionHead(unbounded, rescale="on").rescaled == ""
    with pytest.raises(ValueError, match="action_rescale must be one of auto, on, off"):
        ActionHead(pendulum, rescale="yes")


def test_a_shifted_box_run_explores_it_and_says_so(tmp_path, capsys):
    run = ["train", "--env", "ShiftedBox-v0", "--algo", "ppo", "--steps", "256", "--quiet"]
    small = ["--set", "num_envs=2", "--set", "rollout_steps=64"]
    assert main([*run, *small, "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "Box actions are mapped from [-1, 1] onto the env's bounds" in err
    rows = list(csv.DictReader(open(tmp_path / "r" / "progress.csv")))
    spread = [float(r["return_max"]) - float(r["return_min"]) for r in rows]
    assert min(spread) > 0.01, spread  # unmapped, every action clipped to 10: all returns −0.64
    assert main([*run, *small, "--set", "action_rescale=off", "--out", str(tmp_path / "o")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "o" / "progress.csv")))
    assert {float(r["return_max"]) for r in rows} == {float(r["return_min"]) for r in rows}
    assert (
        main(
            [
                "train",
                "--env",
                "CountTerm-v0",
                "--set",
                "action_rescale=on",
                "--out",
                str(tmp_path / "d"),
            ]
        )
        == 2
    )
    assert "action_rescale is for Box actions" in capsys.readouterr().err


def test_integer_settings_are_integers():
    from rl.algorithms import default_config
    from rl.config import with_overrides

    cfg = default_config("ppo")
    assert with_overrides(cfg, {"total_steps": "1e6"}).total_steps == 1_000_000
    for text in ("1e400", "1.5e0", "2.5"):
        with pytest.raises(ValueError, match="total_steps"):
            with_overrides(cfg, {"total_steps": text})


def test_env_failures_and_empty_observations_are_one_line(tmp_path, capsys, monkeypatch):
    assert (
        main(["train", "--env", "EmptyObs-v0", "--steps", "32", "--out", str(tmp_path / "e")]) == 2
    )
    assert "has an empty observation space" in capsys.readouterr().err

    def missing(*args, **kwargs):
        raise gym.error.DependencyNotInstalled("Box2D is not installed, run `pip install swig`")

    monkeypatch.setattr(gym, "make", missing)
    assert main(["train", "--env", "CountTerm-v0", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vi-rl: error: cannot make 'CountTerm-v0': Box2D is not installed")
    assert "Traceback" not in err and not (tmp_path / "b").exists()


def test_sigterm_is_handled_as_an_interrupt(tmp_path, capsys, monkeypatch):
    import os
    import signal

    from rl import cli

    def killed(args, extra):
        os.kill(os.getpid(), signal.SIGTERM)  # `kill` or `timeout` during a run
        pytest.fail("SIGTERM did not stop the run")

    monkeypatch.setattr(cli, "_train", killed)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["train", "--out", str(tmp_path / "r")]) == 143
    assert "vi-rl: terminated before the first checkpoint" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


def test_a_posterior_that_samples_one_weight_at_a_time_is_refused_for_a_network(tmp_path, capsys):
    base = ["train", "--env", "CountTerm-v0", "--posterior", "maf", "--steps", "32", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "big")]) == 2
    err = capsys.readouterr().err
    assert "posterior 'maf' samples θ sequentially: " in err and "iaf" in err
    small = ["--set", "hidden=(4,)", "--set", "num_envs=2", "--set", "rollout_steps=16"]
    assert main([*base, *small, "--out", str(tmp_path / "small")]) == 0  # 18 weights: fine


def test_a_run_saved_before_action_rescale_reloads_in_the_env_units(tmp_path, capsys):
    import json

    from rl.run import saved_config

    out = tmp_path / "r"
    run = ["train", "--env", "ShiftedBox-v0", "--algo", "ppo", "--steps", "64", "--quiet"]
    assert main([*run, "--set", "num_envs=2", "--set", "rollout_steps=32", "--out", str(out)]) == 0
    assert saved_config(out).action_rescale == "auto"
    data = json.loads((out / "config.json").read_text())
    del data["action_rescale"]  # what an older vi-rl wrote
    (out / "config.json").write_text(json.dumps(data))
    assert saved_config(out).action_rescale == "off"  # as that run was trained
    assert main(["eval", str(out), "--episodes", "2"]) == 0


def test_printed_json_is_strict_and_a_closed_pipe_is_quiet(tmp_path, capsys, monkeypatch):
    import json

    from rl import cli

    # 32 Pendulum steps: no episode (200 steps) ends, so return_mean is NaN in progress.csv
    run = ["train", "--env", "Pendulum-v1", "--algo", "ppo", "--steps", "32", "--quiet"]
    small = ["--set", "num_envs=2", "--set", "rollout_steps=16", "--out", str(tmp_path / "r")]
    assert main([*run, *small]) == 0
    printed = capsys.readouterr()
    line = printed.out.strip().splitlines()[-1]
    refuse = lambda c: pytest.fail(f"non-strict JSON constant {c} in {line}")  # noqa: E731
    row = json.loads(line, parse_constant=refuse)
    assert row["return_mean"] is None and row["env_steps"] == 32
    assert "no episode ended during this run (1 updates)" in printed.err

    def closed(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_config", closed)  # what `vi-rl config ppo | head` meets
    assert main(["config", "ppo"]) == 141
    assert capsys.readouterr().err == ""
