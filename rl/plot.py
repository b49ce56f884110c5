"""Learning curves: mean ± spread (min–max band and ±1 std) over seeds, one line per config."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

__all__ = ["plot"]


def _curve(run: Path) -> tuple[np.ndarray, np.ndarray]:
    with (run / "progress.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["return_mean"] not in ("", "nan")]
    steps = np.array([float(r["env_steps"]) for r in rows])
    returns = np.array([float(r["return_mean"]) for r in rows])
    return steps, returns


def plot(runs: list[str | Path], output: str | Path = "curves.png", points: int = 100) -> Path:
    """Plot episodic return against env steps; runs with the same config except the seed share
    a line (mean over seeds on a common grid, shaded ±1 std). Returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[Path]] = defaultdict(list)
    for run in map(Path, runs):
        if not (run / "progress.csv").exists():
            raise FileNotFoundError(f"{run} has no progress.csv (not a vi-rl run directory)")
        cfg = json.loads((run / "config.json").read_text())
        label = f"{cfg['algo']} {cfg['policy']}/{cfg['posterior']} {cfg['env_id']}"
        groups[label].append(run)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, members in sorted(groups.items()):
        curves = [_curve(r) for r in members]
        curves = [c for c in curves if len(c[0]) > 1]
        if not curves:
            continue
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
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output
