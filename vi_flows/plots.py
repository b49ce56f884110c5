"""Matplotlib figures: a 2-D target beside the flow's samples and density, and the loss curve."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # figures are written to files; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vi_flows import runfiles  # noqa: E402
from vi_flows.fit import History  # noqa: E402
from vi_flows.flows import Flow  # noqa: E402
from vi_flows.objectives import as_log_prob  # noqa: E402

__all__ = ["density_grid", "plot_density_2d", "plot_loss", "plot_fit"]

Bounds = Sequence[Sequence[float]]


@torch.no_grad()
def density_grid(log_prob: Any, bounds: Bounds, resolution: int = 200) -> np.ndarray:
    """exp(log p) on a ``resolution``² grid over ``bounds``, normalized to sum to one."""
    (x0, x1), (y0, y1) = bounds
    xs = torch.linspace(x0, x1, resolution)
    ys = torch.linspace(y0, y1, resolution)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    log_p = as_log_prob(log_prob)(grid).double()
    dens = (log_p - log_p.max()).exp().reshape(resolution, resolution)
    return (dens / dens.sum()).numpy()


def _bounds_of(target: Any, samples: np.ndarray) -> Bounds:
    bounds = getattr(target, "bounds", None)
    if bounds is not None:
        return bounds
    lo, hi = np.quantile(samples, [0.005, 0.995], axis=0)
    pad = 0.1 * (hi - lo)
    return [(lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])]


@torch.no_grad()
def plot_density_2d(
    target: Any, q: Flow, axes: Sequence[Any] | None = None, n: int = 20_000, title: str = ""
) -> Any:
    """Three panels: the target density, samples of q, and q's density (or its histogram).

    Args:
        target: a 2-D target (``bounds`` is used for the view when it has one) or callable.
        q: a flow over ℝ².
        axes: three matplotlib axes to draw in; a new figure is made when omitted.
        n: number of samples from q.
        title: prefix for the panel titles.

    Returns:
        The figure.
    """
    if q.dim != 2:
        raise ValueError(f"plot_density_2d needs a 2-D flow, got dim={q.dim}")
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    fig = axes[0].figure
    samples = q.sample(n).float().numpy()
    bounds = _bounds_of(target, samples)
    extent = [*bounds[0], *bounds[1]]
    axes[0].imshow(density_grid(target, bounds), origin="lower", extent=extent, aspect="auto")
    axes[0].set_title(f"{title} target".strip())
    axes[1].hist2d(samples[:, 0], samples[:, 1], bins=100, range=bounds, cmap="viridis")
    axes[1].set_title(f"{title} flow samples".strip())
    if q.has_log_prob:
        axes[2].imshow(density_grid(q, bounds), origin="lower", extent=extent, aspect="auto")
        axes[2].set_title(f"{title} flow density".strip())
    else:
        axes[2].hist2d(samples[:, 0], samples[:, 1], bins=60, range=bounds, density=True)
        axes[2].set_title(f"{title} flow density (histogram; no inverse)".strip())
    for ax in axes:
        ax.set_xlim(bounds[0])
        ax.set_ylim(bounds[1])
    return fig


def plot_loss(history: History, ax: Any | None = None, log_z: float | None = None) -> Any:
    """The ELBO per step (and log Z as a line when known)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    elbo = np.asarray(history.elbo, dtype=float)
    ax.plot(history.step, elbo, lw=0.6, alpha=0.5, label="ELBO (per step)")
    if len(elbo) >= 20:
        w = max(len(elbo) // 50, 5)
        smooth = np.convolve(np.nan_to_num(elbo, nan=np.nanmean(elbo)), np.ones(w) / w, "valid")
        ax.plot(history.step[w - 1 :], smooth, lw=1.5, label=f"ELBO ({w}-step mean)")
    if log_z is not None:
        ax.axhline(log_z, color="k", ls="--", lw=1, label="log Z")
        finite = elbo[np.isfinite(elbo)]
        if finite.size:
            ax.set_ylim(np.quantile(finite, 0.05) - 0.5, log_z + 0.5)
    ax.set_xlabel("step")
    ax.set_ylabel("ELBO")
    ax.legend(loc="lower right")
    return ax.figure


def plot_fit(target: Any, q: Flow, history: History, path: str | Path, title: str = "") -> Path:
    """Write one figure with the 2-D panels (when dim = 2) and the loss curve; returns the path."""
    two_d = q.dim == 2
    fig, axes = plt.subplots(1, 4 if two_d else 1, figsize=(16 if two_d else 5, 4))
    axes = np.atleast_1d(axes)
    if two_d:
        plot_density_2d(target, q, axes[:3], title=title)
    plot_loss(history, axes[-1], getattr(target, "log_z", None))
    fig.tight_layout()
    path = Path(path)
    runfiles.save_figure(fig, path, dpi=110)  # a crash leaves the old figure or none, never torn
    plt.close(fig)
    return path
