"""Learning curves: the mean over seeds with a ±1 std band, one line per config."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from rl.config import load_dict
from vi_flows.runfiles import save_figure

__all__ = ["group_runs", "plot"]

#: Fields that do not tell configs apart: the seed, the run's length and bookkeeping, and σ*,
#: which a default run calibrates per seed (config.json holds the calibrated value; its input,
#: policy_spread_target, stays in the key).
_NOT_CONFIG = {"seed", "total_steps", "checkpoint_every", "tensorboard", "posterior_std_target"}


def _label(key: str, configs: dict[str, dict]) -> str:
    """ "algo policy/posterior env", plus the fields that tell it from the other lines with the
    same start (two lr values: two lines, each naming its lr)."""

    def head(cfg: dict) -> str:
        fields = [cfg.get(k, "?") for k in ("algo", "policy", "posterior", "env_id")]
        return "{} {}/{} {}".format(*fields)

    cfg = configs[key]
    same = [c for c in configs.values() if head(c) == head(cfg)]
    differ = sorted(k for k in cfg if any(c.get(k) != cfg[k] for c in same))
    extra = ", ".join(f"{k}={cfg[k]}" for k in differ)
    return f"{head(cfg)} ({extra})" if extra else head(cfg)


def _curve(run: Path) -> tuple[np.ndarray, np.ndarray]:
    points = []
    with (run / "progress.csv").open(newline="") as f:
        for r in csv.DictReader(f):
            try:
                points.append((float(r["env_steps"]), float(r["return_mean"])))
            except (KeyError, TypeError, ValueError):  # a row torn by a crash
                continue
    points = [p for p in points if np.isfinite(p[1])]
    steps = np.array([p[0] for p in points])
    returns = np.array([p[1] for p in points])
    return steps, returns


def group_runs(runs: list[str | Path]) -> dict[str, list[Path]]:
    """The runs by config, seed (and length) aside, under each line's label.

    Raises:
        FileNotFoundError: a run without ``progress.csv``.
    """
    groups: dict[str, list[Path]] = defaultdict(list)
    configs: dict[str, dict] = {}
    for run in map(Path, runs):
        if not (run / "progress.csv").exists():
            raise FileNotFoundError(f"{run} has no progress.csv (not a vi-rl run directory)")
        cfg = {k: v for k, v in load_dict(run / "config.json").items() if k not in _NOT_CONFIG}
        key = json.dumps(cfg, sort_keys=True, default=str)
        groups[key].append(run)
        configs[key] = cfg
    return {_label(key, configs): members for key, members in groups.items()}


def plot(runs: list[str | Path], output: str | Path = "curves.png", points: int = 100) -> Path:
    """Plot episodic return against env steps; runs with the same config except the seed share
    a line (mean over seeds on a common grid, shaded ±1 std). Returns the PNG path.

    Raises:
        FileNotFoundError: a run without ``progress.csv``.
        ValueError: when no run has two rows with a return (nothing would be drawn).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_runs(runs)
    curves_of = {}
    for label, members in sorted(groups.items()):
        curves = [c for c in map(_curve, members) if len(c[0]) > 1]
        if curves:
            curves_of[label] = curves
    if not curves_of:
        names = ", ".join(str(r) for r in runs)
        raise ValueError(
            f"nothing to plot: {names} have fewer than 2 progress rows with an episode return "
            "(train longer, or pass runs that finished some episodes)"
        )
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, curves in curves_of.items():
        end = min(c[0][-1] for c in curves)
        grid = np.linspace(max(c[0][0] for c in curves), end, points)
        ys = np.stack([np.interp(grid, s, r) for s, r in curves])
        mean, std = ys.mean(0), ys.std(0)
        ax.plot(grid, mean, label=f"{label} (n={len(curves)})")
        ax.fill_between(grid, mean - std, mean + std, alpha=0.25)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episodic return")
    if ax.lines:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    output = Path(output)
    fig.tight_layout()
    save_figure(fig, output, dpi=120)  # atomic: the old figure or the new one
    plt.close(fig)
    return output
