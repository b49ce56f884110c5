r"""Stein kernels for SVGD and kernel metrics: pair distances, the median bandwidth, RBF and IMQ.

A kernel k(x, y) = f(‖x − y‖² / h²) enters SVGD through its Gram matrix and the repulsive term
Σ_j ∇_{x_j} k(x_j, x_i) (:class:`SteinKernel`). Pair terms are computed in blocks of rows
(:func:`row_chunks`), never as an (n, n, d) tensor, and the median heuristic is exact without
sorting all n(n−1)/2 pair values (:func:`median_bandwidth`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from vi_flows import distributed
from vi_flows.registry import Registry

__all__ = [
    "IMQ",
    "KERNELS",
    "RBF",
    "IsotropicKernel",
    "SteinKernel",
    "get_kernel",
    "median_bandwidth",
    "pairwise_sq_dists",
    "row_chunks",
]

#: Elements of one (rows, n) block when ``chunk_size`` is None (16 MiB in float32).
_BLOCK_ELEMENTS = 1 << 22


def row_chunks(n: int, chunk_size: int | None, n_cols: int | None = None) -> Iterator[slice]:
    """Row blocks of ``range(n)`` such that a (rows, n_cols) block (default n_cols = n) stays
    within the memory budget (``chunk_size`` rows each when given).

    Example:
        >>> list(row_chunks(5, 2))
        [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    cols = n if n_cols is None else n_cols
    size = chunk_size if chunk_size is not None else max(1, _BLOCK_ELEMENTS // max(cols, 1))
    if size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def pairwise_sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """‖a_i − b_j‖² of shape (m, n) via the Gram identity, clamped at 0 against round-off.

    The identity avoids an (m, n, d) difference tensor; callers center the particles first
    (the kernels are translation invariant) so that its cancellation error stays small.
    """
    norms = a.square().sum(-1, keepdim=True) + b.square().sum(-1)
    return torch.addmm(norms, a, b.T, alpha=-2.0).clamp_min(0.0)


def median_bandwidth(
    x: Tensor, chunk_size: int | None = None, *, min_bandwidth: float = 1e-6, sharded: bool = False
) -> Tensor:
    r"""The reference median heuristic ``h = sqrt(0.5 · med / log(n + 1))`` (0-dim tensor).

    ``med`` is ``np.median`` of the full n×n matrix of squared distances as in the reference code
    (diagonal zeros included, the two middle values averaged). Then k ≈ exp(−med / (2h²)) =
    1 / (n + 1) for a typical pair: each particle's kernel mass on the others is ≈ 1.

    The median is exact but never sorts all n(n−1)/2 pair values: a seeded subsample of pairs
    brackets it, one blocked pass counts the pairs below the bracket and keeps those inside, and
    the exact order statistic is taken among those few (:func:`_upper_order_stats`).

    Args:
        x: Particles of shape (n, d) (under ``sharded``, the same on every rank).
        chunk_size: Rows per block when scanning the pair distances.
        min_bandwidth: Relative floor, h ≥ min_bandwidth · max(1, max|x|). Collapsed particles
            (median 0) would give h = 0 and a 0/0 kernel; floored, K = 1 and the repulsion is 0.
        sharded: under ``torch.distributed``, each rank scans its share of the pairs and the
            counts and candidates are combined (a collective; the result is the same).
    """
    n = x.shape[0]
    xc = x - x.mean(0)
    total = n * n
    positions = sorted({(total - 1) // 2, total // 2})
    # Position p of the sorted n² entries: n diagonal zeros, then every pair value twice.
    ranks = sorted({(p - n) // 2 + 1 for p in positions if p >= n})
    values = _upper_order_stats(xc, ranks, chunk_size, sharded) if ranks else {}

    def sorted_full(p: int) -> Tensor:
        return x.new_zeros(()) if p < n else values[(p - n) // 2 + 1]

    med = 0.5 * (sorted_full(positions[0]) + sorted_full(positions[-1]))
    h = torch.sqrt(0.5 * med / math.log(n + 1))
    floor = min_bandwidth * max(1.0, x.detach().abs().max().item()) if n else min_bandwidth
    return h.clamp_min(floor)


def _balanced_rows(n: int, sharded: bool) -> tuple[int, int]:
    """This rank's rows [start, stop) of the strict upper triangle, with ~equal pair counts."""
    if not (sharded and distributed.is_distributed()):
        return 0, n
    world, rank = distributed.world_size(), distributed.rank()
    per_row = torch.arange(n - 1, -1, -1, dtype=torch.float64)  # row i has n − 1 − i pairs
    cum = torch.cumsum(per_row, 0)
    bounds = [0] + [int(torch.searchsorted(cum, cum[-1] * r / world)) + 1 for r in range(1, world)]
    bounds = [min(b, n) for b in bounds] + [n]
    return bounds[rank], max(bounds[rank], bounds[rank + 1])


def _upper_order_stats(
    xc: Tensor, ranks: list[int], chunk_size: int | None, sharded: bool
) -> dict[int, Tensor]:
    """The ranks[i]-th smallest (1-based) of the n(n−1)/2 strict-upper-triangle squared
    distances of ``xc``, exactly, without materializing them all.

    A subsample of 2¹⁶ pairs from a fixed-seed generator (the global RNG is untouched) gives a
    bracket (lo, hi] around the wanted quantiles; a blocked pass counts the pairs ≤ lo and keeps
    those in (lo, hi]; if every wanted rank falls inside, the answer is an order statistic of the
    kept values. Otherwise the bracket widens (finally to everything, the plain method).
    """
    n = xc.shape[0]
    m_total = n * (n - 1) // 2
    gen = torch.Generator().manual_seed(0x5EED)
    size = min(m_total, 1 << 16)
    i = torch.randint(n, (size,), generator=gen)
    j = torch.randint(n - 1, (size,), generator=gen)
    j = j + (j >= i).long()  # j ≠ i
    sample = (xc[i] - xc[j]).square().sum(-1).double()
    start, stop = _balanced_rows(n, sharded)
    cols = torch.arange(n, device=xc.device)
    for width in (6.0, 48.0, math.inf):
        margin = width / math.sqrt(size)
        q_lo, q_hi = min(ranks) / m_total - margin, max(ranks) / m_total + margin
        lo = -math.inf if q_lo <= 0 else float(torch.quantile(sample, q_lo))
        hi = math.inf if q_hi >= 1 or width == math.inf else float(torch.quantile(sample, q_hi))
        below = torch.zeros((), dtype=torch.float64)
        kept = []
        for rows in row_chunks(stop - start, chunk_size, n):
            rows = slice(start + rows.start, start + rows.stop)
            d2 = pairwise_sq_dists(xc[rows], xc)
            vals = d2[cols[None, :] > cols[rows, None]]  # strict upper triangle of these rows
            below += (vals <= lo).sum()
            kept.append(vals[(vals > lo) & (vals <= hi)])
        inside = torch.cat(kept) if kept else xc.new_empty(0)
        if sharded and distributed.is_distributed():
            below = distributed.all_reduce_sum(below)
            inside = distributed.all_gather_cat(inside)
        base = int(below)
        if all(base < k <= base + inside.numel() for k in ranks):
            return {k: inside.kthvalue(k - base).values for k in ranks}
    raise AssertionError("unreachable: the last bracket holds every pair")  # pragma: no cover


@runtime_checkable
class SteinKernel(Protocol):
    """What SVGD needs from a kernel: a bandwidth rule and, per block of rows, K and repulsion."""

    def bandwidth(
        self, x: Tensor, chunk_size: int | None = None, *, sharded: bool = False
    ) -> Tensor:
        """The bandwidth h (0-dim tensor) for particles ``x`` of shape (n, d). With ``sharded``
        (under ``torch.distributed``, every rank passing the same ``x``) the ranks may split the
        work of the rule between them; the result must not depend on it."""
        ...

    def gram_and_repulsion(self, rows: Tensor, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """K[i, j] = k(x_j, rows_i), shape (m, n), and Σ_j ∇_{x_j} k(x_j, rows_i), shape (m, d)."""
        ...


class IsotropicKernel:
    r"""Base for kernels k(x, y) = f(u) with u = ‖x − y‖² / h².

    Since ∇_{x_j} f(u_ij) = −2 f'(u_ij) (x_i − x_j) / h², the repulsive term is

    .. math::

        \sum_j ∇_{x_j} k(x_j, x_i) = \frac{1}{h^2}\Big(x_i \sum_j w_{ij} − \sum_j w_{ij} x_j\Big),
        \quad w_{ij} = −2 f'(u_{ij}),

    a matrix product (no (n, n, d) tensor). Subclasses implement :meth:`profile`.

    Args:
        bandwidth: Fixed h > 0, or None for the reference median heuristic.
        min_bandwidth: Relative floor of the median heuristic (see :func:`median_bandwidth`).
    """

    def __init__(self, bandwidth: float | None = None, min_bandwidth: float = 1e-6) -> None:
        if bandwidth is not None and not bandwidth > 0:
            raise ValueError(f"bandwidth must be positive, got {bandwidth}")
        self.fixed_bandwidth = bandwidth
        self.min_bandwidth = min_bandwidth

    def bandwidth(
        self, x: Tensor, chunk_size: int | None = None, *, sharded: bool = False
    ) -> Tensor:
        """Fixed h if given, else the floored median heuristic (split over ranks if
        ``sharded``)."""
        if self.fixed_bandwidth is not None:
            return torch.tensor(self.fixed_bandwidth, dtype=x.dtype, device=x.device)
        return median_bandwidth(x, chunk_size, min_bandwidth=self.min_bandwidth, sharded=sharded)

    def profile(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Return (f(u), −2 f'(u)) elementwise."""
        raise NotImplementedError

    def matrix(self, a: Tensor, b: Tensor, h: Tensor | float) -> Tensor:
        """k(a_i, b_j) of shape (m, n)."""
        return self.profile(pairwise_sq_dists(a, b) / h**2)[0]

    def gram_and_repulsion(self, rows: Tensor, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """K (m, n) and Σ_j ∇_{x_j} k(x_j, rows_i) (m, d); pass centered particles for accuracy."""
        k, w = self.profile(pairwise_sq_dists(rows, x) / h**2)
        return k, (rows * w.sum(1, keepdim=True) - w @ x) / h**2


class RBF(IsotropicKernel):
    """Gaussian kernel k = exp(−‖x − y‖² / (2h²)) of the reference code (f' = −f/2, so w = k)."""

    def profile(self, u: Tensor) -> tuple[Tensor, Tensor]:
        k = torch.exp(-0.5 * u)
        return k, k


class IMQ(IsotropicKernel):
    """Inverse multiquadric k = (c² + ‖x − y‖²/h²)^β (Gorham & Mackey 2017), β ∈ (−1, 0).

    Heavy tails keep far particles attracted (the KSD then controls weak convergence, unlike
    with RBF). The default h is the same median heuristic as for RBF.

    Args:
        c: Offset c > 0.
        beta: Exponent β < 0 (−1/2 by default).
        bandwidth, min_bandwidth: As for :class:`IsotropicKernel`.
    """

    def __init__(
        self,
        c: float = 1.0,
        beta: float = -0.5,
        bandwidth: float | None = None,
        min_bandwidth: float = 1e-6,
    ) -> None:
        super().__init__(bandwidth, min_bandwidth)
        if not c > 0 or not beta < 0:
            raise ValueError(f"IMQ needs c > 0 and beta < 0, got c={c}, beta={beta}")
        self.c, self.beta = c, beta

    def profile(self, u: Tensor) -> tuple[Tensor, Tensor]:
        base = self.c**2 + u
        k = base.pow(self.beta)
        return k, (-2.0 * self.beta) * k / base


#: The kernels by name: ``factory() -> SteinKernel`` (median-heuristic bandwidth).
KERNELS: Registry[Callable[[], SteinKernel]] = Registry("kernel")
KERNELS.register("rbf", RBF)
KERNELS.register("imq", IMQ)


def get_kernel(kernel: str | SteinKernel) -> SteinKernel:
    """A registered kernel by name (``"rbf"``, ``"imq"``) or any :class:`SteinKernel` as is.

    Raises:
        UnknownNameError: for an unknown name (the message lists the known ones).
    """
    if isinstance(kernel, SteinKernel):
        return kernel
    return KERNELS.get(kernel)()
