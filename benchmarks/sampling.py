"""Mode discovery and log Z on the standard sampling benchmarks (issue 13).

Every method gets the same wall-clock training budget per target (evaluation not counted);
flows are then scored by plain importance sampling and by AIS from the trained flow.

Writes under ``--out`` (default benchmarks/results/sampling): ``runs.csv`` (one row per target,
method and seed; a run replaces only its own cells), ``table.md`` (mean ± sd over seeds, then the
issue's done-means: met, or missed by how much) and ``<target>.png`` for each 2-D target (samples
on density contours; ``<target>-<methods>.png`` when only some methods ran); prints the table.

    flock /tmp/bench.lock python -m benchmarks.sampling --targets mixture-2d --seeds 0 1 2
    flock /tmp/bench.lock python -m benchmarks.sampling --targets manywell-32 --methods fab \
        --budget 840 --save-flows /tmp/flows     # --budget: training seconds per cell
    python -m benchmarks.sampling --targets manywell-32 --methods fab --rescore /tmp/flows
    python -m benchmarks.sampling --report      # table.md from runs.csv only

Methods: ``kl`` (reverse KL, realnvp: the best family on the project's 2-D benchmark), ``renyi``
(α = 0.5), ``chi2``, ``mixture`` (8 realnvp components, ``mixture-kl``), ``fab`` (realnvp,
:func:`vi_flows.losses_mass.fab_for_dim`, the settings ``infer(objective="fab")`` uses),
``ais`` (AIS alone from N(0, s²I)) and ``svgd-500``. FAB's flow has the Student-t base
:data:`vi_flows.losses_mass.FAB_BASE`. Every flow starts as N(0, s²I) (FAB's: s times
Student-t(5) coordinates) and SVGD's
particles are drawn from it, where s is the target's stated prior scale (``SCALES``: a box the
mass is known to lie in, as a user's prior would give).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import markdown_table, read_csv  # noqa: E402
from benchmarks.files import save_figure, write_rows, write_text  # noqa: E402
from benchmarks.sampling_report import COLUMNS, summarize, verdicts  # noqa: E402
from vi_flows import AISResult, ais, build, diagnose, fit, svgd  # noqa: E402
from vi_flows.losses_mass import FAB_BASE, Renyi, fab_for_dim  # noqa: E402
from vi_flows.metrics import (  # noqa: E402
    count_modes,
    entropic_mode_coverage,
    eubo,
    forward_ess,
    mmd2,
)
from vi_flows.targets import get  # noqa: E402

#: name: (registry name, options, prior scale s, training budget in seconds per method)
TARGETS: dict[str, tuple[str, dict[str, Any], float, float]] = {
    "mixture-2d": ("mixture", {"dim": 2}, 10.0, 45.0),
    "mog40": ("mog40", {}, 25.0, 120.0),
    "funnel-10": ("funnel", {"dim": 10}, 1.0, 90.0),
    "manywell-32": ("manywell", {"dim": 32}, 2.0, 180.0),
    "manywell-6": ("manywell", {"dim": 6}, 2.0, 45.0),
    "mos-2": ("mos", {"dim": 2}, 10.0, 45.0),
    "mos-50": ("mos", {"dim": 50}, 10.0, 90.0),
    "u1": ("u1", {}, 2.0, 45.0),
}
METHODS = ["kl", "renyi", "chi2", "mixture", "fab", "ais", "svgd-500"]
BATCH = 256
LR = 1e-3  # realnvp's step for every loss (the mass-covering ones are noisier than KL)
EVAL_N = 1_000_000  # importance samples for IS log Z (se well below the 0.005 bounds)
#: AIS from the trained flow (and for the ais method, from N(0, s²I)): chains, first temperatures,
#: and the batches the ais method splits its chains into (see train_ais)
AIS_N, AIS_T, AIS_BATCHES = 4096, 32, 2
#: Evaluation AIS from a trained flow doubles its temperatures from AIS_T while its standard
#: error exceeds AIS_SE and the next run fits in AIS_SHARE of the training budget (at least 60 s):
#: the log Z estimate then costs a bounded fraction of the training, and the error we report is
#: not just AIS noise. The rule reads only the estimate's own se, never the true log Z.
AIS_SE, AIS_SHARE, AIS_T_MAX = 0.002, 0.25, 4096  # 0.002: below the tightest 0.005


def _flow(dim: int, scale: float, components: int = 0, base: dict[str, Any] | None = None):
    if components:
        return build("mixture", dim, components=components, family="realnvp", spread=scale)
    return build("realnvp", dim, init_scale=scale, **(base or {}))


def method_flow(method: str, dim: int, scale: float) -> Any:
    """The untrained flow of a flow method (FAB's has the heavy-tailed FAB_BASE)."""
    base = FAB_BASE if method == "fab" else None
    return _flow(dim, scale, components=8 if method == "mixture" else 0, base=base)


def eval_ais(target: Any, q: Any, budget: float) -> tuple[Any, int]:
    """AIS from q with AIS_T temperatures, doubled by the AIS_SE / AIS_SHARE rule above."""
    temps, allowed = AIS_T, max(60.0, AIS_SHARE * budget)
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        res = ais(target, q, AIS_N, num_temperatures=temps)
        took = time.perf_counter() - t0
        spent = time.perf_counter() - start
        if res.log_z_se <= AIS_SE or temps >= AIS_T_MAX or spent + 2.2 * took > allowed:
            return res, temps
        temps *= 2


def train_ais(target: Any, scale: float, deadline: float) -> tuple[Any, dict[str, Any]]:
    """The ``ais`` method: AIS from N(0, s²I) with as many temperatures as the budget allows.

    The AIS_N chains run in AIS_BATCHES batches that share the first batch's tuned step sizes.
    A pilot batch at AIS_T temperatures measures the cost per temperature of one batch; T then
    fills the rest of the budget (the variance of log w falls like 1/T, so one long run beats a
    doubling sequence that keeps only its last member). Wall time per temperature varies with
    load, so a batch starts only if it is predicted to end before the deadline, and the finished
    batches are merged (each is unbiased for Z, so their pool is too). Few batches, because a
    temperature costs a fixed Python overhead per batch on top of the per-chain work (measured
    on ManyWell-32: ~0.016 s + 4.7 µs per chain). The pilot is kept if nothing more fits.
    """
    d, start = target.dim, time.perf_counter()
    q = torch.distributions.MultivariateNormal(torch.zeros(d), scale**2 * torch.eye(d))
    n = AIS_N // AIS_BATCHES
    res = ais(target, q, n, num_temperatures=AIS_T)
    per_temp = (time.perf_counter() - start) / AIS_T
    temps = int((deadline - time.perf_counter()) / (1.1 * AIS_BATCHES * per_temp))
    if temps <= AIS_T:
        return res, {"steps": AIS_T, "seconds": time.perf_counter() - start, "ais_chains": n}
    runs: list[Any] = []
    while len(runs) < AIS_BATCHES:
        t0 = time.perf_counter()
        kw = {"tune": 0, "step_size": runs[0].step_sizes} if runs else {}
        runs.append(ais(target, q, n, num_temperatures=temps, **kw))
        if time.perf_counter() + (time.perf_counter() - t0) > deadline:
            break
    info = {"steps": temps, "seconds": time.perf_counter() - start, "ais_chains": n * len(runs)}
    return AISResult.merge(runs), info


def train(method: str, target: Any, scale: float, budget: float) -> tuple[Any, dict[str, Any]]:
    """Train ``method`` for ``budget`` seconds; returns (flow or samples, info)."""
    deadline = time.perf_counter() + budget
    start = time.perf_counter()
    d = target.dim
    if method == "ais":
        return train_ais(target, scale, deadline)
    if method.startswith("svgd-"):
        n = int(method.split("-")[1])
        count = {"n": 0}

        def stop(step: int, x: torch.Tensor, phi: torch.Tensor) -> bool:
            count["n"] = step + 1
            return time.perf_counter() > deadline

        x = svgd(target, scale * torch.randn(n, d), 10**9, step_size=0.05, callback=stop)
        return x.detach(), {"steps": count["n"], "seconds": time.perf_counter() - start}
    loss: Any = {
        "kl": "kl",
        "renyi": Renyi(0.5),
        "chi2": "chi2",
        "mixture": "mixture-kl",
        "fab": fab_for_dim(d, BATCH),
    }[method]
    q = method_flow(method, d, scale)
    hist = fit(
        q, target, 10**9, loss=loss, lr=LR, num_samples=BATCH, progress=False, max_bad_steps=50,
        grad_clip=100.0, callback=lambda step, info: time.perf_counter() > deadline,
    )  # fmt: skip
    return q, {"steps": len(hist), "seconds": time.perf_counter() - start}


@torch.no_grad()
def score(method: str, result: Any, target: Any, seed: int, budget: float) -> dict[str, Any]:
    """Metrics of a trained method (see the module docstring)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    ref = target.sample(5000, gen) if target.has_sample else None
    row: dict[str, Any] = {}
    if method == "ais":
        idx = torch.multinomial(torch.softmax(result.log_weights, 0), 10_000, replacement=True)
        x = result.samples[idx]
        row.update(ais_log_z=result.log_z, ais_se=result.log_z_se, ais_ess=result.ess)
        row.update(is_log_z=result.is_log_z)
    elif method.startswith("svgd-"):
        x = result
    else:
        q = result
        x = q.sample(10_000)
        with torch.enable_grad():
            diag = diagnose(q, target, n=EVAL_N)
            r, temps = eval_ais(target, q, budget)
        row.update(elbo=diag.elbo, is_log_z=diag.log_z, is_se=diag.log_z_se, ess=diag.ess)
        row.update(zero_weights=diag.zero_weights, is_n=EVAL_N)
        row.update(ais_log_z=r.log_z, ais_se=r.log_z_se, ais_ess=r.ess, ais_temps=temps)
        if ref is not None:
            row.update(eubo=eubo(q, target, ref), fwd_ess=forward_ess(q, target, ref))
    if target.log_z is not None:
        for key in ("is", "ais"):
            if f"{key}_log_z" in row:
                row[f"{key}_abs_err"] = abs(row[f"{key}_log_z"] - target.log_z)
    if ref is not None:
        sd = ref.std(0).clamp_min(1e-6)
        row["mmd"] = mmd2(x[:2000].float() / sd, ref[:2000] / sd)
    if target.modes is not None:
        row["modes"] = count_modes(x, target)
        row["n_modes"] = len(target.modes)
        row["emc"] = entropic_mode_coverage(x, target)
    row["_samples"] = x[:3000]
    return row


def figure(name: str, target: Any, rows: list[dict[str, Any]], out: Path) -> None:
    """Samples of every method (first seed) on the target's density contours."""
    rows = [r for r in rows if "_samples" in r]
    box = target.bounds
    g0 = torch.linspace(*box[0], 300)
    g1 = torch.linspace(*box[1], 300)
    xx, yy = torch.meshgrid(g0, g1, indexing="ij")
    with torch.no_grad():
        lp = target.log_prob(torch.stack([xx, yy], -1).reshape(-1, 2)).reshape(300, 300)
    fig, axes = plt.subplots(1, len(rows), figsize=(2.6 * len(rows), 2.8), squeeze=False)
    for ax, row in zip(axes[0], rows, strict=True):
        ax.contour(xx, yy, lp.clamp_min(lp.max() - 12), levels=8, linewidths=0.5, cmap="Greys")
        s = row["_samples"][:2000]
        ax.scatter(s[:, 0], s[:, 1], s=1, alpha=0.4, color="tab:red")
        ax.set_xlim(*box[0])
        ax.set_ylim(*box[1])
        ax.set_xticks([])
        ax.set_yticks([])
        title = row["method"]
        if "modes" in row:
            title += f"\n{row['modes']}/{row['n_modes']} modes"
        ax.set_title(title, fontsize=8)
    fig.suptitle(name, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / f"{name}.png", dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every budget")
    parser.add_argument(
        "--budget", type=float, default=None,
        help="training seconds per cell (target, method, seed), replacing the table's budgets",
    )  # fmt: skip
    parser.add_argument("--save-flows", type=Path, default=None, help="save trained flows here")
    parser.add_argument(
        "--rescore", type=Path, default=None,
        help="score flows saved by --save-flows in this folder again (no training; the training "
        "columns are kept from runs.csv)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sampling"))
    parser.add_argument("--smoke", action="store_true", help="tiny evaluation sizes (a check)")
    parser.add_argument("--report", action="store_true", help="only rewrite table.md from runs.csv")
    args = parser.parse_args()
    if args.smoke:
        global EVAL_N, AIS_N, AIS_T, AIS_T_MAX
        EVAL_N, AIS_N, AIS_T, AIS_T_MAX = 2000, 256, 4, 8
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / "runs.csv"
    old: list[dict[str, Any]] = []
    if csv_path.exists():  # keep other targets/methods/seeds from earlier invocations
        old = [
            r
            for r in read_csv(csv_path)
            if args.report
            or not (
                r["target"] in args.targets
                and r["method"] in args.methods
                and int(r["seed"]) in args.seeds
            )
        ]
    trained: dict[tuple[str, str, int], dict[str, Any]] = {}
    if args.rescore:
        trained = {(r["target"], r["method"], int(r["seed"])): r for r in read_csv(csv_path)}
    rows: list[dict[str, Any]] = []
    for name in [] if args.report else args.targets:
        reg, options, scale, budget = TARGETS[name]
        target = get(reg, **options)
        budget = (budget if args.budget is None else args.budget) * args.budget_scale
        fig_rows = []
        for method in args.methods:
            for seed in args.seeds:
                torch.manual_seed(seed)
                row: dict[str, Any] = {"target": name, "method": method, "seed": seed}
                row["budget_s"] = budget
                try:
                    if args.rescore:
                        before = trained[(name, method, seed)]
                        result = method_flow(method, target.dim, scale)
                        path = args.rescore / f"{name}-{method}-{seed}.pt"
                        result.load_state_dict(torch.load(path, weights_only=True))
                        info = {k: before[k] for k in ("budget_s", "steps", "seconds")}
                        budget = float(info["budget_s"])
                    else:
                        cpu = time.process_time()
                        result, info = train(method, target, scale, budget)
                        info["cpu_seconds"] = time.process_time() - cpu  # < seconds: contention
                    row.update(info)
                    row["steps_per_s"] = info["steps"] / info["seconds"]
                    t0 = time.perf_counter()
                    row.update(score(method, result, target, seed, budget))
                    row["eval_seconds"] = time.perf_counter() - t0
                    if args.save_flows and isinstance(result, torch.nn.Module):
                        args.save_flows.mkdir(parents=True, exist_ok=True)
                        path = args.save_flows / f"{name}-{method}-{seed}.pt"
                        torch.save(result.state_dict(), path)
                except Exception as exc:  # a failed cell stays in the table with its error
                    row["error"] = f"{type(exc).__name__}: {exc}"
                shown = {k: v for k, v in row.items() if not k.startswith("_")}
                print(shown, flush=True)
                if seed == args.seeds[0]:
                    fig_rows.append(row)
                rows.append(row)
        if target.dim == 2 and target.bounds is not None:  # a subset of methods: own file
            label = (
                name if set(args.methods) == set(METHODS) else f"{name}-{'-'.join(args.methods)}"
            )
            figure(label, target, fig_rows, args.out)
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    all_rows = old + clean
    write_rows(csv_path, all_rows)  # atomic (benchmarks.files)
    table = markdown_table(summarize(all_rows), COLUMNS + ["error"])
    header = (
        "# Sampling benchmarks (issue 13)\n\nSame wall-clock training budget per method and "
        "target (`budget_s` in runs.csv), 2-core CPU shared with other jobs, one torch thread. "
        "`is_abs_err`/`ais_abs_err`: |Δlog Z| of importance sampling "
        f"({EVAL_N} draws) and of AIS ({AIS_N} chains, HMC) from the trained flow (AIS method: "
        f"from N(0, s²I), {AIS_BATCHES} merged batches of chains with as many temperatures as "
        "its budget allows; `ais_chains` in runs.csv: how many finished); evaluation "
        f"AIS starts at {AIS_T} temperatures and doubles them (`ais_temps`) while its se > "
        f"{AIS_SE} and the next run fits in {AIS_SHARE:g} of the training budget (≥ 60 s); "
        "rows with no `ais_temps` were measured before that rule, at 32, and rows with no "
        "`is_n` in runs.csv with 10⁵ IS draws. `abs_err`: of the two "
        "estimates, the one with the smaller se (`estimator`); `seconds`: training wall time, "
        "`cpu_seconds` its CPU time (less when other jobs share the core); "
        "`modes`: declared modes holding ≥ 20% of their fair share of 10 000 samples; `emc`: "
        "entropic mode coverage; `mmd`: MMD² to exact samples (standardized). Figures: "
        "`<target>.png` shows the last run of every method, `<target>-<methods>.png` a later run "
        "of some (the rows above are the latest of each cell).\n\n"
    )
    text = header + table + "\n\n" + verdicts(all_rows)
    write_text(args.out / "table.md", text)
    print(text)


if __name__ == "__main__":
    main()
