"""Turnkey inference benchmark: ``vi_flows.infer`` with defaults against the old path and SVGD.

    flock /tmp/bench.lock python -m benchmarks.infer --out benchmarks/results/infer
    python -m benchmarks.infer --cases all --budget 120          # every available posterior too
    python -m benchmarks.infer --repeat 5 --cases funnel10 hier-logreg --methods infer
    python -m benchmarks.infer --cases posteriordb --budget 300 --resume   # run only missing cells

Cases (``--cases``; ``all`` adds every posterior ``targets.posteriordb.available()`` lists):
three posteriordb posteriors given **unwhitened** (arK-arK, eight_schools-eight_schools_noncentered,
sblrc-blr; reference draws from posteriordb), Neal's funnel in d = 10 (exact draws), a correlated
Gaussian in d = 100 with condition number 1e4 (random rotation, sds log-spaced 0.1…10, exact
draws) and the hierarchical logistic regression ``hier-logreg`` (d = 30; shipped HMC reference).

Methods, per case and seed, every one single-threaded:

* ``infer``: ``vi_flows.infer(target, time_budget=B, seed=s)`` — the defaults, nothing else;
* ``infer-const``: the same with the old constant step size 1e-2 (``InferConfig(lr=1e-2,
  schedule="constant")``): the step-size rule, side by side;
* ``old``: ``fit`` as before — RealNVP, Adam at constant 1e-2, no conditioning — for the wall
  time ``infer`` took;
* ``svgd-500``: reference SVGD with 500 particles from N(0, I) for the same wall time.

Scores in the target's own (unconstrained) coordinates, standardized by the reference: the worst
|mean − mean_ref| / sd_ref over coordinates and the range of sd / sd_ref, from 10,000 draws of q
(SVGD: its 500 particles). A **hit** is worst error < 0.1 and sd ratios in [0.9, 1.1]. For
``infer`` the table also says whether its verdict flagged the run (UNRELIABLE: k̂ > 0.7, or
BIASED: q's moments differ from the importance-corrected ones, judged on the 90% bootstrap
interval ``check_lo``–``check_hi`` of the sd ratios); a miss that is not flagged is a
**silent miss**. Rows are appended to ``runs.csv`` as they finish; ``table.md`` is rebuilt from all
rows each time.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from typing import Any

import torch

from benchmarks.common import SVGD_STEP, markdown_table, read_csv
from benchmarks.files import check_names, out_folder, write_rows, write_text
from vi_flows import flows, targets
from vi_flows.diagnostics import diagnose
from vi_flows.fit import fit
from vi_flows.infer import InferConfig, infer
from vi_flows.svgd import svgd
from vi_flows.targets import Target, posteriordb

POSTERIORS = ["arK-arK", "eight_schools-eight_schools_noncentered", "sblrc-blr"]
CASES = ["arK-arK", "eight_schools-eight_schools_noncentered", "sblrc-blr", "funnel10"]
CASES += ["gaussian100-cond1e4", "hier-logreg"]
METHODS = ["infer", "infer-const", "old", "svgd-500"]
#: ADVI-style Stan baselines: infer's conditioning and step-size rule with a mean-field
#: (``gaussian``) or full-rank (``full-gaussian``) family instead of ``flow="auto"``; and
#: ``infer-t``: infer with a Student-t base (``InferConfig(base="student-t")``).
EXTRA_METHODS = ["advi-mf", "advi-fr", "infer-t"]


class RotatedGaussian(Target):
    """N(m, Q diag(λ) Qᵀ), λ log-spaced over [1e-2, 1e2] (condition number 1e4), Q random."""

    def __init__(self, dim: int = 100, cond: float = 1e4, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        sd = torch.logspace(-0.5 * math.log10(cond), 0.5 * math.log10(cond), dim).double()
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
        mean = torch.randn(dim, generator=gen, dtype=torch.float64)
        self.tril = torch.linalg.cholesky(q @ torch.diag(sd.square()) @ q.T)
        log_z = float(self.tril.diagonal().log().sum()) + 0.5 * dim * math.log(2 * math.pi)
        super().__init__(f"gaussian{dim}-cond{cond:g}", dim, log_z=log_z, mean=mean)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        tril, mean = self.tril.to(x), self.mean.to(x)
        flat = (x - mean).reshape(-1, self.dim).T
        z = torch.linalg.solve_triangular(tril, flat, upper=False).T
        return -0.5 * z.square().sum(-1).reshape(x.shape[:-1])

    def _sample(self, n: int, gen: torch.Generator | None, device: torch.device) -> torch.Tensor:
        z = torch.randn(n, self.dim, generator=gen, dtype=torch.float64)
        return self.mean + z @ self.tril.T


def make_case(name: str) -> tuple[Target, torch.Tensor]:
    """The target and its reference draws (n, d) float64."""
    gen = torch.Generator().manual_seed(99)
    if name == "funnel10":
        target = targets.get("funnel", dim=10)
        return target, target.sample(20_000, generator=gen, dtype=torch.float64)
    if name == "gaussian100-cond1e4":
        target = RotatedGaussian(100, 1e4)
        return target, target.sample(20_000, generator=gen, dtype=torch.float64)
    if name == "hier-logreg":
        target = targets.get("hier-logreg")
        return target, target.reference_unconstrained()
    target = posteriordb.load(name)
    return target, target.reference_unconstrained()


def score(draws: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    draws = draws.double()
    if not torch.isfinite(draws).all():
        return {"worst_z": math.nan, "sd_min": math.nan, "sd_max": math.nan, "hit": False}
    mean, sd = ref.mean(0), ref.std(0)
    worst = float(((draws.mean(0) - mean).abs() / sd).max())
    ratio = draws.std(0) / sd
    lo, hi = float(ratio.min()), float(ratio.max())
    return {
        "worst_z": worst,
        "sd_min": lo,
        "sd_max": hi,
        "hit": worst < 0.1 and 0.9 <= lo <= hi <= 1.1,
    }


def _diag(q: flows.Flow, target: Target) -> dict[str, float]:
    try:
        d = diagnose(q, target, n=4000)
    except ValueError:  # non-finite weights: no diagnostics to report
        return {"k_hat": math.nan, "ess_n": math.nan}
    return {"k_hat": d.k_hat, "ess_n": d.ess}


def run(method: str, name: str, target: Target, budget: float, seed: int, wall: float) -> dict:
    torch.manual_seed(seed)
    row: dict[str, Any] = {"case": name, "dim": target.dim, "method": method, "seed": seed}
    start = time.perf_counter()
    if method in ("infer", "infer-const", "infer-t", "advi-mf", "advi-fr"):
        config = {
            "infer-const": InferConfig(lr=1e-2, schedule="constant"),
            "infer-t": InferConfig(base="student-t"),
        }.get(method)
        family = {"advi-mf": "gaussian", "advi-fr": "full-gaussian"}.get(method, "auto")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            try:
                result = infer(
                    target,
                    flow=family,
                    time_budget=budget,
                    seed=seed,
                    progress=False,
                    config=config,
                )
            except (FloatingPointError, ValueError) as err:  # a loud failure: recorded, flagged
                row.update(
                    error=f"{type(err).__name__}: {str(err)[:80]}", flagged=True, verdict="ERROR"
                )
                row["seconds"] = time.perf_counter() - start
                row.update(score(torch.full((2, target.dim), math.nan), make_case.cache[name][1]))
                row["silent_miss"] = False
                return row
        draws = result.sample(10_000)
        flagged = not result.verdict.startswith(("good", "usable"))
        row.update(
            steps=len(result.history),
            conditioning=result.precondition.method,
            k_hat=result.diagnostics.k_hat,
            ess_n=result.diagnostics.ess,
            flagged=flagged,
            verdict=result.verdict.split(":")[0],
            stop=result.stop_reason,
            check_lo=result.sd_ratio_bounds[0],  # the verdict's 90% interval of the sd ratios
            check_hi=result.sd_ratio_bounds[1],
        )
    elif method == "old":
        q = flows.build("realnvp", target.dim)
        deadline = start + wall
        try:
            history = fit(
                q,
                target,
                10**9,
                lr=1e-2,
                seed=seed,
                progress=False,
                callback=lambda s, i: time.perf_counter() > deadline,
            )
            row["steps"] = len(history)
            draws = q.sample(10_000)
            row.update(_diag(q, target))
        except (FloatingPointError, ValueError) as err:
            row["error"] = f"{type(err).__name__}: {str(err)[:60]}"
            draws = torch.full((2, target.dim), math.nan)
        row["conditioning"] = "none"
    elif method == "svgd-500":
        deadline = start + wall
        count = {"n": 0}

        def stop(step: int, x: torch.Tensor, phi: torch.Tensor) -> bool:
            count["n"] = step + 1
            return time.perf_counter() > deadline

        try:
            draws = svgd(
                target, torch.randn(500, target.dim), 10**9, step_size=SVGD_STEP, callback=stop
            )
        except (FloatingPointError, ValueError) as err:  # e.g. a non-finite score at N(0, I)
            row["error"] = f"{type(err).__name__}: {str(err)[:60]}"
            draws = torch.full((2, target.dim), math.nan)
        row.update(steps=count["n"], conditioning="none")
    else:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS + EXTRA_METHODS)}")
    row["seconds"] = time.perf_counter() - start
    row.update(score(draws.detach(), make_case.cache[name][1]))
    if "flagged" in row:  # every method with a verdict (infer*, advi-*)
        row["silent_miss"] = (not row["hit"]) and not row["flagged"]
    return row


make_case.cache = {}  # type: ignore[attr-defined]

COLUMNS = [
    "case",
    "dim",
    "method",
    "seed",
    "worst_z",
    "sd_min",
    "sd_max",
    "hit",
    "k_hat",
    "check_lo",
    "check_hi",
    "ess_n",
    "seconds",
    "steps",
    "conditioning",
    "verdict",
    "silent_miss",
    "error",
]


def tables(rows: list[dict]) -> str:
    single = [r for r in rows if r.get("repeat") is not True]
    text = ["# Turnkey inference benchmark", "", markdown_table(single, COLUMNS), ""]
    reps = [r for r in rows if r.get("repeat") is True]
    if reps:
        text += ["## Seed repeats (infer defaults)", ""]
        agg = []
        for case in sorted({r["case"] for r in reps}):
            rs = [r for r in rows if r["case"] == case and r["method"] == "infer"]
            worst = [r["worst_z"] for r in rs]
            agg.append(
                {
                    "case": case,
                    "seeds": len(rs),
                    "hits": sum(bool(r["hit"]) for r in rs),
                    "worst_z median": statistics.median(worst),
                    "worst_z max": max(worst),
                    "sd ratio range": f"{min(r['sd_min'] for r in rs):.3f}–"
                    f"{max(r['sd_max'] for r in rs):.3f}",
                    "k_hat max": max(r["k_hat"] for r in rs),
                    "silent misses": sum(bool(r["silent_miss"]) for r in rs),
                }
            )
        text += [markdown_table(agg, list(agg[0])), ""]
    return "\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=CASES, help="case names, or 'all'")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--budget", type=float, default=60.0, help="infer's time budget (s)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--repeat", action="store_true", help="mark rows as seed repeats")
    parser.add_argument("--out", default="benchmarks/results/infer")
    parser.add_argument(
        "--resume", action="store_true", help="keep rows already in runs.csv; run only the rest"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = args.cases
    if cases == ["all"]:
        cases = CASES + [p for p in posteriordb.available() if p not in POSTERIORS]
    elif cases == ["posteriordb"]:  # every available posteriordb posterior (issue 16's suite)
        cases = posteriordb.available()
    check_names(parser, "--cases", cases, [*dict.fromkeys([*CASES, *posteriordb.available()])])
    out = out_folder(parser, args.out)
    path = out / "runs.csv"
    rows = read_csv(path) if path.exists() else []
    for name in cases:
        make_case.cache[name] = make_case(name)
        target = make_case.cache[name][0]
        for seed in args.seeds:
            wall = args.budget
            for method in args.methods:
                key = {"case": name, "method": method, "seed": seed, "repeat": args.repeat}
                done = [r for r in rows if _same(r, key)] if args.resume else []
                if done:
                    if method == "infer":
                        wall = float(done[0]["seconds"])
                    continue
                row = run(method, name, target, args.budget, seed, wall)
                if method == "infer":
                    wall = row["seconds"]  # the baselines get the wall time infer took
                row["repeat"] = args.repeat
                rows = [r for r in rows if not _same(r, row)] + [row]
                write_rows(path, rows)
                write_text(out / "table.md", tables(rows))
                print(markdown_table([row], COLUMNS).splitlines()[-1], flush=True)
    print(tables(rows))


def _same(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("case", "method", "seed", "repeat"))


if __name__ == "__main__":
    main()
