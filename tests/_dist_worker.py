"""One rank of a multi-process test (started by ``tests/test_distributed.py`` with torchrun's
environment variables; not collected by pytest). Usage: ``python _dist_worker.py CASE OUT``."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from vi_flows import distributed
from vi_flows.svgd import svgd


def _log_p(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - 1.0) / torch.tensor([0.5, 2.0, 1.0])).square().sum(-1)


def case_svgd(out: Path) -> None:
    particles = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    off, size = distributed.shard(64)
    x = svgd(_log_p, particles[off : off + size], 10, step_size=0.05)
    gathered = distributed.all_gather_cat(x)
    if distributed.is_main():
        torch.save(gathered, out / "svgd.pt")


def case_raise(out: Path) -> None:
    if distributed.rank() == 1:
        raise RuntimeError("rank 1 fails on purpose")
    distributed.all_reduce_sum(torch.ones(3))  # rank 0 waits here for the dead rank


def case_gather(out: Path) -> None:
    r = distributed.rank()
    local = torch.arange(r + 2, dtype=torch.float64)[:, None].repeat(1, 2) + 10 * r
    torch.save(distributed.all_gather_cat(local), out / f"gather{r}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    case, out = sys.argv[1], Path(sys.argv[2])
    distributed.init(timeout_s=float(sys.argv[3]) if len(sys.argv) > 3 else 60.0)
    globals()[f"case_{case}"](out)
    distributed.barrier()
