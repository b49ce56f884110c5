"""Scaling out: fit and SVGD on 1 and 2 gloo ranks (torchrun), with communication volume.

    python -m benchmarks.scaling --out benchmarks/results/scaling [--quick]

Each configuration runs as its own ``torchrun --standalone --nproc_per_node R`` job, one torch
thread per rank, so R ranks use R cores. Measured:

- ``fit`` steps/s on an expensive target: a GP regression marginal likelihood over its three
  log-hyperparameters with n = 500 synthetic points (one 500 × 500 Cholesky per sample);
- SVGD step time for n = 2,000 and 8,000 particles in d = 10 (particles sharded, O(n²/N) work
  per rank);
- the bytes each step all-reduces / all-gathers, and the time of those collectives alone.

Scaling efficiency = (T₁ / T_R) / R. Beyond two ranks nothing is measured here: the report adds a
*model* of the N-rank speed-up on a 10 Gb/s network (assumptions stated in the output).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.files import write_text
from vi_flows import distributed
from vi_flows.fit import fit
from vi_flows.flows import build
from vi_flows.svgd import svgd

GP_POINTS = 500
SVGD_DIM = 10


def gp_log_prob(n: int = GP_POINTS, seed: int = 0):
    """log p̃(θ) of a GP regression (RBF kernel) marginal likelihood with N(0, 1) priors on
    θ = (log ℓ, log σ_f, log σ_n); data from a fixed draw, so every rank sees the same target."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g, dtype=torch.float64) * 10
    y = torch.sin(x[:, 0]) + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    d2 = (x - x.T).square()
    eye = torch.eye(n, dtype=torch.float64)

    def log_p(theta: torch.Tensor) -> torch.Tensor:
        t = theta.double()
        ell, sf, sn = t[:, 0].exp(), t[:, 1].exp(), t[:, 2].exp()
        k = sf[:, None, None] ** 2 * torch.exp(-0.5 * d2 / ell[:, None, None] ** 2)
        k = k + (sn[:, None, None] ** 2 + 1e-6) * eye
        chol = torch.linalg.cholesky(k)
        alpha = torch.cholesky_solve(y[None, :, None].expand(len(t), n, 1), chol)[..., 0]
        ll = -0.5 * (y * alpha).sum(-1) - chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        ll = ll - 0.5 * n * math.log(2 * math.pi)
        return (ll - 0.5 * t.square().sum(-1)).to(theta.dtype)

    return log_p


