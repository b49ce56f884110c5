"""CLI, checkpoints (save → resume → identical next update), seeds, and bad-input errors."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from rl.algorithms import default_config
from rl.checkpoint import from_plain
from rl.cli import main
from rl.config import with_overrides
from rl.testing import register
from rl.trainer import train
from vi_flows import runfiles
from vi_flows.registry import UnknownNameError

register()
SMALL = {
    "env_id": "CartPole-v1",
    "num_envs": 2,
    "rollout_steps": 32,
    "hidden": (16,),
    "tensorboard": False,
}


def _cfg(algo: str, updates: int, **fields):
    return default_config(algo, **{**SMALL, **fields}, total_steps=64 * updates)


def _state(out):
    return from_plain(runfiles.load(out / "checkpoint.pt"))


def _rows(out):
    with (out / "progress.csv").open() as f:
        return [
            {k: v for k, v in r.items() if k not in {"wall_time", "sps"}} for r in csv.DictReader(f)
        ]


NORMALIZED = {"env_id": "Pendulum-v1", "normalize_obs": True, "normalize_reward": True}


@pytest.mark.parametrize(
    "algo, fields",
    [
        ("vppo", {}),
        ("vtrpo", {}),
        ("svpg", {}),
        ("vreinforce", {}),
        ("vppo", NORMALIZED),
        ("ppo", NORMALIZED),
        ("vppo", {"policy": "action-mean"}),
        ("vppo", {"policy": "auxiliary"}),
    ],
)
def test_resume_gives_identical_next_update(algo, fields, tmp_path):
    train(_cfg(algo, 3, checkpoint_every=1, **fields), tmp_path / "a", progress=False)
    train(_cfg(algo, 2, checkpoint_every=1, **fields), tmp_path / "b", progress=False)
    train(_cfg(algo, 3, checkpoint_every=1, **fields), tmp_path / "b", resume=True, progress=False)
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert b["update"] == 3
    for key in a["policy"]:
        assert torch.equal(a["policy"][key], b["policy"][key]), key
    for key in a["critic"]:
        assert torch.equal(a["critic"][key], b["critic"][key]), key
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")


def test_same_seed_reproduces_and_other_seed_differs(tmp_path):
    for name, seed in [("a", 3), ("b", 3), ("c", 4)]:
        train(_cfg("vppo", 2, seed=seed), tmp_path / name, progress=False)
    a, b, c = (_state(tmp_path / n)["policy"] for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_cli_train_eval_plot(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--env",
            "Pendulum-v1",
            "--algo",
            "vppo",
            "--posterior",
            "lowrank-gaussian",
            "--steps",
            "128",
            "--seed",
            "0",
            "--out",
            str(out),
            "--quiet",
            "--set",
            "num_envs=2",
            "--rollout_steps",
            "32",
            "--hidden",
            "16",
            "--normalize_obs",
            "true",
            "--alpha_schedule",
            "exponential",
        ]
    )
    assert code == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["posterior"] == "lowrank-gaussian" and saved["rollout_steps"] == 32
    assert saved["hidden"] == [16] and saved["normalize_obs"] is True
    rows = list(csv.DictReader((out / "progress.csv").open()))
    assert len(rows) == 2 and float(rows[1]["alpha"]) < float(rows[0]["alpha"])
    assert float(rows[0]["posterior_std"]) > 0
    assert main(["train", "--out", str(out), "--resume", "--steps", "192", "--quiet"]) == 0
    assert len(list(csv.DictReader((out / "progress.csv").open()))) == 3
    assert main(["eval", str(out), "--episodes", "1"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert set(result) == {"mean", "sampled"}
    capsys.readouterr()
    # 192 Pendulum steps finish no 200-step episode: no return to draw, so no blank figure.
    assert main(["plot", str(out), "--output", str(tmp_path / "c.png")]) == 2
    assert "nothing to plot" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--env", "NoSuchEnv-v9"], "unknown environment id"),
        (["--env", "MultiBinary-v0"], "unsupported action space"),
        (["--env", "CountNaN-v0"], "non-finite reward from the environment at env step 4"),
        (["--set", "no_such_field=1"], "config field 'no_such_field' does not exist"),
        (["--learning_rate", "1e-3"], "config field 'learning_rate' does not exist"),
        (["--algo", "ppo", "--posterior", "gaussian"], "plain (point-mass) algorithm"),
        (["--set", "lr=fast"], "bad value for lr"),
        (["--set", "policy=nope"], "unknown policy family 'nope'; known: action-mean, auxiliary"),
    ],
)
def test_cli_errors_are_clear(argv, message, tmp_path, capsys):
    base = [
        "train",
        "--out",
        str(tmp_path / "x"),
        "--steps",
        "64",
        "--quiet",
        "--set",
        "num_envs=2",
        "--set",
        "rollout_steps=32",
    ]
    assert main(base + argv) == 2
    assert message in capsys.readouterr().err


def test_config_override_parsing():
    cfg = with_overrides(
        default_config("vtrpo"),
        {"hidden": "32,32", "max_kl": "0.05", "normalize_obs": "yes", "total_steps": "1e5"},
    )
    assert cfg.hidden == (32, 32) and cfg.max_kl == 0.05 and cfg.normalize_obs
    assert cfg.total_steps == 100_000
    with pytest.raises(UnknownNameError, match="unknown algorithm 'a2c'; known: ppo, reinforce"):
        default_config("a2c")
