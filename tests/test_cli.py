"""vi-flows fit/show: turnkey mode, user files as targets, and one clear line for bad input."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch

from vi_flows import cli, flows
from vi_flows.cli import main

MODEL = """
import torch

def good(x):
    return -0.5 * ((x - 1.0) / 0.5).square().sum(-1)

def bad_shape(x):
    return x.sum()

def not_a_tensor(x):
    return 1.0

def three_d(x):
    return -(x @ torch.ones(3)).square()

def far(x):
    return -0.5 * ((x - 5.0) / 0.1).square().sum(-1)
"""


@pytest.fixture()
def model(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(MODEL)
    return path


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vi-flows: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_turnkey_fit_of_a_function_in_a_file(tmp_path, model, capsys) -> None:
    out = tmp_path / "run"
    argv = ["fit", f"{model}:good", "--dim", "1", "--eval-samples", "2000", "--draws", "300"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "conditioning: laplace" in printed and "verdict    good" in printed
    with (out / "draws.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 300 and set(rows[0]) == {"theta[1]", "log_weight"}
    mean = sum(float(r["theta[1]"]) for r in rows) / len(rows)
    assert abs(mean - 1.0) < 0.1
    # without --draws: 4000 rows, or every evaluation draw when there are fewer
    argv = ["fit", f"{model}:good", "--dim", "1", "--eval-samples", "500", "--time-budget", "5"]
    assert main([*argv, "--out", str(tmp_path / "few"), "--quiet"]) == 0
    assert len((tmp_path / "few" / "draws.csv").read_text().splitlines()) == 1 + 500
    meta = json.loads((out / "run.json").read_text())
    assert meta["flow"] == "preconditioned" and "verdict" in meta["infer"]
    q = flows.load(out / "flow.pt")
    assert q.dim == 1
    assert main(["show", str(out)]) == 0  # the user's file is not re-imported
    assert "not re-imported" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["fit", "{model}:good"], "--dim is required"),
        (["fit", "missing.py:good", "--dim", "2"], "target file 'missing.py' not found"),
        (["fit", "{model}:nothere", "--dim", "2"], "has no function 'nothere'"),
        (["fit", "{model}:bad_shape", "--dim", "2"], "returned () for inputs (2, 2)"),
        (["fit", "{model}:not_a_tensor", "--dim", "2"], "returned float"),
        (["fit", "--samples", "0"], "--samples must be >= 1, got 0"),
        (["fit", "--eval-samples", "50"], "--eval-samples must be >= 100, got 50"),
        (["fit", "--steps", "-1"], "--steps must be >= 0, got -1"),
        (["fit", "--dim", "0", "funnel"], "--dim must be >= 1, got 0"),
        (["fit", "--dim", "abc"], "argument --dim: invalid int value"),
        (["fit", "--objective", "nope"], "unknown loss 'nope'"),
        (["fit", "{model}:three_d", "--dim", "2"], "failed on inputs (2, 2) (RuntimeError"),
        (["fit", "--time-budget", "inf"], "--time-budget must be finite and > 0 seconds, got inf"),
        (["fit", "--steps", "3", "--objective", "iw"], "--objective, --precondition and --time"),
        (["fit", "--flow", "gaussian", "--precondition", "none"], "are infer's: drop --flow"),
        (["fit", "--draws", "200", "--eval-samples", "150"], "--draws must be <= --eval-samples"),
        (["show", "{tmp}/nothing"], "run.json not found"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, model, capsys, argv, needle) -> None:
    argv = [a.format(model=model, tmp=tmp_path) for a in argv]
    assert main([*argv, "--out", str(tmp_path / "out")] if argv[0] == "fit" else argv) == 2
    assert needle in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_the_plain_loop_says_when_its_fit_misses(tmp_path, model, capsys) -> None:
    """A plain fit far from its target exits 0 (the run is written) but says UNRELIABLE on
    stderr; a fit that matches says nothing."""
    argv = ["fit", f"{model}:far", "--dim", "2", "--flow", "gaussian", "--quiet"]
    assert (
        main([*argv, "--steps", "0", "--eval-samples", "2000", "--out", str(tmp_path / "a")]) == 0
    )
    err = capsys.readouterr().err
    assert (
        err.startswith("vi-flows: warning: UNRELIABLE: PSIS k-hat = ")
        and len(err.splitlines()) == 1
    )
    argv = ["fit", f"{model}:good", "--dim", "1", "--flow", "gaussian", "--quiet"]
    assert (
        main([*argv, "--steps", "400", "--eval-samples", "2000", "--out", str(tmp_path / "b")]) == 0
    )
    assert "warning" not in capsys.readouterr().err


def test_unwritable_out_fails_before_fitting(tmp_path, capsys, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(cli, "fit", lambda *a, **k: pytest.fail("fit must not run"))
    assert main(["fit", "--steps", "5", "--out", str(blocker / "sub")]) == 2
    assert "--out" in _one_line_error(capsys)


def test_flow_and_history_are_saved_before_diagnosing(tmp_path, capsys, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise ValueError("diagnostics failed")

    monkeypatch.setattr(cli, "diagnose", broken)
    out = tmp_path / "run"
    argv = ["fit", "banana", "--flow", "gaussian", "--steps", "20", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 2
    assert "diagnostics failed" in _one_line_error(capsys)
    assert flows.load(out / "flow.pt").dim == 2
    assert len((out / "history.csv").read_text().splitlines()) == 21


def test_corrupt_or_crafted_flow_files_are_one_line(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"target": "banana", "target_options": {}}))
    (run / "flow.pt").write_bytes(b"PK\x03\x04 truncated")
    assert main(["show", str(run)]) == 2
    assert "truncated or corrupt" in _one_line_error(capsys)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"config": Evil()}, run / "flow.pt")
    assert main(["show", str(run)]) == 2
    line = _one_line_error(capsys)
    assert "refused" in line and "nothing in it was run" in line and "weights_only" not in line
    assert not (tmp_path / "pwned").exists()
    (run / "run.json").write_text("{not json")
    assert main(["show", str(run)]) == 2
    assert "invalid JSON" in _one_line_error(capsys)
    for meta, needle in [
        ({"target": 5, "target_options": {}}, "'target' must be a string"),
        ({"target": "banana", "target_options": []}, "'target_options' an object"),
        ([1, 2], "expected a JSON object"),
    ]:
        (run / "run.json").write_text(json.dumps(meta))
        assert main(["show", str(run)]) == 2
        assert needle in _one_line_error(capsys)


def test_debug_shows_the_traceback(tmp_path) -> None:
    with pytest.raises(ValueError, match="--samples"):
        main(["fit", "--samples", "0", "--debug"])


def test_a_refused_fit_leaves_no_folder_not_even_runs(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default --out is runs/TARGET-FLOW
    assert main(["fit", "--objective", "bogus"]) == 2
    assert "unknown loss 'bogus'; known: " in _one_line_error(capsys)
    monkeypatch.setattr(cli, "infer", lambda *a, **k: (_ for _ in ()).throw(ValueError("boom")))
    assert main(["fit", "--quiet"]) == 2  # fails after runs/u1-realnvp was made
    assert "boom" in _one_line_error(capsys)
    assert not (tmp_path / "runs").exists()


def test_a_closed_pipe_ends_quietly(capsys, monkeypatch) -> None:
    def closed():
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli.targets, "names", closed)  # what `vi-flows list | head` meets
    assert main(["list"]) == 141
    assert capsys.readouterr().err == ""
