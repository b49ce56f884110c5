"""Every flow family on every 2-D target, plus N(0, I₁₀₀) variances, the 10-d funnel and a
heavy-tailed Student-t(3) in d = 10.

Writes under ``--out``: ``flows2d.csv``/``flows2d.md`` (KL = log Z − ELBO, ESS, k̂ per family and
target), ``gaussian100.csv``, ``funnel10.csv``, ``student_t10.csv``, ``summary.md`` and
``flows2d.png`` (a grid of sample histograms, rows = targets, columns = families); and prints the
Markdown. ``--families`` may include zuko's peers (``zuko-nsf``, ``zuko-maf``; needs the
``bench`` extra); ``--parts`` and ``--targets`` restrict the run.

    python -m benchmarks.flows2d --out bench-out/flows2d            # full (~40 min on 2 cores)
    python -m benchmarks.flows2d --out bench-out/flows2d --quick    # ~4 min
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    FAMILIES,
    ZUKO_FAMILIES,
    alternating_rates,
    evaluate,
    fit_or_fail,
    markdown_table,
    read_csv,
)
from benchmarks.files import check_names, out_folder, save_figure, write_rows, write_text  # noqa: E402
from vi_flows import targets  # noqa: E402

TARGETS_2D = ["u1", "u2", "u3", "u4", "banana", "ring", "moons", "funnel", "mixture"]


def _describe(row: dict) -> str:
    if "error" in row:
        return f"failed: {row['error']}"
    return f"KL={row['kl']:.4f} ESS={row['ess']:.3f} k={row['k_hat']:.2f} ({row['seconds']:.0f}s)"


def run_2d(
    out: Path, steps: int, eval_n: int, families: list[str], target_names: list[str]
) -> list[dict]:
    rows = []
    fig, axes = plt.subplots(
        len(target_names),
        len(families),
        figsize=(2.2 * len(families), 2.2 * len(target_names)),
        squeeze=False,  # a 2-D grid even for one family (--families X)
    )
    for i, name in enumerate(target_names):
        target = targets.get(name, dim=2) if name in {"funnel", "mixture"} else targets.get(name)
        for j, family in enumerate(families):
            q, info = fit_or_fail(family, target, steps=steps)
            row = {"target": name, "flow": family, **info}
            if q is not None:
                row.update(evaluate(q, target, eval_n))
            rows.append(row)
            print(f"{name:8s} {family:17s} " + _describe(row), flush=True)
            ax = axes[i, j]
            if q is not None:
                with torch.no_grad():
                    x = q.sample(20_000).numpy()
                ax.hist2d(x[:, 0], x[:, 1], bins=80, range=target.bounds, cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(family, fontsize=8)
            if j == 0:
                ax.set_ylabel(name)
    fig.tight_layout()
    save_figure(fig, out / "flows2d.png", dpi=90)
    plt.close(fig)
    write_rows(out / "flows2d.csv", rows)
    return rows


def run_gaussian100(out: Path, steps: int, families: list[str]) -> list[dict]:
    target = targets.get("gaussian", dim=100)
    rows = []
    for family in families:
        q, info = fit_or_fail(family, target, steps=steps)
        if q is None:
            rows.append({"flow": family, **info})
            print(f"N(0,I100) {family:17s} failed: {info['error']}", flush=True)
            continue
        torch.manual_seed(1)
        var = q.sample(20_000).var(0)
        rows.append(
            {
                "flow": family,
                "mean_var": float(var.mean()),
                "min_var": float(var.min()),
                "max_var": float(var.max()),
                "within_5pct": bool(((var - 1).abs() <= 0.05).all()),
                **info,
            }
        )
        print(
            f"N(0,I100) {family:17s} var mean {rows[-1]['mean_var']:.3f} "
            f"[{rows[-1]['min_var']:.3f}, {rows[-1]['max_var']:.3f}]",
            flush=True,
        )
    write_rows(out / "gaussian100.csv", rows)
    return rows


def run_funnel(out: Path, steps: int, eval_n: int, families: list[str]) -> list[dict]:
    target = targets.get("funnel", dim=10)
    rows = []
    for family in families:
        q, info = fit_or_fail(family, target, steps=steps)
        if q is None:
            rows.append({"flow": family, "within_10pct_of_3": False, **info})
            print(f"funnel10 {family:17s} failed: {info['error']}", flush=True)
            continue
        torch.manual_seed(1)
        v = q.sample(50_000)[:, 0]
        sd = float(v.std())
        rows.append(
            {
                "flow": family,
                "sd_v": sd,
                "mean_v": float(v.mean()),
                "within_10pct_of_3": abs(sd - 3.0) <= 0.3,
                **evaluate(q, target, eval_n),
                **info,
            }
        )
        print(f"funnel10 {family:17s} sd(v) = {sd:.3f} KL={rows[-1]['kl']:.3f}", flush=True)
    write_rows(out / "funnel10.csv", rows)
    return rows


def run_student_t(out: Path, steps: int, eval_n: int, families: list[str]) -> list[dict]:
    """Multivariate Student-t(3), d = 10: each family with the normal base and (native families)
    the Student-t base with a learned ν (initial 5, the default); 99.5 % marginal quantiles."""
    from scipy.stats import t as student_t

    df, dim = 3.0, 10
    target = targets.get("student-t", dim=dim, df=df)
    truth = float(student_t.ppf(0.995, df))
    rows = []
    runs = [(f, "normal") for f in families]
    runs += [(f, "student-t") for f in families if f not in ZUKO_FAMILIES]
    for family, base in runs:
        options = {"base": "student-t", "learn_df": True} if base == "student-t" else {}
        q, info = fit_or_fail(family, target, steps=steps, options=options)
        row: dict = {"flow": family, "base": base}
        if q is None:
            rows.append({**row, **info})
            print(f"student-t10 {family:10s} {base:9s} failed: {info['error']}", flush=True)
            continue
        torch.manual_seed(1)
        with torch.no_grad():
            x = q.sample(200_000).double()
        quant = x.quantile(0.995, dim=0)  # per coordinate
        rel = (quant - truth).abs() / truth
        if base == "student-t":
            row["fitted_df"] = float(q.base.df())
        row.update(
            {
                "q995_mean": float(quant.mean()),
                "q995_truth": truth,
                "q995_max_rel_err": float(rel.max()),
                "within_10pct": bool((rel <= 0.10).all()),
                **evaluate(q, target, eval_n),
                **info,
            }
        )
        rows.append(row)
        print(
            f"student-t10 {family:10s} {base:9s} q995 {row['q995_mean']:.3f} (truth {truth:.3f}) "
            f"max rel err {row['q995_max_rel_err']:.3f} KL={row['kl']:.4f}",
            flush=True,
        )
    write_rows(out / "student_t10.csv", rows)
    return rows


def run_speed(out: Path, rounds: int, steps_per_round: int) -> list[dict]:
    """Fit steps/s of the same spline coupling flow (4 layers, hidden (64, 64), 8 bins, bound 5,
    batch 256) from us, nflows and zuko, on U1 (d = 2) and the 10-d funnel; one process, the
    libraries alternating within each round; median over ``rounds``."""
    from benchmarks.common import build_family
    from vi_flows.fit import fit

    rows = []
    for label, target in [("u1", targets.get("u1")), ("funnel10", targets.get("funnel", dim=10))]:
        torch.manual_seed(0)
        contenders = {name: build_family(name, target.dim) for name in SPEED_FAMILIES}
        for q in contenders.values():  # warm-up outside the timing
            fit(q, target, 5, num_samples=256, progress=False)
        rates = alternating_rates(contenders, target, rounds, steps_per_round)
        ours = statistics.median(rates["nsf"])
        for name, r in rates.items():
            med = statistics.median(r)
            rows.append(
                {
                    "target": label,
                    "flow": name,
                    "median_steps_per_s": med,
                    "rates": " ".join(f"{v:.1f}" for v in r),
                    "nsf_over_this": ours / med,
                }
            )
            print(f"speed {label:8s} {name:14s} {med:7.1f} steps/s  nsf/this {ours / med:.2f}")
    write_rows(out / "speed.csv", rows)
    return rows


#: The speed contest: our coupling NSF against the same architecture in nflows and zuko.
SPEED_FAMILIES = ["nsf", "nflows-spline", "zuko-nsf"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench-out/flows2d")
    parser.add_argument("--quick", action="store_true", help="fewer steps and samples")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--targets", nargs="*", default=TARGETS_2D, help="2-D targets to run")
    parser.add_argument("--eval", type=int, default=None, help="override evaluation samples")
    parser.add_argument(
        "--parts",
        nargs="*",
        default=["2d", "gaussian100", "funnel", "student-t"],
        choices=["2d", "gaussian100", "funnel", "student-t", "speed"],
    )
    parser.add_argument(
        "--funnel-families", nargs="*", default=None, help="families for funnel and student-t"
    )
    parser.add_argument("--steps", type=int, default=None, help="override steps per fit")
    parser.add_argument(
        "--resume", action="store_true", help="reuse the CSV of each part already written to --out"
    )
    args = parser.parse_args()
    check_names(parser, "--families", args.families, FAMILIES)
    torch.set_num_threads(1)
    out = out_folder(parser, args.out)
    steps = args.steps or (600 if args.quick else 3000)
    eval_n = args.eval or (20_000 if args.quick else 100_000)
    start = time.perf_counter()

    def part(csv_name: str, run):  # a part's CSV is reused with --resume
        path = out / csv_name
        return read_csv(path) if args.resume and path.exists() else run()

    big = args.funnel_families or args.families
    skip: list[dict] = []
    rows2d = (
        part("flows2d.csv", lambda: run_2d(out, steps, eval_n, args.families, args.targets))
        if "2d" in args.parts
        else skip
    )
    rows100 = (
        part("gaussian100.csv", lambda: run_gaussian100(out, steps, big))
        if "gaussian100" in args.parts
        else skip
    )
    rows_funnel = (
        part("funnel10.csv", lambda: run_funnel(out, 2 * steps, eval_n, big))
        if "funnel" in args.parts
        else skip
    )
    rows_t = (
        part("student_t10.csv", lambda: run_student_t(out, steps, eval_n, big))
        if "student-t" in args.parts
        else skip
    )
    rows_speed = (
        part("speed.csv", lambda: run_speed(out, 3, 100 if not args.quick else 20))
        if "speed" in args.parts
        else skip
    )

    kl_cols = ["target"] + args.families
    pivot = []
    for name in args.targets:
        row = {"target": name}
        for r in rows2d:
            if r["target"] == name:
                row[r["flow"]] = r.get("kl", math.nan)
        pivot.append(row)
    u1 = [r for r in rows2d if r["target"] == "u1"]
    best_u1 = min(u1, key=lambda r: r.get("kl", math.inf)) if u1 else {"flow": "—", "kl": math.nan}
    text = [
        f"# Flow families on 2-D targets ({steps} steps, {eval_n} evaluation samples)",
        "",
        "KL(q‖p) = log Z − ELBO (lower is better):",
        "",
        markdown_table(pivot, kl_cols, 4),
        "",
        "All metrics:",
        "",
        markdown_table(
            rows2d, ["target", "flow", "kl", "ess", "k_hat", "steps", "seconds", "error"], 4
        ),
        "",
        f"Best on U1: {best_u1['flow']} with KL = {best_u1['kl']:.4f}.",
        "",
        f"## N(0, I_100): fitted marginal variances ({steps} steps)",
        "",
        markdown_table(rows100, ["flow", "mean_var", "min_var", "max_var", "within_5pct", "error"]),
        "",
        f"## 10-d funnel: fitted sd of v (truth 3; {2 * steps} steps)",
        "",
        markdown_table(
            rows_funnel, ["flow", "sd_v", "mean_v", "within_10pct_of_3", "kl", "ess", "error"]
        ),
        "",
        "## Student-t(3), d = 10: 99.5 % marginal quantiles "
        f"({steps} steps; Student-t base learns ν from 5)",
        "",
        markdown_table(
            rows_t,
            ["flow", "base", "q995_mean", "q995_truth", "q995_max_rel_err", "within_10pct"]
            + ["fitted_df", "kl", "ess", "k_hat", "error"],
        ),
        "",
        "## Fit steps/s, same spline-coupling architecture (batch 256, median of 3 rounds)",
        "",
        markdown_table(
            rows_speed, ["target", "flow", "median_steps_per_s", "rates", "nsf_over_this"], 2
        ),
        "",
        f"Total time {time.perf_counter() - start:.0f} s. Figure: flows2d.png.",
    ]
    report = "\n".join(text)
    write_text(out / "summary.md", report + "\n")
    print(report)


if __name__ == "__main__":
    main()
