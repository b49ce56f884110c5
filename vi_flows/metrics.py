"""Sample-based discrepancies between an approximation's draws and exact (reference) draws.

Used by the density benchmark to compare flows and SVGD on equal terms: every metric takes two
sample sets, so a flow's draws and SVGD's particles are scored the same way. Also the
mode-discovery metrics: EUBO and forward ESS from reference samples, entropic mode coverage and a
mode count for targets that declare their modes, and AIS log Z beside IS log Z.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from vi_flows.ais import ais
from vi_flows.diagnostics import diagnose
from vi_flows.kernels import pairwise_sq_dists
from vi_flows.objectives import as_log_prob

__all__ = [
    "count_modes",
    "entropic_mode_coverage",
    "eubo",
    "forward_ess",
    "log_z_estimates",
    "mmd2",
    "moment_errors",
    "modes_covered",
    "sliced_wasserstein",
    "target_modes",
]


def mmd2(x: Tensor, y: Tensor, bandwidth: float | None = None) -> float:
    """Unbiased MMD² with the Gaussian kernel k(a, b) = exp(−‖a − b‖² / (2 ℓ² d)).

    The length scale is fixed per dimension — ℓ = ``bandwidth`` (default 1) times √d — so that the
    kernel's reach does not shrink as d grows; it is *not* adapted to the samples, so every
    method is scored with the same kernel on a given target. Compute it on standardized
    coordinates (divide by the reference sd) to make targets of different scales comparable.

    >>> g = torch.Generator().manual_seed(0)
    >>> a, b = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
    >>> abs(mmd2(a, b)) < 0.01, mmd2(a, b + 1.0) > 0.1
    (True, True)
    """
    x, y = x.double(), y.double()
    d = x.shape[-1]
    scale = 2.0 * (1.0 if bandwidth is None else bandwidth) ** 2 * d
    n, m = len(x), len(y)
    kxx = torch.exp(-pairwise_sq_dists(x, x) / scale)
    kyy = torch.exp(-pairwise_sq_dists(y, y) / scale)
    kxy = torch.exp(-pairwise_sq_dists(x, y) / scale)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(term_x + term_y - 2 * kxy.mean())


def sliced_wasserstein(x: Tensor, y: Tensor, projections: int = 128, seed: int = 0) -> float:
    """Sliced Wasserstein-1: the mean over random unit directions of the 1-D W₁ distance.

    The 1-D W₁ between projected samples is ∫|F⁻¹(u) − G⁻¹(u)| du, computed on a common grid of
    quantile levels so that the two sets may have different sizes. Directions come from a fixed
    seed, so every method is scored on the same slices.
    """
    x, y = x.double(), y.double()
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(x.shape[-1], projections, generator=gen, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    levels = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    qx = torch.quantile(x @ dirs, levels, dim=0)
    qy = torch.quantile(y @ dirs, levels, dim=0)
    return float((qx - qy).abs().mean())


def moment_errors(x: Tensor, mean: Tensor, std: Tensor) -> tuple[float, float]:
    """(max |mean error| / sd, max |log(sd ratio)|) over coordinates, in units of the true sd."""
    x = x.double()
    mean_err = ((x.mean(0) - mean.double()) / std.double()).abs().max()
    sd_err = (x.std(0) / std.double()).log().abs().max()
    return float(mean_err), float(sd_err)


def modes_covered(x: Tensor, modes: Tensor, radius: float, min_fraction: float = 0.02) -> float:
    """Fraction of ``modes`` that hold at least ``min_fraction``/k of the samples within ``radius``.

    A mode counts as covered when the share of samples closest to it (and within ``radius``) is at
    least ``min_fraction`` of the uniform share 1/k — so a handful of stray samples does not
    count as covering a mode.
    """
    x, modes = x.double(), modes.double()
    k = len(modes)
    dist = torch.cdist(x, modes)
    nearest = dist.argmin(-1)
    close = dist.gather(-1, nearest[:, None]).squeeze(-1) <= radius
    counts = torch.bincount(nearest[close], minlength=k).double()
    share = counts / max(len(x), 1)
    return float((share >= min_fraction / k).double().mean()) if k else math.nan


def _log_w_at(q: Any, log_prob: Any, x: Tensor) -> Tensor:
    with torch.no_grad():
        return (as_log_prob(log_prob)(x) - q.log_prob(x.to(_dtype_of(q)))).double()


def _dtype_of(q: Any) -> torch.dtype:
    if isinstance(q, nn.Module):
        for tensor in q.parameters():
            return tensor.dtype
    return torch.get_default_dtype()


def eubo(q: Any, log_prob: Any, reference: Tensor) -> float:
    """Evidence upper bound E_p[log p̃ − log q] ≥ log Z from exact samples of p (``reference``).

    EUBO − log Z = KL(p‖q), the forward KL: large when q misses mass of p (Ji & Shen 2019;
    Blessing et al. 2024 report it beside the ELBO). Needs ``q.log_prob``.
    """
    return float(_log_w_at(q, log_prob, reference).mean())


def forward_ess(q: Any, log_prob: Any, reference: Tensor) -> float:
    """Normalized ESS of q's importance weights estimated from exact samples of p (Blessing et al.
    2024): ESS = Z/E_p[w] with w = p̃/q and 1/Z = E_p[1/w], so ESS = n²/(Σ_i w_i Σ_i 1/w_i).

    Unlike the ESS from q's own draws, it is small when q misses a mode (the missed region gives
    huge w at p's samples there). In (0, 1]; 1 iff q = p.
    """
    log_w = _log_w_at(q, log_prob, reference)
    n = log_w.numel()
    return float((2 * math.log(n) - torch.logsumexp(log_w, 0) - torch.logsumexp(-log_w, 0)).exp())


def target_modes(target: Any) -> Tensor:
    """The target's declared mode locations (k, d).

    Raises:
        ValueError: when the target declares none (say which targets do).
    """
    modes = getattr(target, "modes", None)
    if modes is None:
        name = getattr(target, "name", type(target).__name__)
        raise ValueError(
            f"target {name!r} declares no modes, so mode coverage is undefined; use a target with "
            "`modes` (mixture, ring, mog40, mos, manywell with d <= 24) or pass modes=(k, d)"
        )
    return torch.as_tensor(modes, dtype=torch.float64)


def _mode_shares(x: Tensor, modes: Tensor) -> Tensor:
    nearest = torch.cdist(x.double(), modes.double()).argmin(-1)
    return torch.bincount(nearest, minlength=len(modes)).double() / max(len(x), 1)


def entropic_mode_coverage(x: Tensor, target: Any) -> float:
    """Entropic mode coverage (Blessing et al. 2024): with s_k the share of samples whose nearest
    declared mode is k, EMC = −Σ_k s_k log s_k / log K ∈ [0, 1]; 1 when the samples spread
    evenly over the K modes, 0 when they sit in one. (For unequal mode weights the maximum is
    below 1.) Raises ``ValueError`` for a target without declared modes."""
    modes = target_modes(target)
    if len(modes) < 2:
        return 1.0
    s = _mode_shares(x, modes)
    s = s[s > 0]
    return float(-(s * s.log()).sum() / math.log(len(modes)))


def count_modes(x: Tensor, target: Any, *, min_fraction: float = 0.2) -> int:
    """How many declared modes hold at least ``min_fraction`` of their fair share 1/K of the
    samples (nearest-mode assignment); the issue's mog40 criterion is ``min_fraction=0.2``.
    Raises ``ValueError`` for a target without declared modes."""
    modes = target_modes(target)
    return int((_mode_shares(x, modes) >= min_fraction / len(modes)).sum())


def log_z_estimates(q: Any, log_prob: Any, n: int = 10_000, **ais_options: Any) -> dict[str, float]:
    """Plain importance-sampling log Z from q beside AIS's from q (:func:`vi_flows.ais.ais`).

    Returns ``is_log_z``, ``is_log_z_se``, ``ais_log_z``, ``ais_log_z_se``, ``ais_ess`` and, when
    the target knows it, ``log_z``.
    """
    d = diagnose(q, log_prob, n=n)
    r = ais(log_prob, q, n, **ais_options)
    out = {
        "is_log_z": d.log_z,
        "is_log_z_se": d.log_z_se,
        "ais_log_z": r.log_z,
        "ais_log_z_se": r.log_z_se,
        "ais_ess": r.ess,
    }
    if d.true_log_z is not None:
        out["log_z"] = d.true_log_z
    return out
