"""Data parallelism over samples with ``torch.distributed``: a no-op on one process.

``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``) starts the ranks; there is no process launching here. Each rank draws its own
share of the Monte Carlo samples from an independent, reproducible stream, evaluates the target on
them, and the gradients of the loss are averaged, so that one update equals the single-process
update on the union of the samples (up to floating-point summation order):

.. math::
    ∇_φ \\frac{1}{n}\\sum_{i=1}^{n} ℓ_i = \\frac{1}{N}\\sum_{r=1}^{N} ∇_φ \\frac{1}{n/N}
    \\sum_{i ∈ \\text{rank } r} ℓ_i \\quad\\text{(equal shards)}.

Backend: ``gloo`` on CPU (multi-node capable), ``nccl`` when CUDA is available and requested.
Collectives carry a timeout (``VI_FLOWS_DIST_TIMEOUT`` seconds, default 600), so a rank that dies
brings the others down with an error instead of a hang.

>>> world_size(), rank(), is_main()  # a plain process is rank 0 of 1
(1, 0, True)
>>> shard(10, world=3, rank_=2)
(7, 3)
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "all_gather_cat",
    "all_reduce_grads",
    "all_reduce_mean",
    "all_reduce_sum",
    "any_true",
    "barrier",
    "broadcast_",
    "broadcast_module",
    "init",
    "is_distributed",
    "is_main",
    "rank",
    "rank_seed",
    "shard",
    "shutdown",
    "world_size",
]

TIMEOUT_ENV = "VI_FLOWS_DIST_TIMEOUT"


def init(backend: str | None = None, timeout_s: float | None = None) -> bool:
    """Join the process group described by torchrun's environment; a no-op without one.

    Args:
        backend: ``"gloo"`` (default on CPU) or ``"nccl"``.
        timeout_s: collective timeout in seconds (default ``$VI_FLOWS_DIST_TIMEOUT`` or 600).

    Returns:
        Whether this process is part of a multi-process group.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    timeout = float(timeout_s if timeout_s is not None else os.environ.get(TIMEOUT_ENV, 600))
    dist.init_process_group(
        backend=backend or "gloo",
        timeout=datetime.timedelta(seconds=timeout),
    )
    return dist.get_world_size() > 1


def is_distributed() -> bool:
    """Whether a process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """The number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """Whether this is rank 0, the one that logs and writes files."""
    return rank() == 0


def shard(n: int, *, world: int | None = None, rank_: int | None = None) -> tuple[int, int]:
    """``(offset, size)`` of this rank's contiguous share of ``n`` items.

    The first ``n mod N`` ranks get one item more, so the shares cover ``range(n)`` exactly.
    """
    world = world_size() if world is None else world
    r = rank() if rank_ is None else rank_
    base, extra = divmod(int(n), world)
    size = base + (1 if r < extra else 0)
    return r * base + min(r, extra), size


def rank_seed(seed: int, *, rank_: int | None = None) -> int:
    """An independent seed for this rank: rank 0 keeps ``seed`` (one process is unchanged),
    rank r uses a SplitMix-style hash of (seed, r), so the union over ranks is reproducible."""
    r = rank() if rank_ is None else rank_
    if r == 0:
        return int(seed)
    z = (int(seed) * 0x9E3779B97F4A7C15 + r * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum of ``t`` over ranks (in place; returned for chaining)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: Tensor) -> Tensor:
    """Mean of ``t`` over ranks (in place; returned for chaining)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def all_reduce_grads(params: nn.Module | Iterable[Tensor], weights: float | None = None) -> None:
    """Average the ``.grad`` of ``params`` over ranks, in one flattened all-reduce.

    Args:
        params: a module or an iterable of parameters; ``None`` gradients count as zeros.
        weights: this rank's weight w_r in the average Σ_r w_r g_r (default 1/N). With unequal
            shards pass n_r / n so the result is the gradient of the mean over the union.
    """
    if not is_distributed():
        return
    plist = list(params.parameters() if isinstance(params, nn.Module) else params)
    plist = [p for p in plist if p.requires_grad]
    if not plist:
        return
    w = 1.0 / dist.get_world_size() if weights is None else float(weights)
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in plist]
    )
    flat.mul_(w)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in plist:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def all_gather_cat(t: Tensor, dim: int = 0) -> Tensor:
    """Concatenate ``t`` from every rank along ``dim`` in rank order (sizes along ``dim`` may
    differ between ranks; the other dimensions must agree)."""
    if not is_distributed():
        return t
    world = dist.get_world_size()
    moved = t.movedim(dim, 0).contiguous()
    size = torch.tensor([moved.shape[0]], dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = moved.new_zeros((longest, *moved.shape[1:]))
    padded[: moved.shape[0]] = moved
    bufs = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(bufs, padded)
    out = torch.cat([b[: int(s.item())] for b, s in zip(bufs, sizes, strict=True)])
    return out.movedim(0, dim)


def broadcast_(t: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``t`` with rank ``src``'s value (in place; returned for chaining)."""
    if is_distributed():
        dist.broadcast(t, src)
    return t


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s parameters and buffers (as DDP does at construction), so
    that ranks whose initial weights were drawn from different RNG states start together."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src)


def any_true(flag: bool) -> bool:
    """Whether ``flag`` holds on at least one rank (every rank gets the same answer)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    """Wait for every rank (a no-op on one process)."""
    if is_distributed():
        dist.barrier()


def shutdown(wait_s: float = 30.0) -> None:
    """Leave the process group (a no-op without one). Call it before a rank exits.

    A gloo group still alive at interpreter shutdown can abort the process ("terminate called
    without an active exception"), and so can a rank whose peer — or the rendezvous store, which
    rank 0 hosts under a plain ``env://`` launch — disappears while it is still leaving. So every
    rank destroys its group, the other ranks then check out through the store, and rank 0 (the
    store's host) waits up to ``wait_s`` seconds for all of them before it returns.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    world, rank = dist.get_world_size(), dist.get_rank()
    try:  # torch keeps the rendezvous store private; without it, just leave the group
        store = dist.distributed_c10d._get_default_store() if world > 1 else None
    except (AttributeError, RuntimeError):
        store = None
    dist.destroy_process_group()
    if store is None:
        return
    try:
        if rank != 0:
            store.add("vi_flows/left", 1)
            return
        deadline = time.monotonic() + wait_s
        while store.add("vi_flows/left", 0) < world - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    except (RuntimeError, OSError):  # a store already gone: nothing left to wait for
        pass
