"""``python -m benchmarks.rl``: run suites, write tables and figures (see :mod:`benchmarks.rl`)."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

from benchmarks.files import out_folder
from benchmarks.rl import __doc__ as DOC
from benchmarks.rl.autoalpha import write_autoalpha
from benchmarks.rl.reports import merge_rows, write_tables
from benchmarks.rl.runners import finished_cell, run_suite
from benchmarks.rl.step_floor import step_floor
from benchmarks.rl.suites import has_mujoco, select, suites
from benchmarks.rl.throughput import throughput
from benchmarks.rl.update_cost import update_cost


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the arguments, run the suites, write and print the summary."""
    p = argparse.ArgumentParser(description=DOC.split("\n")[0])
    p.add_argument(
        "--suite",
        default="all",
        choices=[
            "all",
            "exploration",
            "explore",
            "pendulum",
            "cartpole",
            "mujoco",
            "ablation",
            "autoalpha",
            "throughput",
            "update-cost",
            "step-floor",
        ],
    )
    p.add_argument("--quick", action="store_true", help="small steps/seeds (minutes)")
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="run seeds 0..N-1 of every task (default: the suite's own count); throughput: "
        "N repeats (default 5)",
    )
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated method labels and/or env ids to run (both: the named methods on the "
        "named envs; others are skipped, not erased); e.g. two processes on two cores, then one "
        "plain rerun to write the tables",
    )
    p.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="suites of training runs: run no seed below this one (finished cells below it are "
        "still reported): one process per seed range, e.g. on several cores, or more seeds on "
        "top of finished ones",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: write the tables and figures from the finished cells under --out",
    )
    p.add_argument("--out", default="/tmp/bench/rl")
    p.add_argument(
        "--results",
        default=None,
        help="autoalpha: folder for table.md, table.csv and curves.png (default: --out)",
    )
    args = p.parse_args(argv)
    if args.first_seed < 0:
        p.error(f"--first-seed must be >= 0, got {args.first_seed}")
    torch.set_num_threads(1)
    root = out_folder(p, args.out)
    if args.suite == "throughput":
        if args.seeds is not None and args.seeds < 1:
            p.error(f"--seeds must be >= 1, got {args.seeds}")
        throughput(root, args.quick, repeats=args.seeds)
        return 0
    if args.suite == "update-cost":
        update_cost(root, args.quick)
        return 0
    if args.suite == "step-floor":
        step_floor(root, args.quick)
        return 0
    try:
        tasks = select(suites(args.quick), args.seeds, args.only)
    except ValueError as err:
        p.error(str(err))
    names = ["exploration", "pendulum", "cartpole", "ablation"] if args.suite == "all" else []
    names = names or [args.suite]
    if not args.quick and args.suite == "all":
        names.append("mujoco")
    summary = root / "summary.csv"
    old = []
    if summary.exists():
        with summary.open() as f:
            old = list(csv.DictReader(f))
    try:
        return _run(names, tasks, root, args, old)
    except ValueError as err:  # e.g. a finished cell run for other settings (finished_cell)
        print(f"benchmarks.rl: error: {err}", file=sys.stderr)
        return 2


def _run(
    names: list[str],
    tasks: dict,
    root: Path,
    args: argparse.Namespace,
    old: list[dict],
) -> int:
    """The training suites ``names`` (and autoalpha's table); writes the summary tables."""
    rows: list[dict] = []
    for name in names:
        if name == "mujoco" and not has_mujoco():
            print("mujoco suite skipped: the mujoco package is not installed", flush=True)
            continue
        if name == "explore" and "Swimmer-v5" in tasks[name] and not has_mujoco():
            print("explore: Swimmer-v5 skipped: the mujoco package is not installed")
            tasks[name] = {k: t for k, t in tasks[name].items() if k != "Swimmer-v5"}
        rows += run_suite(
            name, tasks[name], root, cached_only=args.report_only, first_seed=args.first_seed
        )
        write_tables(merge_rows(old, rows), root)
        if name == "autoalpha":
            dest = Path(args.results) if args.results else root
            for task in tasks[name].values():  # the finished cells (--report-only runs none)
                seeds = range(task.seeds)
                results = {
                    m.label: [
                        r for s in seeds if (r := finished_cell(name, task, m, s, root)) is not None
                    ]
                    for m in task.methods
                }
                print(write_autoalpha(name, task, results, root, dest), flush=True)
            return 0
    print((root / "summary.md").read_text() if (root / "summary.md").exists() else "no results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
