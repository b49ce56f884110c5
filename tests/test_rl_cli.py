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
from rl.presets import env_preset
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
# Auto α with a posterior started 10 % below its target (bnn; far below, α would sit at its
# clip), so α moves at every step and the resume must carry it.
AUTO = {
    "alpha_schedule": "auto",
    "posterior_std_target": 0.011,
    "posterior_options": '{"init_scale": 0.01}',
}


@pytest.mark.parametrize(
    "algo, fields",
    [
        ("vppo", {}),
        ("vtrpo", {}),
        ("svpg", {"num_particles": 2}),  # one particle per env slot (num_envs=2)
        ("vreinforce", {}),
        ("vppo", NORMALIZED),
        ("ppo", NORMALIZED),
        ("vppo", {"policy": "action-mean"}),
        ("vppo", {"policy": "auxiliary"}),
        ("vppo", AUTO),
        # σ_φ(s) starts near e^-2 ≈ 0.135 (ActionMeanPolicy), 10 % below the target
        ("vtrpo", {**AUTO, "policy": "action-mean", "posterior_std_target": 0.15}),
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
    if fields.get("alpha_schedule") == "auto":
        assert a["temperature"] == b["temperature"]  # plain tensors (log α, updates)
        # one dual step per optimizer step: 3 updates × 10 epochs × 1 minibatch of the 64
        # samples (vppo), one per natural step (vtrpo)
        steps = {"vppo": 3 * 10 * 1, "vtrpo": 3}[algo]
        assert int(a["temperature"]["updates"]) == steps
        assert len({row["alpha"] for row in _rows(tmp_path / "a")}) == 3  # α moved every update


def test_an_annealed_run_resumes_at_its_own_steps_and_refuses_new_ones(tmp_path):
    """lr decays over total_steps: an interrupted run continues bit for bit at the same
    --steps; a new total would re-time the remaining updates, so it is refused."""
    cfg = _cfg("ppo", 3, checkpoint_every=1, anneal_lr=True)
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False, callback=lambda run, row: run.update == 2)
    assert _state(tmp_path / "b")["update"] == 2  # interrupted after its second update
    train(cfg, tmp_path / "b", resume=True, progress=False)
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    for key in a["policy"]:
        assert torch.equal(a["policy"][key], b["policy"][key]), key
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")
    lrs = [float(r["lr"]) for r in _rows(tmp_path / "a")]
    assert lrs == pytest.approx([cfg.lr * (1 - u / 3) for u in range(3)])  # it did decay
    longer = _cfg("ppo", 4, checkpoint_every=1, anneal_lr=True)
    with pytest.raises(ValueError, match=r"total_steps \(192 -> 256\).*anneal_lr"):
        train(longer, tmp_path / "b", resume=True, progress=False)
    assert _state(tmp_path / "b")["update"] == 3  # refused without touching the run


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
            "--no-preset",
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
    # the policy it saved, evaluated directly (same seed): the same episode; Pendulum's reward
    # per step lies in [−16.3, 0], 200 steps an episode
    from rl.evaluate import evaluate_policy
    from rl.run import load_run

    run = load_run(out, restore_envs=False)
    run.envs.close()
    direct = evaluate_policy(run.policy, "Pendulum-v1", 1, 12345, run.normalizer)
    assert result["mean"] == pytest.approx(direct["mean"])
    assert all(-16.3 * 200 <= mode["return_mean"] <= 0.0 for mode in result.values())
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
        # every field of the algorithms' own configs is range-checked, in one line
        (["--algo", "ppo", "--set", "epochs=0"], "epochs must be an integer >= 1, got 0"),
        (["--set", "minibatch_size=0"], "minibatch_size must be an integer >= 1, got 0"),
        (["--set", "clip_coef=nan"], "clip_coef must be > 0 and finite, got nan"),
        (["--set", "target_kl=-1"], "target_kl must be >= 0 and finite"),
        (["--algo", "trpo", "--set", "cg_iters=0"], "cg_iters must be an integer >= 1, got 0"),
        (["--algo", "vtrpo", "--set", "max_kl=-1"], "max_kl must be > 0 and finite, got -1.0"),
        (["--algo", "svpg", "--set", "num_particles=0"], "num_particles must be an integer >= 1"),
        (["--algo", "svpg", "--set", "num_particles=4"], "got 4 > 2"),  # num_envs=2 above
        (["--algo", "reinforce", "--set", "epochs=0"], "epochs must be an integer >= 1"),
        (["--set", "lr=inf"], "lr must be > 0 and finite, got inf"),
        (["--seed", "-1"], "seed must be an integer in [0, 2³²), got -1"),
        (["--set", "algo=trpo"], "the algorithm is chosen with --algo"),
        (["--set", "policy=particles"], "policy='particles' is SVPG's (--algo svpg)"),
        (["--set", 'posterior_options={"foo": 1}'], "'gaussian': unknown option 'foo'"),
        (["--set", 'posterior_options={"init_scale": "x"}'], "init_scale must be a number > 0"),
        (["--env", "CartPole-v1", "--set", "learn_log_std=false"], "learn_log_std is for Box"),
        (["--env", "CartPole-v1", "--algo", "ppo", "--set", "rpo_alpha=0.5"], "rpo_alpha is for"),
    ],
)
def test_cli_errors_are_clear(argv, message, tmp_path, capsys):
    base = [
        "train",
        "--no-preset",
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


PRESET_RUN = ["train", "--env", "Pendulum-v1", "--algo", "vppo", "--steps", "32", "--quiet"]
for _pair in ["num_envs=2", "rollout_steps=16", "minibatch_size=16", "hidden=16"]:
    PRESET_RUN += ["--set", _pair]
PRESET_RUN += ["--set", "tensorboard=false"]


def _saved(out):
    return json.loads((out / "config.json").read_text())


def test_known_env_gets_its_preset_unless_no_preset(tmp_path, capsys):
    overridden = {"num_envs", "rollout_steps", "minibatch_size", "hidden", "tensorboard"}
    preset = {k: v for k, v in env_preset("Pendulum-v1", "vppo").items() if k not in overridden}
    defaults = default_config("vppo")
    assert any(getattr(defaults, k) != v for k, v in preset.items())  # the two differ

    assert main([*PRESET_RUN, "--out", str(tmp_path / "p")]) == 0
    assert "applied the Pendulum-v1 preset for vppo" in capsys.readouterr().err
    saved = _saved(tmp_path / "p")
    assert saved["preset"] == "Pendulum-v1"
    assert {k: saved[k] for k in preset} == preset
    assert saved["rollout_steps"] == 16 and saved["hidden"] == [16]  # --set wins over the preset

    assert main([*PRESET_RUN, "--out", str(tmp_path / "n"), "--no-preset"]) == 0
    assert "preset" not in capsys.readouterr().err
    saved = _saved(tmp_path / "n")
    assert saved["preset"] == ""
    assert {k: saved[k] for k in preset} == {k: getattr(defaults, k) for k in preset}

    assert main([*PRESET_RUN, "--out", str(tmp_path / "e"), "--preset"]) == 0  # still accepted
    assert _saved(tmp_path / "e") == _saved(tmp_path / "p")


def test_preset_and_no_preset_exclude_each_other(tmp_path, capsys):
    out = tmp_path / "x"
    assert main([*PRESET_RUN, "--out", str(out), "--preset", "--no-preset"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--preset and --no-preset exclude each other" in err
    assert not out.exists()
    assert main([*PRESET_RUN, "--out", str(out), "--set", "preset=CartPole-v1"]) == 2
    assert "--no-preset" in capsys.readouterr().err


def test_env_without_preset_records_none(tmp_path, capsys):
    run = [
        "train",
        "--env",
        "CountTerm-v0",
        "--steps",
        "32",
        "--quiet",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main([*run, "--set", "num_envs=2", "--set", "rollout_steps=16"]) == 0
    err = capsys.readouterr().err  # the miss is said: the class defaults are untuned here
    assert "no preset for CountTerm-v0 and vppo (vppo presets: " in err and "Pendulum-v1" in err
    assert "Acrobot-v1" not in err  # its entry holds SB3's zoo settings only, none of ours
    assert _saved(tmp_path / "r")["preset"] == ""
    no = ["--no-preset", "--out", str(tmp_path / "n")]
    assert main([*run[:-2], *no, "--set", "num_envs=2", "--set", "rollout_steps=16"]) == 0
    assert "preset" not in capsys.readouterr().err  # asked for none: nothing to report


def test_resume_keeps_the_rows_of_a_progress_file_written_before_a_column_was_added(tmp_path):
    """A run logged by an older vi-flows lacks the newer columns (policy_spread, action_std): on
    resume its rows up to the checkpoint are kept, not dropped as torn."""
    from rl.logger import COLUMNS, ProgressLog

    old = [c for c in COLUMNS if c not in {"policy_spread", "action_std"}]
    rows = [{c: (u if c == "update" else 0.5) for c in old} for u in (1, 2, 3)]
    with (tmp_path / "progress.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, old)
        writer.writeheader()
        writer.writerows(rows)
        f.write("4,0.5,0.")  # a row torn by a crash
    ProgressLog(tmp_path, resume_update=2, tensorboard=False).close()
    kept = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert [r["update"] for r in kept] == ["1", "2"]
    assert list(kept[0]) == COLUMNS and kept[0]["policy_spread"] == ""
