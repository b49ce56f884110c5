"""``vi-flows``: fit a flow to a named target from the command line, and reload a fitted one.

Examples::

    vi-flows fit                                # U1 with RealNVP, the built-in default
    vi-flows fit funnel --dim 10 --flow full-gaussian --steps 5000 --out runs/funnel
    vi-flows show runs/funnel                   # reload the flow, print its diagnostics
    vi-flows list                               # targets and flow families
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any

import torch

from vi_flows import flows, targets
from vi_flows.diagnostics import diagnose
from vi_flows.fit import fit

__all__ = ["main"]


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["layers=4", "hidden=(32, 32)"]`` → ``{"layers": 4, "hidden": (32, 32)}``."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: option {pair!r} is not of the form key=value")
        try:
            options[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            options[key] = raw  # a bare word stays a string
    return options


def _target(name: str, dim: int | None) -> targets.Target:
    try:
        return targets.get(name) if dim is None else targets.get(name, dim=dim)
    except (KeyError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None


def _fit(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    target = _target(args.target, args.dim)
    options = _parse_options(args.option)
    torch.manual_seed(args.seed)  # the flow's initial weights are random too
    try:
        q = flows.build(args.flow, target.dim, **options)
    except KeyError as err:
        raise SystemExit(f"error: {err.args[0]}") from None
    out = Path(args.out or f"runs/{args.target}-{args.flow}")
    out.mkdir(parents=True, exist_ok=True)
    history = fit(
        q,
        target,
        args.steps,
        num_samples=args.samples,
        lr=args.lr,
        lr_schedule="cosine",
        stl=args.stl,
        seed=args.seed,
        progress=not args.quiet,
    )
    torch.manual_seed(args.seed + 1)
    diag = diagnose(q, target, n=args.eval_samples)
    print(f"target {target.name} (dim {target.dim}), flow {args.flow}, {args.steps} steps")
    print(diag)
    flows.save(q, out / "flow.pt")
    history.to_csv(out / "history.csv")
    meta = {
        "target": args.target,
        "dim": target.dim,
        "target_options": {} if args.dim is None else {"dim": args.dim},
        "flow": args.flow,
        "flow_options": options,
        "steps": args.steps,
        "seed": args.seed,
        "diagnostics": {**diag.__dict__, "kl": diag.kl},
    }
    (out / "run.json").write_text(json.dumps(meta, indent=2, default=str))
    from vi_flows.plots import plot_fit  # matplotlib only when a figure is written

    figure = plot_fit(target, q, history, out / "fit.png", title=target.name)
    print(f"wrote {out / 'flow.pt'}, {out / 'history.csv'}, {out / 'run.json'}, {figure}")
    return 0


def _show(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    meta = json.loads((run / "run.json").read_text())
    q = flows.load(run / "flow.pt")
    target = targets.get(meta["target"], **meta["target_options"])
    torch.manual_seed(args.seed)
    print(f"reloaded {run / 'flow.pt'}: flow {meta['flow']} on {meta['target']}")
    print(diagnose(q, target, n=args.eval_samples))
    return 0


def _list(_: argparse.Namespace) -> int:
    print("targets:", ", ".join(targets.names()))
    print("flows:  ", ", ".join(flows.names()))
    found = targets.posteriordb.describe()
    print(
        f"posteriors in {targets.posteriordb.root()}:",
        "" if found else "none (set VI_FLOWS_POSTERIORDB)",
    )
    for name, dim in found:
        print(f"  posteriordb:{name} (dim {dim})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vi-flows`` command."""
    parser = argparse.ArgumentParser(prog="vi-flows", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="fit a flow to a target and write its diagnostics and figure")
    p.add_argument("target", nargs="?", default="u1", help="target name (default: u1)")
    p.add_argument("--flow", default="realnvp", help="flow family (default: realnvp)")
    p.add_argument("--dim", type=int, default=None, help="dimension, for any-d targets")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps (default: 3000)")
    p.add_argument("--samples", type=int, default=256, help="samples per step (default: 256)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default: 3e-3)")
    p.add_argument("--stl", action="store_true", help="path-derivative (STL) gradient")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-samples", type=int, default=100_000, help="samples for diagnostics")
    p.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="flow option, e.g. -o layers=4 -o 'hidden=(32, 32)'",
    )
    p.add_argument("--out", default=None, help="output folder (default: runs/TARGET-FLOW)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_fit)

    p = sub.add_parser("show", help="reload a fitted flow and print its diagnostics")
    p.add_argument("run", help="a folder written by 'vi-flows fit'")
    p.add_argument("--eval-samples", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=_show)

    p = sub.add_parser("list", help="list the targets and flow families")
    p.set_defaults(func=_list)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
