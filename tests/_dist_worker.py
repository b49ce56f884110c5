"""One rank of a multi-process test (started by ``tests/test_distributed.py`` with torchrun's
environment variables; not collected by pytest). Usage: ``python _dist_worker.py CASE OUT``."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from vi_flows import distributed
from vi_flows.fit import fit
from vi_flows.flows import build
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


def case_fit_step(out: Path) -> None:
    torch.manual_seed(
        100 + distributed.rank()
    )  # different initial weights: fit broadcasts rank 0's
    q = build("realnvp", 3, layers=2, hidden=(8,))
    fit(q, _log_p, 1, num_samples=64, lr=1e-2, seed=5, progress=False)
    if distributed.is_main():
        torch.save(q.state_dict(), out / "fit_step.pt")


def case_fit_resume(out: Path) -> None:
    def run(steps: int, ckpt: Path, resume: bool = False) -> dict:
        torch.manual_seed(0)
        q = build("realnvp", 3, layers=2, hidden=(8,))
        fit(
            q,
            _log_p,
            steps,
            num_samples=64,
            lr=1e-2,
            seed=5,
            checkpoint=ckpt,
            checkpoint_every=2,
            resume=resume,
            progress=False,
        )
        return q.state_dict()

    whole = run(6, out / "whole.pt")
    run(3, out / "part.pt")  # stops after step 3 (its last checkpoint is at step 3)
    resumed = run(6, out / "part.pt", resume=True)
    if distributed.is_main():
        torch.save({"whole": whole, "resumed": resumed}, out / "fit_resume.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    case, out = sys.argv[1], Path(sys.argv[2])
    distributed.init()  # the collective timeout comes from VI_FLOWS_DIST_TIMEOUT
    globals()[f"case_{case}"](out)
    distributed.barrier()
    distributed.shutdown()
