"""Fault injection: SIGKILL at the first write to each file a run writes, then resume/eval/show.

Each faulted command runs in a subprocess under ``tests/fault_shim.py`` (pure Python, no strace),
which tears that write in half and SIGKILLs the process. Afterwards every file left behind must
load (nothing corrupted), and continuing the run must give exactly the uninterrupted result. A
crafted pickle in ``checkpoint.pt`` or ``flow.pt`` must execute nothing.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rl.checkpoint import from_plain
from rl.cli import main as rl_main
from vi_flows import flows, runfiles
from vi_flows.cli import main as flows_main

ROOT = Path(__file__).resolve().parents[1]
SHIM = ROOT / "tests" / "fault_shim.py"
RL = "--env CartPole-v1 --no-preset --quiet --set num_envs=2 --set rollout_steps=16".split()
RL += ["--set", "hidden=16", "--set", "tensorboard=false", "--set", "checkpoint_every=2"]
FIT = ["u1", "--flow", "gaussian", "--steps", "30", "--samples", "32", "--eval-samples", "500"]
FIT += ["--quiet", "--lr", "0.05"]


def _faulted(module: str, args: list[str], file: str, at: str = "write", skip: int = 0):
    env = {**os.environ, "FAULT_FILE": file, "FAULT_AT": at, "FAULT_SKIP": str(skip)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, str(SHIM), module, *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, f"not killed at {file}: {done.stderr[-2000:]}"


def _rows(out: Path) -> list[dict]:
    """progress.csv rows without the columns that depend on wall-clock time."""
    with (out / "progress.csv").open(newline="") as f:
        return [
            {k: v for k, v in r.items() if k not in ("wall_time", "sps")} for r in csv.DictReader(f)
        ]


def _state(out: Path) -> dict:
    return from_plain(runfiles.load(out / "checkpoint.pt"))


def _intact_rl(out: Path, min_rows: int = 0) -> None:
    """Every file the run left loads; progress rows are whole and numbered 1, 2, …"""
    if (out / "progress.csv").exists():
        rows = _rows(out)
        assert len(rows) >= min_rows, f"progress rows lost: {len(rows)} left"
        assert [int(r["update"]) for r in rows] == list(range(1, len(rows) + 1))
        assert all(None not in r.values() for r in rows)
    if (out / "config.json").exists():
        json.loads((out / "config.json").read_text())
    if (out / "checkpoint.pt").exists():
        _state(out)


def _same_run(a: Path, b: Path) -> None:
    sa, sb = _state(a), _state(b)
    assert sa["update"] == sb["update"]
    for part in ("policy", "critic"):
        for key in sa[part]:
            assert torch.equal(sa[part][key], sb[part][key]), (part, key)
    assert _rows(a) == _rows(b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run: 6 updates, checkpoints at 2, 4, 6."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert rl_main(["train", *RL, "--steps", "192", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    "file, at",
    [
        ("checkpoint.pt", "write"),
        ("checkpoint.pt", "replace"),
        ("progress.csv", "write"),
        ("config.json", "write"),
    ],
)
def test_rl_kill_during_resume_then_resume_equals_uninterrupted(reference, tmp_path, file, at):
    out = tmp_path / "run"
    assert rl_main(["train", *RL, "--steps", "128", "--out", str(out)]) == 0
    _faulted("rl.cli", ["train", *RL, "--steps", "192", "--out", str(out), "--resume"], file, at)
    _intact_rl(out, min_rows=4)
    assert _state(out)["update"] == 4  # the last good checkpoint survived the kill
    assert rl_main(["eval", str(out), "--episodes", "1"]) == 0
    assert rl_main(["train", *RL, "--steps", "192", "--out", str(out), "--resume"]) == 0
    _same_run(out, reference)


def test_rl_kill_at_first_checkpoint_leaves_a_restartable_run(reference, tmp_path, capsys):
    out = tmp_path / "run"
    _faulted("rl.cli", ["train", *RL, "--steps", "192", "--out", str(out)], "checkpoint.pt")
    _intact_rl(out)
    assert not (out / "checkpoint.pt").exists()
    assert rl_main(["train", *RL, "--steps", "192", "--out", str(out), "--resume"]) == 2
    assert "no checkpoint.pt" in capsys.readouterr().err
    assert rl_main(["train", *RL, "--steps", "192", "--out", str(out), "--overwrite"]) == 0
    _same_run(out, reference)


def _fit_result(out: Path) -> tuple[dict, list[list[str]]]:
    with (out / "history.csv").open(newline="") as f:
        history = list(csv.reader(f))
    return flows.load(out / "flow.pt").state_dict(), history


@pytest.fixture(scope="module")
def fit_reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fitref") / "run"
    assert flows_main(["fit", *FIT, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("file", ["flow.pt", "history.csv"])
def test_fit_cli_kill_at_first_write_then_rerun_equals_uninterrupted(fit_reference, tmp_path, file):
    out = tmp_path / "run"
    _faulted("vi_flows.cli", ["fit", *FIT, "--out", str(out)], file)
    if (out / "flow.pt").exists():  # nothing torn: absent, or a whole flow
        flows.load(out / "flow.pt")
    if (out / "history.csv").exists():
        rows = list(csv.reader((out / "history.csv").open(newline="")))
        assert len(rows) == 31 and all(len(r) == len(rows[0]) for r in rows)
    assert flows_main(["fit", *FIT, "--out", str(out)]) == 0
    assert flows_main(["show", str(out), "--eval-samples", "500"]) == 0
    (state, history), (ref_state, ref_history) = _fit_result(out), _fit_result(fit_reference)
    assert history == ref_history
    assert all(torch.equal(state[k], ref_state[k]) for k in ref_state)


FIT_SCRIPT = """
import sys, torch
from vi_flows import flows, targets
from vi_flows.fit import fit
torch.manual_seed(0)
q = flows.build("gaussian", 2)
fit(q, targets.get("banana"), 20, num_samples=16, seed=1, checkpoint=sys.argv[1],
    checkpoint_every=5, resume=True, progress=False)
