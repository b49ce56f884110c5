"""The density benchmark's side studies (``python -m benchmarks.densities``): variance collapse
on N(0, I_d) against d, cost per step against the number of particles or samples, and the speed
of one architecture in three libraries (ours, nflows, pyro)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    FAMILIES,
    NEEDS_TWO_DIMS,
    SVGD_STEP,
    alternating_rates,
    fit_family,
)
from benchmarks.files import save_figure, write_rows  # noqa: E402
from vi_flows import flows, targets  # noqa: E402
from vi_flows.fit import fit  # noqa: E402
from vi_flows.svgd import svgd  # noqa: E402
from vi_flows.transforms import Compose, ElementwiseAffine, NflowsTransform  # noqa: E402
from vi_flows.transforms.coupling import alternating_mask, mlp  # noqa: E402
from vi_flows.transforms.external import ContextFreeNet  # noqa: E402

__all__ = ["cost_scaling", "library_speed", "variance_sweep"]


def variance_sweep(
    out: Path, steps: int, svgd_steps: int, dims: list[int], seed: int
) -> list[dict]:
    """Mean marginal variance of fits to N(0, I_d) for each d: SVGD n = 100 and every flow."""
    rows = []
    for d in dims:
        target = targets.get("gaussian", dim=d)
        torch.manual_seed(seed)
        x = svgd(target, torch.randn(100, d), svgd_steps, step_size=SVGD_STEP)
        rows.append({"dim": d, "method": "svgd-100", "mean_var": float(x.var(0).mean())})
        for family in FAMILIES:
            if family in NEEDS_TWO_DIMS and d < 2:
                continue
            q, _ = fit_family(family, target, steps=steps, seed=seed)
            torch.manual_seed(1)
            rows.append(
                {"dim": d, "method": family, "mean_var": float(q.sample(20_000).var(0).mean())}
            )
        print(
            f"variance sweep d={d}: "
            + ", ".join(f"{r['method']}={r['mean_var']:.3f}" for r in rows if r["dim"] == d),
            flush=True,
        )
    write_rows(out / "variance_sweep.csv", rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in ["svgd-100", *FAMILIES]:
        pts = [(r["dim"], r["mean_var"]) for r in rows if r["method"] == method]
        ax.plot(
            *zip(*pts, strict=True), marker="o", lw=2.5 if method == "svgd-100" else 1, label=method
        )
    ax.axhline(1.0, color="k", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("mean marginal variance (truth 1)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "variance_sweep.png", dpi=110)
    plt.close(fig)
    return rows


def _time_per_step(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cost_scaling(out: Path, sizes: list[int], repeats: int) -> list[dict]:
    """Median seconds per step vs n: SVGD (n particles) and RealNVP (n samples per step), d = 10."""
    target = targets.get("gaussian", dim=10)
    rows = []
    for n in sizes:
        x = torch.randn(n, 10)
        t_svgd = _time_per_step(lambda x=x: svgd(target, x, 1, step_size=SVGD_STEP), repeats)
        q = flows.build("realnvp", 10)
        t_flow = _time_per_step(
            lambda q=q, n=n: fit(q, target, 1, num_samples=n, progress=False), repeats
        )
        rows.append({"n": n, "svgd_s_per_step": t_svgd, "realnvp_s_per_step": t_flow})
        print(f"cost n={n}: svgd {t_svgd * 1e3:.1f} ms, realnvp {t_flow * 1e3:.1f} ms", flush=True)
    write_rows(out / "cost_scaling.csv", rows)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.loglog(sizes, [r["svgd_s_per_step"] for r in rows], "o-", label="SVGD (n particles)")
    ax.loglog(sizes, [r["realnvp_s_per_step"] for r in rows], "s-", label="RealNVP (n samples)")
    ax.set_xlabel("n")
    ax.set_ylabel("median seconds per step")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "cost_scaling.png", dpi=110)
    plt.close(fig)
    return rows


def _nflows_affine_coupling(dim: int, layers: int = 8, hidden=(64, 64)) -> flows.Flow:
    """nflows' affine coupling flow with the same conditioner architecture as our RealNVP."""
    from nflows.transforms import AffineCouplingTransform

    body = []
    for i in range(layers):
        mask = alternating_mask(dim, i).to(torch.int64)
        coupling = AffineCouplingTransform(
            1 - mask, lambda a, b: ContextFreeNet(mlp(a, b, hidden), hidden[-1])
        )
        body.append(NflowsTransform(coupling, dim))
    return flows.Flow(Compose([*body, ElementwiseAffine(dim)]))


def library_speed(out: Path, rounds: int, steps_per_round: int, seed: int) -> list[dict]:
    """Steps/s of the same 8-layer affine-coupling flow from us, nflows and pyro (alternating)."""
    target = targets.get("u1")
    torch.manual_seed(seed)
    contenders = {
        "ours (realnvp)": flows.build("realnvp", 2, layers=8),
        "nflows AffineCouplingTransform": _nflows_affine_coupling(2),
        "pyro AffineCoupling": flows.build("pyro-coupling", 2, layers=8),
    }
    rates = alternating_rates(contenders, target, rounds, steps_per_round)
    ours = statistics.median(rates["ours (realnvp)"])
    rows = [
        {
            "flow": k,
            "median_steps_per_s": statistics.median(v),
            "ours_over_this": ours / statistics.median(v),
        }
        for k, v in rates.items()
    ]
    write_rows(out / "library_speed.csv", rows)
    return rows