def _time_collectives(grad_numel: int, gather_rows: int, dim: int, reps: int = 20) -> dict:
    """Seconds per all-reduce of ``grad_numel`` floats and per all-gather of (rows, dim) doubles."""
    out = {}
    g = torch.zeros(grad_numel)
    x = torch.zeros(gather_rows // distributed.world_size(), dim, dtype=torch.float64)
    for name, op in (
        ("allreduce_s", lambda: distributed.all_reduce_sum(g)),
        ("allgather_s", lambda: distributed.all_gather_cat(x)),
    ):
        op()
        distributed.barrier()
        start = time.perf_counter()
        for _ in range(reps):
            op()
        out[name] = (time.perf_counter() - start) / reps
    return out


def worker(case: str, out: Path, quick: bool) -> None:
    torch.set_num_threads(1)
    distributed.init()
    world = distributed.world_size()
    if case == "fit":
        log_p = gp_log_prob()
        torch.manual_seed(0)
        q = build("realnvp", 3, layers=4, hidden=(32, 32))
        steps = 4 if quick else 12
        fit(q, log_p, 2, num_samples=32, lr=1e-3, seed=0, progress=False)  # warm-up
        distributed.barrier()
        start = time.perf_counter()
        fit(q, log_p, steps, num_samples=32, lr=1e-3, seed=1, progress=False)
        seconds = time.perf_counter() - start
        numel = sum(p.numel() for p in q.parameters() if p.requires_grad)
        row = {
            "case": "fit (GP, n=500 points, 32 samples/step)",
            "steps_per_s": steps / seconds,
            # per step: the flattened gradient plus the loss/ELBO pair and a few flags
            "bytes_allreduced": 4 * numel + 8 * 2 + 4 * 3,
            "bytes_allgathered": 0,
        }
        if world > 1:
            row.update(_time_collectives(numel, 0, 1))
    else:
        n = int(case.removeprefix("svgd"))
        steps = 2 if quick else 4
        gen = torch.Generator().manual_seed(0)
        particles = torch.randn(n, SVGD_DIM, generator=gen, dtype=torch.float64)
        off, size = distributed.shard(n)

        def log_p(z: torch.Tensor) -> torch.Tensor:
            return -0.5 * z.square().sum(-1)

        svgd(log_p, particles[off : off + size], 1, step_size=0.05)  # warm-up
        distributed.barrier()
        start = time.perf_counter()
        svgd(log_p, particles[off : off + size], steps, step_size=0.05)
        seconds = time.perf_counter() - start
        row = {
            "case": f"SVGD n={n}, d={SVGD_DIM}",
            "step_s": seconds / steps,
            "bytes_allreduced": 0,
            # particles and scores (float64), plus the row counts
            "bytes_allgathered": 2 * n * SVGD_DIM * 8 + 8 * world,
        }
        if world > 1:
            row.update(_time_collectives(1, n, SVGD_DIM))
    row["ranks"] = world
    if distributed.is_main():
        write_text(out / f"{case}-{world}.json", json.dumps(row))


def launch(case: str, ranks: int, out: Path, quick: bool) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={ranks}",
        "-m",
        "benchmarks.scaling",
        "--worker",
        case,
        "--out",
        str(out),
    ] + (["--quick"] if quick else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads((out / f"{case}-{ranks}.json").read_text())


def model_speedup(t1: float, bytes_reduced: int, bytes_gathered: int, n: int) -> float:
    """Modelled speed-up on n ranks: perfectly divisible compute t1/n, plus a ring all-reduce
    (2(n−1)/n · B / bw) and ring all-gather ((n−1)/n · B / bw) at bw = 10 Gb/s with 50 µs per
    message hop (2(n−1) hops for all-reduce, n−1 for all-gather)."""
    bw, lat = 10e9 / 8, 50e-6
    comm = 0.0
    if bytes_reduced:
        comm += 2 * (n - 1) / n * bytes_reduced / bw + 2 * (n - 1) * lat
    if bytes_gathered:
        comm += (n - 1) / n * bytes_gathered / bw + (n - 1) * lat
    return t1 / (t1 / n + comm)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench-out/scaling"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        worker(args.worker, args.out, args.quick)
        distributed.shutdown()
        return
    cases = ["fit", "svgd2000", "svgd8000"]
    rows = []
    for case in cases:
        one, two = launch(case, 1, args.out, args.quick), launch(case, 2, args.out, args.quick)
        t1 = 1 / one["steps_per_s"] if "steps_per_s" in one else one["step_s"]
        t2 = 1 / two["steps_per_s"] if "steps_per_s" in two else two["step_s"]
        speedup = t1 / t2
        model = {
            n: model_speedup(t1, one["bytes_allreduced"], one["bytes_allgathered"], n)
            for n in (2, 8, 32)
        }
        rows.append(
            {
                "case": one["case"],
                "t1_s": t1,
                "t2_s": t2,
                "efficiency_2": speedup / 2,
                "bytes_allreduced": one["bytes_allreduced"],
                "bytes_allgathered": one["bytes_allgathered"],
                "comm_s_2ranks": two.get("allreduce_s", 0.0)
                if one["bytes_allreduced"]
                else two.get("allgather_s", 0.0),
                **{f"model_eff_{n}": s / n for n, s in model.items()},
            }
        )
    lines = [
        "| case | step, 1 rank (s) | step, 2 ranks (s) | efficiency, 2 ranks (measured) | "
        "bytes all-reduced / all-gathered per step | collective time, 2 ranks (s) | "
        "model efficiency N = 2 / 8 / 32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['t1_s']:.4f} | {r['t2_s']:.4f} | {r['efficiency_2']:.2f} | "
            f"{r['bytes_allreduced']:,} / {r['bytes_allgathered']:,} | {r['comm_s_2ranks']:.2e} | "
            f"{r['model_eff_2']:.2f} / {r['model_eff_8']:.2f} / {r['model_eff_32']:.2f} |"
        )
    lines += [
        "",
        "Measured: 1 and 2 gloo ranks on this machine (one torch thread per rank, 2 cores). "
        "Model (not a measurement): compute divides perfectly over N ranks; ring all-reduce "
        "2(N−1)/N·B and ring all-gather (N−1)/N·B at 10 Gb/s, 50 µs per hop; no overlap of "
        "communication with compute; SVGD's per-rank work (n/N)·n assumes the kernel sums "
        "dominate.",
    ]
    table = "\n".join(lines)
    write_text(args.out / "table.md", table + "\n")
    write_text(args.out / "runs.json", json.dumps(rows, indent=2))
    print(table)


if __name__ == "__main__":
    main()
