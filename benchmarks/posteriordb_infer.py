"""Turnkey inference on the posteriordb suite: ``vi_flows.infer`` with its defaults on each
available posterior, scored against the reference draws (issue 16, item 3). Not part of CI.

:func:`run_infer` is the building block (one posterior, one method setting, one row); the
command runs it over the suite and writes ``benchmarks/results/posteriordb/infer.md`` / ``.csv``.
A posterior is *matched* when the worst standardized mean error is < 0.1 and every sd ratio is
in [0.9, 1.1] (over the scalar components of the reference draws' parameters); a miss is
*flagged* when the verdict says UNRELIABLE (k̂ > 0.7 or non-finite draws).

Run (one core, under the shared lock)::

    flock /tmp/bench.lock python benchmarks/posteriordb_infer.py --time-budget 300
    python benchmarks/posteriordb_infer.py --only sblri-blr --flow full-gaussian
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Any

import torch

from vi_flows import runfiles
from vi_flows.targets import posteriordb

OUT = Path(__file__).resolve().parent / "results" / "posteriordb"
MEAN_TOL, SD_TOL = 0.1, 0.1


def run_infer(
    name: str, *, time_budget: float = 300.0, seed: int = 0, n: int = 10_000, **options: Any
) -> dict[str, Any]:
    """``vi_flows.infer(posteriordb:<name>, time_budget=..., seed=..., **options)`` scored
    against the reference draws with ``n`` draws of the fitted flow.

    Args:
        name: a posteriordb posterior (one of :func:`vi_flows.targets.posteriordb.available`).
        time_budget: wall-clock seconds for the whole ``infer`` call.
        seed: ``infer``'s seed.
        n: draws from the fitted flow for the comparison.
        options: passed to ``infer`` (e.g. ``flow="full-gaussian"`` for the ADVI-style baseline).

    Returns:
        One row: posterior, dim, method, worst standardized mean error (and its parameter),
        sd-ratio range, k̂, ESS/n, wall time, the conditioning chosen, matched, flagged, verdict.
    """
    from vi_flows.infer import infer  # the turnkey entry point (issue 15's branch)

    target = posteriordb.load(name)
    result = infer(target, time_budget=time_budget, seed=seed, progress=False, **options)
    with torch.no_grad():
        score = target.compare(result.sample(n))
    matched = score["worst_mean_error"] < MEAN_TOL and (
        1 - SD_TOL <= score["sd_ratio_min"] and score["sd_ratio_max"] <= 1 + SD_TOL
    )
    return {
        "posterior": name,
        "dim": target.dim,
        "method": "infer" + "".join(f" {k}={v}" for k, v in options.items()),
        "worst_mean_err": score["worst_mean_error"],
        "worst_param": score["worst_param"],
        "sd_ratio_min": score["sd_ratio_min"],
        "sd_ratio_max": score["sd_ratio_max"],
        "k_hat": result.diagnostics.k_hat,
        "ess_per_n": result.diagnostics.ess,
        "seconds": result.seconds,
        "conditioning": result.precondition.detail,
        "matched": matched,
        "flagged": result.verdict.startswith("UNRELIABLE"),
        "verdict": result.verdict,
    }


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    runfiles.write_text(path, text)  # temp file, fsync, os.replace


def markdown(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("posterior", "{}"),
        ("dim", "{}"),
        ("method", "{}"),
        ("worst_mean_err", "{:.3f}"),
        ("sd_ratio_min", "{:.3f}"),
        ("sd_ratio_max", "{:.3f}"),
        ("k_hat", "{:.2f}"),
        ("ess_per_n", "{:.3f}"),
        ("seconds", "{:.0f}"),
        ("conditioning", "{}"),
        ("matched", "{}"),
        ("flagged", "{}"),
    ]
    lines = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(f.format(r[c]) for c, f in cols) + " |" for r in rows]
    matched = sum(r["matched"] for r in rows)
    silent = [r["posterior"] for r in rows if not r["matched"] and not r["flagged"]]
    return (
        f"# posteriordb: turnkey infer\n\nmatched {matched} of {len(rows)} (worst |mean err| < "
        f"{MEAN_TOL}, sd ratios in [{1 - SD_TOL}, {1 + SD_TOL}]); unflagged misses: "
        f"{', '.join(silent) or 'none'}\n\n" + "\n".join(lines) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="posterior names (default: all)")
    parser.add_argument("--time-budget", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flow", default=None, help="infer's flow (default: infer's own)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    known = posteriordb.available()
    unknown = [name for name in args.only or [] if name not in known]
    if unknown:  # this file runs as a script too, so it does without benchmarks.files
        parser.error(f"--only: unknown {unknown[0]!r}; known: {', '.join(known)}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file, not a folder")
    torch.set_num_threads(1)
    options = {} if args.flow is None else {"flow": args.flow}
    rows = []
    for name in args.only or posteriordb.available():
        row = run_infer(name, time_budget=args.time_budget, seed=args.seed, **options)
        print({k: v for k, v in row.items() if k != "verdict"}, flush=True)
        rows.append(row)
    stem = "infer" if args.flow is None else f"infer-{args.flow}"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(args.out / f"{stem}.csv", buf.getvalue())
    table = markdown(rows)
    _atomic_write(args.out / f"{stem}.md", table)
    print(table)


if __name__ == "__main__":
    main()