flows.save(q, sys.argv[2])
"""


def test_fit_checkpoint_kill_then_resume_equals_uninterrupted(tmp_path):
    def run(ckpt: Path, out: Path) -> dict:
        code = FIT_SCRIPT.replace("sys.argv[1]", repr(str(ckpt))).replace(
            "sys.argv[2]", repr(str(out))
        )
        exec(compile(code, "<fit>", "exec"), {})
        return flows.load(out).state_dict()

    reference = run(tmp_path / "ref.pt", tmp_path / "ref_flow.pt")
    ckpt = tmp_path / "c.pt"
    args = [FIT_SCRIPT.replace("sys.argv[1]", repr(str(ckpt)))]
    args[0] = args[0].replace("sys.argv[2]", repr(str(tmp_path / "x.pt")))
    _faulted("-c", args, "c.pt", skip=1)  # killed while writing the step-10 checkpoint
    assert runfiles.load(ckpt)["step"] == 5
    resumed = run(ckpt, tmp_path / "flow.pt")
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


class _Opener:
    """Unpickling this calls open(marker, "w"): the file appears iff the pickle ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_pickles_execute_nothing(reference, fit_reference, tmp_path, capsys):
    import shutil

    run, fitted = tmp_path / "run", tmp_path / "fit"
    shutil.copytree(reference, run)
    shutil.copytree(fit_reference, fitted)
    marker = tmp_path / "pwned"
    torch.save({"update": 1, "policy": _Opener(marker)}, run / "checkpoint.pt")
    torch.save({"config": _Opener(marker), "state_dict": {}}, fitted / "flow.pt")
    capsys.readouterr()

    def attempt(command, argv):
        try:
            return command(argv)
        except (Exception, SystemExit):  # how a failure is worded is checked below
            return "raised"
        finally:
            assert not marker.exists(), f"loading ran the file's code: {argv}"

    assert attempt(rl_main, ["eval", str(run), "--episodes", "1"]) == 2
    assert attempt(rl_main, ["train", *RL, "--steps", "256", "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("refused" in line for line in err), err
    assert attempt(flows_main, ["show", str(fitted), "--eval-samples", "500"]) != 0
    with pytest.raises(runfiles.RunFileError, match="refused"):
        flows.load(fitted / "flow.pt")
