"""The vi-flows command line and the figures it writes."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from vi_flows import flows
from vi_flows.cli import main
from vi_flows.fit import fit
from vi_flows.plots import density_grid, plot_fit


def test_fit_writes_everything_and_show_reloads(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    args = ["fit", "banana", "--flow", "gaussian", "--steps", "50", "--eval-samples", "2000"]
    assert main([*args, "--out", str(out), "--quiet", "--lr", "1e-2"]) == 0
    printed = capsys.readouterr().out
    assert "ESS / n" in printed and "PSIS k-hat" in printed
    for name in ("flow.pt", "history.csv", "run.json", "fit.png"):
        assert (out / name).stat().st_size > 0, name
    with (out / "history.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 50
    meta = json.loads((out / "run.json").read_text())
    assert meta["flow"] == "gaussian" and meta["dim"] == 2
    assert main(["show", str(out), "--eval-samples", "2000"]) == 0
    shown = capsys.readouterr().out
    # The reloaded flow reproduces the ELBO printed at fit time up to Monte Carlo error.
    elbo_fit = meta["diagnostics"]["elbo"]
    elbo_line = next(line for line in shown.splitlines() if line.startswith("ELBO"))
    elbo_show = float(elbo_line.split("|")[1].split("±")[0])
    assert elbo_show == pytest.approx(elbo_fit, abs=0.1)


def test_flow_options_and_any_dim_targets(tmp_path) -> None:
    out = tmp_path / "funnel"
    argv = [
        "fit",
        "funnel",
        "--dim",
        "3",
        "--flow",
        "realnvp",
        "-o",
        "layers=2",
        "-o",
        "hidden=(8,)",
        "--steps",
        "5",
        "--eval-samples",
        "500",
        "--quiet",
    ]
    assert main([*argv, "--out", str(out)]) == 0
    q = flows.load(out / "flow.pt")
    assert q.dim == 3 and q.config["options"] == {"layers": 2, "hidden": (8,)}


def test_unknown_names_are_clear_errors(tmp_path, capsys) -> None:
    assert main(["fit", "u1", "--flow", "nope", "--out", str(tmp_path / "a")]) == 2
    assert "unknown flow 'nope'" in capsys.readouterr().err
    assert main(["fit", "nope", "--out", str(tmp_path / "b")]) == 2
    assert "unknown target" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_density_grid_is_normalized_and_peaks_at_the_mode() -> None:
    grid = density_grid(
        lambda x: -0.5 * ((x - 1.0) / 0.3).square().sum(-1), [(-2, 2), (-2, 2)], resolution=101
    )
    assert grid.sum() == pytest.approx(1.0)
    row, col = divmod(int(grid.argmax()), 101)  # rows index y, columns index x
    assert abs(-2 + 4 * col / 100 - 1.0) < 0.05 and abs(-2 + 4 * row / 100 - 1.0) < 0.05


def test_plot_fit_for_2d_and_higher_dims(tmp_path) -> None:
    for dim in (2, 5):
        q = flows.build("planar", dim, layers=2)
        history = fit(q, lambda x: -0.5 * x.square().sum(-1), 5, progress=False)
        path = plot_fit(lambda x: -0.5 * x.square().sum(-1), q, history, tmp_path / f"{dim}.png")
        assert path.stat().st_size > 1000


def test_fit_is_reproducible_under_a_seed(tmp_path) -> None:
    argv = ["fit", "u1", "--steps", "5", "--eval-samples", "500", "--quiet", "--seed", "3"]
    for name in ("a", "b"):
        assert main([*argv, "--out", str(tmp_path / name)]) == 0
    a, b = flows.load(tmp_path / "a" / "flow.pt"), flows.load(tmp_path / "b" / "flow.pt")
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
