"""Head-to-head density benchmark: every flow family vs SVGD vs amortized SVGD, at equal time.

One command writes under ``--out``:

* ``runs.csv`` — one row per (target, method): MMD², sliced W1, mean/sd errors, log Z error,
  ESS, k̂, modes covered, posterior errors;
* ``table.md`` — the Markdown tables (also printed);
* ``grid.png`` — samples (first two coordinates) over the reference, rows = targets,
  columns = methods;
* ``variance_sweep.csv/png`` — the marginal variance of N(0, I_d) fits vs d (variance collapse);
* ``cost_scaling.csv/png`` — time per step vs number of particles / samples;
* ``library_speed.csv`` — steps/s of our RealNVP vs same-architecture nflows and pyro flows.

Fairness: every method gets the same wall-clock budget per target (``--budget`` seconds), the
same seed, the same starting distribution (N(0, I): the flows' base and SVGD's initial
particles) and is scored on the same metrics, in coordinates standardized by the reference sd.
SVGD runs exactly as the reference code (RBF, median bandwidth with log(n+1), AdaGrad with
momentum, ε = ``SVGD_STEP``); it is never weakened. Flows are scored on ``--eval`` draws; SVGD on
its n particles (all it has). Posteriors are fitted in Laplace-whitened coordinates θ = m + L z
(mode and inverse Hessian by L-BFGS, computed once per target outside the budget and shared by
every method; ``--no-whiten`` fits the raw unconstrained space instead) and scored after mapping
back.

    python -m benchmarks.densities --quick --out bench-out/densities   # < 5 min (d ∈ {1, 10, 100})
    python -m benchmarks.densities --out bench-out/densities           # budget 10 s/cell, ~1 h
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    FAMILIES,
    NEEDS_TWO_DIMS,
    SVGD_STEP,
    ZUKO_FAMILIES,
    evaluate,
    fit_family,
    markdown_table,
)
from benchmarks.densities_sweeps import cost_scaling, library_speed, variance_sweep  # noqa: E402
from benchmarks.files import out_folder, save_figure, write_rows, write_text  # noqa: E402
from vi_flows import targets  # noqa: E402
from vi_flows.laplace import Whitened  # noqa: E402
from vi_flows.metrics import mmd2, modes_covered, moment_errors, sliced_wasserstein  # noqa: E402
from vi_flows.svgd import amortized_svgd, mlp_generator, svgd  # noqa: E402
from vi_flows.targets import posteriordb  # noqa: E402

POSTERIORS = ["eight_schools-eight_schools_noncentered", "sblrc-blr", "arK-arK"]
SEED = 0


def target_list(quick: bool, only: list[str] | None = None) -> list[tuple[str, Any]]:
    """(label, target) for every benchmark target; posteriors only when their folder exists.

    ``only`` keeps the labels containing one of its strings.
    """
    out: list[tuple[str, Any]] = []
    for name in ["u1", "u2", "u3", "u4", "banana", "ring", "moons"]:
        out.append((name, targets.get(name)))
    out += [("funnel-2", targets.get("funnel", dim=2)), ("mixture-2", targets.get("mixture"))]
    for d in [2, 10, 50, 100]:
        out.append((f"gaussian-{d}", targets.get("gaussian", dim=d)))
        out.append((f"corr-gaussian-{d}", targets.get("correlated-gaussian", dim=d)))
    out += [
        ("funnel-10", targets.get("funnel", dim=10)),
        ("mixture-10", targets.get("mixture", dim=10)),
    ]
    available = set(posteriordb.available()) if posteriordb.root().exists() else set()
    for name in POSTERIORS:
        if name in available:
            out.append((name, posteriordb.load(name)))
        else:
            print(f"skipping posterior {name}: {posteriordb.root()} not found", flush=True)
    if only:
        out = [(label, t) for label, t in out if any(s in label for s in only)]
    return out


def methods(only: list[str] | None = None) -> list[str]:
    """Every method (our families, zuko's peers, SVGD), or just those named in ``only``."""
    every = [*FAMILIES, *ZUKO_FAMILIES, "svgd-100", "svgd-500", "amortized-svgd"]
    return [m for m in every if not only or m in only]


def reference(target: Any, n: int) -> torch.Tensor:
    if hasattr(target, "reference_unconstrained"):
        return target.reference_unconstrained()
    gen = torch.Generator().manual_seed(SEED + 99)
    return target.sample(n, generator=gen, dtype=torch.float64)


def run_method(
    method: str, target: Any, budget: float, n_eval: int, n_diag: int
) -> tuple[torch.Tensor, dict]:
    """Run ``method`` on ``target`` for ``budget`` seconds; return its draws and run info."""
    torch.manual_seed(SEED)
    info: dict[str, Any] = {}
    start = time.perf_counter()
    deadline = start + budget
    if method in FAMILIES or method in ZUKO_FAMILIES:
        q, fit_info = fit_family(method, target, seconds=budget, seed=SEED)
        with torch.no_grad():
            draws = q.sample(n_eval)
        info.update(fit_info)
        info.update({k: v for k, v in evaluate(q, target, n_diag).items() if k != "elbo"})
        return draws, info
    if method.startswith("svgd-"):
        n = int(method.split("-")[1])
        steps = {"n": 0}

        def stop(step: int, x: torch.Tensor, phi: torch.Tensor) -> bool:
            steps["n"] = step + 1
            return time.perf_counter() > deadline

        draws = svgd(target, torch.randn(n, target.dim), 10**9, step_size=SVGD_STEP, callback=stop)
        info.update(steps=steps["n"], seconds=time.perf_counter() - start)
        return draws.detach(), info
    if method == "amortized-svgd":
        gen = mlp_generator(target.dim)
        hist = amortized_svgd(
            target, gen, target.dim, 10**9, callback=lambda s, i: time.perf_counter() > deadline
        )
        with torch.no_grad():
            draws = gen.sample(n_eval)
        info.update(steps=len(hist), seconds=time.perf_counter() - start)
        return draws, info
    raise ValueError(method)


def score(target: Any, draws: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Metrics of ``draws`` against the reference, in reference-standardized coordinates."""
    draws = draws.double()
    if not torch.isfinite(draws).all():
        return {"mmd2": math.nan, "sw1": math.nan, "mean_err": math.nan, "sd_err": math.nan}
    mean, sd = ref.mean(0), ref.std(0)
    z_draws, z_ref = (draws - mean) / sd, (ref - mean) / sd
    sub = z_ref[torch.randperm(len(z_ref), generator=torch.Generator().manual_seed(1))[:2000]]
    mean_err, sd_err = moment_errors(draws, mean, sd)
    row = {
        "mmd2": mmd2(z_draws[:2000], sub),
        "sw1": sliced_wasserstein(z_draws, z_ref),
        "mean_err": mean_err,
        "sd_logratio": sd_err,
        "mean_var_ratio": float((draws.var(0) / ref.var(0)).mean()),
    }
    modes = getattr(target, "modes", None)
    if modes is not None:
        spacing = torch.pdist(modes.double()).min()
        row["modes_covered"] = modes_covered(draws, modes, radius=float(spacing) / 2)
    if hasattr(target, "constrain"):
        row.update(posterior_errors(target, draws))
    return row


def _columns(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    cols = {}
    for key, v in values.items():
        v = v.double()
        if v.ndim == 1:
            cols[key] = v
        else:
            for i in range(v.shape[-1]):
                cols[f"{key}[{i + 1}]"] = v[:, i]
    return cols


def posterior_errors(target: Any, draws: torch.Tensor) -> dict[str, float]:
    """Worst standardized mean error and sd ratio over constrained parameters."""
    ours = _columns(target.constrain(draws))
    ref = _columns(target.reference_draws())
    z, ratio = [], []
    for key in ref.keys() & ours.keys():
        r, o = ref[key], ours[key]
        z.append(float((o.mean() - r.mean()).abs() / r.std()))
        ratio.append(float(o.std() / r.std()))
    return {
        "post_max_mean_z": max(z),
        "post_min_sd_ratio": min(ratio),
        "post_max_sd_ratio": max(ratio),
    }


def run_grid(
    out: Path,
    budget: float,
    n_eval: int,
    quick: bool,
    only: list[str],
    whiten: bool,
    only_methods: list[str] | None = None,
) -> list[dict]:
    n_diag = 5000 if quick else 20_000
    tlist, mlist = target_list(quick, only), methods(only_methods)
    rows: list[dict] = []
    fig, axes = plt.subplots(
        len(tlist), len(mlist), figsize=(1.6 * len(mlist), 1.6 * len(tlist)), squeeze=False
    )
    for i, (label, target) in enumerate(tlist):
        ref = reference(target, 20_000)
        # Posteriors are fitted in Laplace-whitened coordinates (the same for every method, and
        # computed outside the budget); draws are mapped back before scoring.
        fitted = Whitened.from_laplace(target) if whiten and hasattr(target, "constrain") else None
        for j, method in enumerate(mlist):
            if method in NEEDS_TWO_DIMS and target.dim < 2:
                continue
            try:
                draws, info = run_method(method, fitted or target, budget, n_eval, n_diag)
                if fitted is not None:
                    draws = fitted.unwhiten(draws)
                row = {"target": label, "dim": target.dim, "method": method, **info}
                row.update(score(target, draws, ref))
                if target.log_z is not None and "log_z_is" in row:
                    row["log_z_err"] = row["log_z_is"] - target.log_z
            except Exception as err:  # noqa: BLE001 - a failing method is a result, not a crash
                row = {"target": label, "dim": target.dim, "method": method, "error": repr(err)}
                draws = None
            rows.append(row)
            print(
                f"{label:24s} {method:17s} mmd2={row.get('mmd2', math.nan):.4f} "
                f"sw1={row.get('sw1', math.nan):.3f} var={row.get('mean_var_ratio', math.nan):.3f}"
                f" {row.get('error', '')}",
                flush=True,
            )
            ax = axes[i, j]
            sub = ref[:2000]
            ax.scatter(sub[:, 0], sub[:, min(1, target.dim - 1)], s=1, c="0.8", rasterized=True)
            if draws is not None and torch.isfinite(draws).all():
                d = draws[:1000].double()
                ax.scatter(d[:, 0], d[:, min(1, target.dim - 1)], s=1, c="C3", rasterized=True)
            lo, hi = sub.quantile(0.005, 0), sub.quantile(0.995, 0)
            pad = 0.3 * (hi - lo)
            ax.set_xlim(float(lo[0] - pad[0]), float(hi[0] + pad[0]))
            k = min(1, target.dim - 1)
            ax.set_ylim(float(lo[k] - pad[k]), float(hi[k] + pad[k]))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(method, fontsize=7)
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
        write_rows(out / "runs.csv", rows)  # after every target: partial results survive a stop
    fig.tight_layout()
    save_figure(fig, out / "grid.png", dpi=80)
    plt.close(fig)
    return rows


def summarize(rows: list[dict], only_methods: list[str] | None = None) -> str:
    ok = [r for r in rows if "error" not in r]
    mlist = methods(only_methods)
    lines = []
    for metric, digits in [("mmd2", 4), ("sw1", 3), ("mean_var_ratio", 3)]:
        pivot = []
        for label in dict.fromkeys(r["target"] for r in ok):
            row = {"target": label}
            for r in ok:
                if r["target"] == label:
                    row[r["method"]] = r.get(metric, math.nan)
            pivot.append(row)
        lines += [
            f"### {metric} (rows = targets, columns = methods)",
            "",
            markdown_table(pivot, ["target", *mlist], digits),
            "",
        ]
    post = [r for r in ok if "post_max_mean_z" in r]
    if post:
        lines += [
            "### Real posteriors (constrained space, worst parameter)",
            "",
            markdown_table(
                post,
                [
                    "target",
                    "method",
                    "post_max_mean_z",
                    "post_min_sd_ratio",
                    "post_max_sd_ratio",
                    "steps",
                ],
                3,
            ),
            "",
        ]
    errors = [r for r in rows if "error" in r]
    if errors:
        lines += ["### Failed runs", "", markdown_table(errors, ["target", "method", "error"]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench-out/densities")
    parser.add_argument("--quick", action="store_true", help="small budget: under 5 minutes")
    parser.add_argument("--budget", type=float, default=None, help="seconds per method and target")
    parser.add_argument("--eval", type=int, default=2000, help="evaluation draws for flows")
    parser.add_argument("--skip", nargs="*", default=[], choices=["grid", "sweep", "cost", "speed"])
    parser.add_argument("--targets", nargs="*", default=[], help="only targets whose label has one")
    parser.add_argument("--methods", nargs="*", default=[], help="only these methods (default all)")
    parser.add_argument(
        "--no-whiten", action="store_true", help="fit posteriors in their raw unconstrained space"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = out_folder(parser, args.out)
    budget = args.budget or (0.4 if args.quick else 10.0)
    start = time.perf_counter()
    report = [f"# Density benchmark (budget {budget:g} s per method and target, seed {SEED})", ""]
    if "grid" not in args.skip:
        rows = run_grid(
            out, budget, args.eval, args.quick, args.targets, not args.no_whiten, args.methods
        )
        report.append(summarize(rows, args.methods))
    if "sweep" not in args.skip:
        dims = [1, 10, 100] if args.quick else [1, 2, 5, 10, 20, 50, 100]
        steps = 100 if args.quick else 2000
        sweep = variance_sweep(out, steps, 200 if args.quick else 2000, dims, SEED)
        dims = sorted({r["dim"] for r in sweep})
        pivot = [
            {
                "method": m,
                **{
                    str(d): next(
                        (r["mean_var"] for r in sweep if r["method"] == m and r["dim"] == d),
                        math.nan,
                    )
                    for d in dims
                },
            }
            for m in ["svgd-100", *FAMILIES]
        ]
        report += [
            "### Variance-collapse sweep: mean marginal variance on N(0, I_d)",
            "",
            markdown_table(pivot, ["method", *map(str, dims)], 3),
            "",
        ]
    if "cost" not in args.skip:
        sizes = [100, 500, 1000, 2500] if args.quick else [100, 250, 500, 1000, 2500, 5000]
        cost = cost_scaling(out, sizes, 3 if args.quick else 7)
        report += [
            "### Cost per step (d = 10, median seconds)",
            "",
            markdown_table(cost, ["n", "svgd_s_per_step", "realnvp_s_per_step"], 4),
            "",
        ]
    if "speed" not in args.skip:
        speed = library_speed(out, 3 if args.quick else 7, 20 if args.quick else 100, SEED)
        report += [
            "### Same architecture, three libraries (u1, batch 256, median steps/s)",
            "",
            markdown_table(speed, ["flow", "median_steps_per_s", "ours_over_this"], 2),
            "",
        ]
    report.append(f"Total {time.perf_counter() - start:.0f} s.")
    text = "\n".join(report)
    write_text(out / "table.md", text + "\n")
    print(text)


if __name__ == "__main__":
    main()
