"""Issue 9's defects (vi-rl, flows, svgd, diagnostics): each test failed on the code before it.

The fault-injection part (SIGKILL mid-write, crafted pickles) is tests/test_faults.py.
"""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
import torch

from rl.checkpoint import from_plain
from rl.cli import main
from rl.policies import ActionHead
from rl.testing import ShiftedDiscreteEnv
from vi_flows import flows, runfiles, targets
from vi_flows.diagnostics import diagnose, psis_khat
from vi_flows.svgd import svgd

BASE = "--no-preset --quiet --set num_envs=2 --set rollout_steps=16 --set hidden=16".split()
BASE += ["--set", "tensorboard=false"]
CARTPOLE = ["--env", "CartPole-v1", *BASE]


def _train(out, *args: str) -> int:
    return main(["train", "--out", str(out), *args])


def _error(capsys) -> str:
    """The one stderr line of a failed command (and no traceback)."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _rows(out) -> list[dict]:
    with (out / "progress.csv").open(newline="") as f:
        return list(csv.DictReader(f))


# 4. An existing run is never overwritten silently.
def test_train_refuses_an_existing_run_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, *CARTPOLE, "--steps", "64") == 0
    capsys.readouterr()  # the successful run's own lines (the calibrated σ*)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert _train(out, *CARTPOLE, "--steps", "32") == 2
    err = _error(capsys)
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _train(out, *CARTPOLE, "--steps", "32", "--overwrite") == 0
    assert len(_rows(out)) == 1


# 5. --resume applies or refuses each changed flag; --steps below done writes nothing.
def test_resume_refuses_changed_settings_and_keeps_config(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, *CARTPOLE, "--steps", "64") == 0
    capsys.readouterr()  # the successful run's own line (the calibrated σ*)
    config = (out / "config.json").read_bytes()
    for flags, named in [
        (["--seed", "5"], "seed (0 -> 5)"),
        (["--env", "Acrobot-v1"], "env_id"),
        (["--set", "lr=0.1"], "lr (0.0003 -> 0.1)"),
        (["--posterior", "lowrank-gaussian"], "posterior"),
        (["--algo", "vtrpo"], "--algo vtrpo"),
        (["--steps", "32"], "already done 2 updates (64 env steps)"),
        (["--steps", "64"], "pass --steps above 64"),
    ]:
        args = ["--steps", "128", *flags] if "--steps" not in flags else flags
        assert _train(out, "--resume", "--quiet", *args) == 2, flags
        assert named in _error(capsys)
        assert (out / "config.json").read_bytes() == config
    # Equal values and resumable fields are fine; the latter are applied.
    args = ["--seed", "0", "--env", "CartPole-v1", "--set", "checkpoint_every=1"]
    assert _train(out, "--resume", "--quiet", "--steps", "96", *args) == 0
    assert '"checkpoint_every": 1' in (out / "config.json").read_text()
    assert len(_rows(out)) == 3


# 6. Discrete(n, start) and unrepresentable spaces.
def test_discrete_start_is_applied_and_every_action_is_reachable(tmp_path):
    import gymnasium as gym

    head = ActionHead(gym.spaces.Discrete(3, start=-1))
    dist = head(torch.zeros(3000, 3))
    sent = head.to_env(dist.sample())
    assert set(sent.tolist()) == {-1, 0, 1}
    assert head.to_env(head.mode(head(torch.tensor([[0.0, 0.0, 9.0]])))).tolist() == [1]
    # The env raises on an action outside its space; training runs without one.
    assert ShiftedDiscreteEnv().action_space.start == -1
    assert _train(tmp_path / "run", "--env", "ShiftedDiscrete-v0", *BASE, "--steps", "64") == 0


def test_unrepresentable_action_space_is_one_clear_line(tmp_path, capsys):
    assert _train(tmp_path / "run", "--env", "MatrixBox-v0", *BASE, "--steps", "32") == 2
    assert "cannot be represented exactly" in _error(capsys)
    assert not (tmp_path / "run").exists()  # 12: no empty folder left behind


# 10. Sizes and ranges (vi-rl).
@pytest.mark.parametrize(
    "flags, named",
    [
        (["--set", "num_envs=0"], "num_envs must be an integer >= 1"),
        (["--set", "rollout_steps=0"], "rollout_steps must be an integer >= 1"),
        (["--set", "gamma=0"], "gamma must be in (0, 1]"),
        (["--set", "gamma=1.5"], "gamma must be in (0, 1]"),
        (["--set", "gamma=nan"], "gamma must be in (0, 1]"),
        (["--set", "checkpoint_every=-1"], "checkpoint_every must be an integer >= 0"),
        (["--steps", "-5"], "total_steps must be an integer >= 1"),
        (["--set", "hidden=0"], "hidden must be widths >= 1"),
        (["--set", "posterior_options=[1"], "posterior_options must be a JSON object"),
        (["--env", "no_such_module:Env-v0"], "cannot import module 'no_such_module'"),
    ],
)
def test_bad_rl_settings_are_one_line(flags, named, tmp_path, capsys):
    assert _train(tmp_path / "run", *CARTPOLE, "--steps", "32", *flags) == 2
    assert named in _error(capsys)
    assert not (tmp_path / "run").exists()


def test_checkpoint_every_zero_means_only_at_the_end(tmp_path):
    out = tmp_path / "run"
    assert _train(out, *CARTPOLE, "--steps", "96", "--set", "checkpoint_every=0") == 0
    assert from_plain(runfiles.load(out / "checkpoint.pt"))["update"] == 3


def test_module_colon_env_id(tmp_path):
    assert _train(tmp_path / "run", "--env", "rl.testing:CountTerm-v0", *BASE, "--steps", "32") == 0


def test_eval_episodes_zero_and_plot_without_rows(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, *CARTPOLE, "--steps", "32") == 0
    capsys.readouterr()  # the successful run's own line (the calibrated σ*)
    assert main(["eval", str(out), "--episodes", "0"]) == 2
    assert "--episodes must be an integer >= 1" in _error(capsys)
    assert main(["plot", str(out), "--output", str(tmp_path / "c.png")]) == 2
    assert "nothing to plot" in _error(capsys)
    assert not (tmp_path / "c.png").exists()
    assert _train(out, "--resume", "--quiet", "--steps", "128") == 0
    assert main(["plot", str(out), "--output", str(tmp_path / "c.png")]) == 0


# 11. Missing or corrupt files: one line naming the file; --debug shows the traceback.
def test_missing_and_corrupt_run_files_are_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["eval", str(out)]) == 2
    assert "no checkpoint.pt" in _error(capsys)
    assert _train(out, *CARTPOLE, "--steps", "32") == 0
    capsys.readouterr()  # the successful run's own line (the calibrated σ*)
    good = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(good[: len(good) // 2])
    assert main(["eval", str(out), "--episodes", "1"]) == 2
    err = _error(capsys)
    assert "checkpoint.pt: truncated or corrupt" in err and "weights_only" not in err
    (out / "checkpoint.pt").write_bytes(good)
    (out / "config.json").write_text('{"algo": "vppo", "gamma": }')
    assert main(["eval", str(out), "--episodes", "1"]) == 2
    assert "config.json: not valid JSON" in _error(capsys)
    (out / "config.json").write_text('{"algo": "vppo", "gamma": 7}')
    assert main(["eval", str(out), "--episodes", "1"]) == 2
    err = _error(capsys)
    assert "config.json" in err and "gamma must be in (0, 1]" in err
    with pytest.raises(ValueError, match="gamma"):
        main(["--debug", "eval", str(out), "--episodes", "1"])


# 12. A failed run leaves no folder; a run with opaque env state resumes with a warning.
def test_failed_train_leaves_no_folder(tmp_path, capsys):
    for env in ["NoSuchEnv-v9", "CountNaN-v0"]:
        out = tmp_path / "new" / "run"
        assert _train(out, "--env", env, *BASE, "--steps", "64") == 2
        _error(capsys)
        assert not out.exists()


def test_opaque_env_state_resume_restarts_episodes_with_a_warning(tmp_path):
    out = tmp_path / "run"
    assert _train(out, "--env", "OpaqueState-v0", *BASE, "--steps", "48") == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _train(out, "--resume", "--quiet", "--steps", "96") == 0
    assert any("OpaqueStateEnv.sim" in str(w.message) for w in caught)
    rows = _rows(out)
    assert len(rows) == 3 and float(rows[-1]["return_mean"]) == 7.0  # whole 7-step episodes


# 10. Sizes and ranges (vi_flows).
@pytest.mark.parametrize(
    "name, options, named",
    [
        ("planar", {"layers": 0}, "layers must be an integer >= 1"),
        ("realnvp", {"layers": -1}, "layers must be an integer >= 1"),
        ("realnvp", {"hidden": (0,)}, "hidden must be a sequence of widths >= 1"),
        ("nflows-spline", {"hidden": (64, 0)}, "hidden must be a sequence of widths >= 1"),
        ("pyro-coupling", {"hidden": (0,)}, "hidden must be a sequence of widths >= 1"),
    ],
)
def test_flow_sizes(name, options, named):
    with pytest.raises(ValueError, match=named):
        flows.build(name, 2, **options)


@pytest.mark.parametrize("name", ["gaussian", "correlated-gaussian", "mixture"])
@pytest.mark.parametrize("dim", [0, -1])
def test_target_dim(name, dim):
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        targets.get(name, dim=dim)


def test_svgd_and_diagnose_sizes():
    lp = targets.get("gaussian", dim=2)
    with pytest.raises(ValueError, match="n >= 1 rows"):
        svgd(lp, torch.zeros(0, 2), 3)
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        svgd(lp, torch.zeros(4, 2), -1)
    with pytest.raises(ValueError, match="step_size must be a finite number > 0"):
        svgd(lp, torch.randn(4, 2), 3, step_size=math.nan)
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        diagnose(flows.build("gaussian", 2), lp, n=1)


# 12. PSIS k-hat of equal weights; float64 flows; flow files that are not flows.
def test_khat_of_equal_weights_is_reported_as_such():
    assert psis_khat(torch.zeros(500)) == -math.inf
    q = flows.build("gaussian", 1)
    d = diagnose(q, targets.get("gaussian", dim=1), n=500)
    assert d.k_hat == -math.inf and "all weights equal" in str(d)
    assert psis_khat(torch.randn(500, generator=torch.Generator().manual_seed(0))) < 0.7


def test_float64_flow_reloads_as_float64_and_bad_files_are_clear(tmp_path):
    q = flows.build("realnvp", 2, layers=2, hidden=(8,)).double()
    flows.save(q, tmp_path / "flow.pt")
    back = flows.load(tmp_path / "flow.pt")
    assert all(p.dtype == torch.float64 for p in back.parameters())
    xi = torch.randn(5, 2, dtype=torch.float64)
    assert torch.equal(back(xi)[0], q(xi)[0])
    data = (tmp_path / "flow.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:100])
    with pytest.raises(runfiles.RunFileError, match="truncated or corrupt"):
        flows.load(tmp_path / "cut.pt")
    torch.save({"config": {"name": "gaussian"}, "state_dict": {}}, tmp_path / "odd.pt")
    with pytest.raises(runfiles.RunFileError, match="not a flow written by"):
        flows.load(tmp_path / "odd.pt")


def test_checkpoint_holds_only_tensors_and_plain_data(tmp_path):
    out = tmp_path / "run"
    assert _train(out, "--env", "Pendulum-v1", *BASE, "--steps", "32") == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)  # no globals beyond torch's
    obs = from_plain(state)["collector"]["obs"]
    assert isinstance(obs, np.ndarray) and obs.dtype == np.float32


def test_bad_options_and_unknown_names_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--algo", "a2c", "--out", str(tmp_path / "run")])
    assert exit_.value.code == 2 and "invalid choice: 'a2c'" in _error(capsys)
    assert _train(tmp_path / "run", *CARTPOLE, "--steps", "32", "--posterior", "nosuch") == 2
    assert "unknown flow 'nosuch'; known:" in _error(capsys)


def test_pendulum_resume_is_bit_for_bit_with_numpy_state(tmp_path):
    """Pendulum's physics state, obs normaliser and reward scaler travel as plain data."""
    args = ["--env", "Pendulum-v1", *BASE, "--set", "checkpoint_every=1"]
    args += ["--set", "normalize_obs=true", "--set", "normalize_reward=true"]
    assert _train(tmp_path / "a", *args, "--steps", "96") == 0
    assert _train(tmp_path / "b", *args, "--steps", "64") == 0
    assert _train(tmp_path / "b", "--resume", "--quiet", "--steps", "96") == 0
    a, b = (from_plain(runfiles.load(tmp_path / n / "checkpoint.pt")) for n in "ab")
    for part in ("policy", "critic"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    assert np.array_equal(a["normalizer"]["var"], b["normalizer"]["var"])
    assert np.array_equal(a["collector"]["obs"], b["collector"]["obs"])
    assert a["envs"]["slots"][0][-1]["attrs"]["state"].tolist() == (
        b["envs"]["slots"][0][-1]["attrs"]["state"].tolist()
    )


def test_damaged_flow_files_are_refused_never_loaded_different(tmp_path):
    import random

    q = flows.build("gaussian", 3)
    flows.save(q, tmp_path / "flow.pt")
    data, ref, bad = (tmp_path / "flow.pt").read_bytes(), q.state_dict(), tmp_path / "bad.pt"
    rng, refused = random.Random(0), 0
    for _ in range(100):
        damaged = bytearray(data)
        damaged[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        bad.write_bytes(bytes(damaged))
        try:
            got = flows.load(bad).state_dict()
        except runfiles.RunFileError:
            refused += 1
            continue
        assert all(torch.equal(got[k], ref[k]) for k in ref)  # a flip in padding: harmless
    assert refused > 30
    # One bit inside a stored parameter: torch.load alone returns the changed value.
    with torch.no_grad():
        for p in q.parameters():
            p.normal_(generator=torch.Generator().manual_seed(1))
    flows.save(q, tmp_path / "flow.pt")
    data = bytearray((tmp_path / "flow.pt").read_bytes())
    first = next(q.parameters())
    at = bytes(data).index(first.detach().numpy().tobytes()) + 1
    data[at] ^= 1
    bad.write_bytes(bytes(data))
    changed = torch.load(bad, weights_only=True)["state_dict"]
    assert any(not torch.equal(changed[k], v) for k, v in q.state_dict().items())
    with pytest.raises(runfiles.RunFileError, match="CRC-32 mismatch"):
        flows.load(bad)
