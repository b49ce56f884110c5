"""``vi-flows``: fit a flow to a target from the command line, and reload a fitted one.

Examples::

    vi-flows fit                                # U1, turnkey (vi_flows.infer)
    vi-flows fit posteriordb:eight_schools-eight_schools_noncentered --time-budget 60
    vi-flows fit model.py:log_density --dim 12  # your own log-density, a function in a file
    vi-flows fit funnel --dim 10 --flow full-gaussian --steps 5000 --out runs/funnel
    vi-flows show runs/funnel                   # reload the flow, print its diagnostics
    vi-flows list                               # targets and flow families

``fit`` runs :func:`vi_flows.infer` (automatic conditioning, step sizes, stopping and a verdict)
unless ``--flow`` or ``--steps`` is given; then it runs the plain :func:`vi_flows.fit` loop with
those settings. Expected failures (bad arguments, missing or corrupt files, unknown names, a
target that fails its checks) print one line on stderr and exit with status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

import torch

from vi_flows import distributed, flows, runfiles, targets
from vi_flows.diagnostics import K_HAT_MAX, Diagnostics, diagnose
from vi_flows.fit import NonFiniteError, fit
from vi_flows.infer import InferConfig, auto_flow, infer
from vi_flows.losses import get_loss
from vi_flows.targets.files import from_file, is_file_spec

__all__ = ["closed_pipe_exit", "main"]


class CliError(ValueError):
    """An expected failure: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + message
        raise CliError(f"{message} (see {self.prog} --help)")


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["layers=4", "hidden=(32, 32)"]`` → ``{"layers": 4, "hidden": (32, 32)}``."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--option {pair!r} is not of the form key=value")
        try:
            options[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            options[key] = raw  # a bare word stays a string
    return options


def _target(spec: str, dim: int | None) -> targets.Target:
    if dim is not None and dim < 1:
        raise CliError(f"--dim must be >= 1, got {dim}")
    if is_file_spec(spec) and dim is None:
        raise CliError(f"--dim is required for a target given as FILE.py:FUNCTION ({spec})")
    target = (
        from_file(spec, dim)
        if is_file_spec(spec)
        else (targets.get(spec) if dim is None else targets.get(spec, dim=dim))
    )
    # One evaluation now, so a wrong shape or type is one line before any fitting.
    try:
        probe = target.log_prob(torch.zeros(2, target.dim))
    except Exception as err:  # the user's function at this --dim: the input's fault
        raise CliError(
            f"target {spec}: log-density failed on inputs (2, {target.dim}) "
            f"({type(err).__name__}: {err}); check --dim"
        ) from err
    if not isinstance(probe, torch.Tensor) or tuple(probe.shape) != (2,):
        got = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
        raise CliError(f"target {spec}: log-density returned {got} for inputs (2, {target.dim})")
    return target


def _check_args(args: argparse.Namespace) -> None:
    """Every range check before any work (one line naming the argument and the valid range)."""
    checks = [
        ("--samples", args.samples, args.samples >= 1, ">= 1"),
        ("--eval-samples", args.eval_samples, args.eval_samples >= 100, ">= 100"),
        ("--threads", args.threads, args.threads >= 1, ">= 1"),
    ]
    if args.steps is not None:
        checks.append(("--steps", args.steps, args.steps >= 0, ">= 0"))
    if args.draws is not None:
        checks.append(("--draws", args.draws, args.draws >= 1, ">= 1"))
    if args.lr is not None:
        checks.append(("--lr", args.lr, math.isfinite(args.lr) and args.lr > 0, "finite and > 0"))
    if args.time_budget is not None:
        ok = math.isfinite(args.time_budget) and args.time_budget > 0
        checks.append(("--time-budget", args.time_budget, ok, "finite and > 0 seconds"))
    for name, value, ok, valid in checks:
        if not ok:
            raise CliError(f"{name} must be {valid}, got {value}")


def _default_out(spec: str, flow: str) -> Path:
    stem = Path(spec.rpartition(":")[2]).name if is_file_spec(spec) else spec.replace(":", "-")
    return Path(f"runs/{stem}-{flow}")


def _fit(args: argparse.Namespace) -> int:
    _check_args(args)
    torch.set_num_threads(args.threads)
    distributed.init()  # under torchrun: join the ranks (each fits its share of the samples)
    if not distributed.is_main():
        args.quiet = True  # rank 0 shows progress and writes the run folder
    target = _target(args.target, args.dim)
    turnkey = args.flow is None and args.steps is None
    if turnkey and (args.option or args.stl or args.lr is not None):
        raise CliError("--option, --stl and --lr need --flow or --steps (the plain fit loop)")
    infer_only = [args.objective is not None, args.precondition is not None]
    if not turnkey and (any(infer_only) or args.time_budget is not None):
        raise CliError(
            "--objective, --precondition and --time-budget are infer's: drop --flow and --steps "
            "(the plain fit loop fits the reverse KL for --steps steps)"
        )
    if turnkey and args.draws is not None and args.draws > args.eval_samples:
        raise CliError(
            f"--draws must be <= --eval-samples (the draws written come from those), got "
            f"{args.draws} > {args.eval_samples}"
        )
    flow_name = args.flow or ("realnvp" if not turnkey else auto_flow(target.dim)[0])
    flows.FLOWS.get(flow_name)  # an unknown name fails before any folder is made
    if args.objective is not None:
        get_loss(args.objective)
    options = _parse_options(args.option)
    out = Path(args.out) if args.out else _default_out(args.target, flow_name)
    made = [p for p in (out, *out.parents) if not p.exists()]  # what a failure must remove
    if distributed.is_main():
        try:
            runfiles.check_writable(out, "--out", create=True)
        except ValueError as err:
            raise CliError(str(err)) from None
    try:
        if turnkey:
            code = _fit_turnkey(args, target, out)
        else:
            code = _fit_plain(args, target, out, flow_name, options)
        distributed.barrier()  # every rank leaves together (rank 0 writes last)
        return code
    except BaseException:
        for folder in made:  # a failed run leaves no empty folder behind (runs/ included)
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _fit_plain(
    args: argparse.Namespace,
    target: targets.Target,
    out: Path,
    flow_name: str,
    options: dict[str, Any],
) -> int:
    steps = 3000 if args.steps is None else args.steps
    torch.manual_seed(args.seed)  # the flow's initial weights are random too
    q = flows.build(flow_name, target.dim, **options)
    history = fit(
        q,
        target,
        steps,
        num_samples=args.samples,
        lr=3e-3 if args.lr is None else args.lr,
        lr_schedule="cosine",
        stl=args.stl,
        seed=args.seed,
        progress=not args.quiet,
    )
    # The trained flow and its history are written before anything that could fail.
    if distributed.is_main():
        flows.save(q, out / "flow.pt")
        history.to_csv(out / "history.csv")  # atomic (runfiles)
    torch.manual_seed(distributed.rank_seed(args.seed + 1))
    diag = diagnose(q, target, n=args.eval_samples)
    if not distributed.is_main():
        return 0
    print(f"target {target.name} (dim {target.dim}), flow {flow_name}, {steps} steps")
    print(diag)
    _warn_if_unreliable(diag)
    meta = {
        "target": args.target,
        "dim": target.dim,
        "target_options": {} if args.dim is None else {"dim": args.dim},
        "flow": flow_name,
        "flow_options": options,
        "steps": steps,
        "seed": args.seed,
        "diagnostics": {**diag.__dict__, "kl": diag.kl},
    }
    runfiles.write_text(out / "run.json", runfiles.strict_json(meta, indent=2, default=str))
    figure = _figure(target, q, history, out)
    print(f"wrote {out / 'flow.pt'}, {out / 'history.csv'}, {out / 'run.json'}, {figure}")
    return 0


def _figure(target: targets.Target, q: flows.Flow, history: Any, out: Path) -> Path:
    from vi_flows.plots import plot_fit  # matplotlib only when a figure is written

    return plot_fit(target, q, history, out / "fit.png", title=target.name)


def _fit_turnkey(args: argparse.Namespace, target: targets.Target, out: Path) -> int:
    config = InferConfig(num_samples=args.samples, eval_samples=args.eval_samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the verdict is printed below instead
        result = infer(
            target,
            objective=args.objective or "kl",
            precondition=args.precondition or "auto",
            time_budget=args.time_budget,
            seed=args.seed,
            progress=not args.quiet,
            config=config,
        )
    if not distributed.is_main():
        return 0
    flows.save(result.flow, out / "flow.pt")
    result.history.to_csv(out / "history.csv")  # atomic (runfiles)
    torch.manual_seed(args.seed + 1)
    draws, log_w = result.weighted_draws
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow([f"theta[{i + 1}]" for i in range(target.dim)] + ["log_weight"])
    count = min(4000, args.eval_samples) if args.draws is None else args.draws
    rows = zip(draws[:count].tolist(), log_w[:count].tolist(), strict=True)
    for row, lw in rows:
        writer.writerow([f"{v:.8g}" for v in row] + [f"{lw:.8g}"])
    runfiles.write_text(out / "draws.csv", text.getvalue())
    print(result.summary())
    if result.verdict.startswith("UNRELIABLE"):
        print(f"vi-flows: warning: {result.verdict}", file=sys.stderr)
    diag = result.diagnostics
    meta = {
        "target": args.target,
        "dim": target.dim,
        "target_options": {}
        if args.dim is None or is_file_spec(args.target)
        else {"dim": args.dim},
        "flow": result.flow.config["name"],
        "flow_options": result.flow.config["options"],
        "steps": len(result.history),
        "seed": args.seed,
        "infer": {
            "objective": result.objective,
            "conditioning": result.precondition.detail,
            "stop": result.stop_reason,
            "seconds": result.seconds,
            "verdict": result.verdict,
        },
        "diagnostics": {**diag.__dict__, "kl": diag.kl},
    }
    runfiles.write_text(out / "run.json", runfiles.strict_json(meta, indent=2, default=str))
    figure = _figure(target, result.flow, result.history, out)
    names = ", ".join(str(out / n) for n in ("flow.pt", "history.csv", "draws.csv", "run.json"))
    print(f"wrote {names}, {figure}")
    return 0


def _load_flow(path: Path) -> flows.Flow:
    if not path.is_file():
        raise CliError(f"{path} not found (a folder written by 'vi-flows fit' holds flow.pt)")
    try:
        return flows.load(path)
    except runfiles.RunFileError as err:  # names the file and why (refused, truncated, ...)
        raise CliError(str(err)) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as err:
        raise CliError(
            f"{path} is not a readable vi-flows flow (truncated or corrupt: {type(err).__name__})"
        ) from None


def _show(args: argparse.Namespace) -> int:
    if args.eval_samples < 100:
        raise CliError(f"--eval-samples must be >= 100, got {args.eval_samples}")
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    meta_path = run / "run.json"
    if not meta_path.is_file():
        raise CliError(f"{meta_path} not found (is {run} a folder written by 'vi-flows fit'?)")
    try:
        meta = json.loads(meta_path.read_text())
        spec, options = meta["target"], meta["target_options"]
    except json.JSONDecodeError as err:
        raise CliError(f"{meta_path}: invalid JSON ({err.msg}, line {err.lineno})") from None
    except KeyError as err:
        raise CliError(f"{meta_path}: missing field {err.args[0]!r}") from None
    except TypeError:  # the file holds JSON, but not an object
        raise CliError(
            f"{meta_path}: expected a JSON object with 'target' and 'target_options'"
        ) from None
    if not isinstance(spec, str) or not isinstance(options, dict):
        raise CliError(
            f"{meta_path}: 'target' must be a string and 'target_options' an object, got "
            f"{type(spec).__name__} and {type(options).__name__}"
        )
    q = _load_flow(run / "flow.pt")
    print(f"reloaded {run / 'flow.pt'}: flow {meta.get('flow')} on {spec}")
    if is_file_spec(spec):
        # Re-evaluating the target would import the user's file: loading a run runs no code.
        print(f"target {spec} is not re-imported; diagnostics saved at fit time:")
        for key, value in meta.get("diagnostics", {}).items():
            print(f"  {key}: {value}")
        return 0
    target = targets.get(spec, **options)
    torch.manual_seed(args.seed)
    diag = diagnose(q, target, n=args.eval_samples)
    print(diag)
    _warn_if_unreliable(diag)
    return 0


def _warn_if_unreliable(diag: Diagnostics) -> None:
    """The plain loop's miss, said on stderr (infer's verdict has the same k̂ rule)."""
    if diag.k_hat > K_HAT_MAX:
        print(
            f"vi-flows: warning: UNRELIABLE: PSIS k-hat = {diag.k_hat:.2f} > {K_HAT_MAX:g}, "
            f"ESS/n = {diag.ess:.3f}: the flow misses mass of p; run 'vi-flows fit' without "
            "--flow and --steps (conditioning, a decaying step and a verdict), or fit longer",
            file=sys.stderr,
        )


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


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vi-flows", description=__doc__.split("\n")[0].replace("``", ""))
    parser.add_argument("--debug", action="store_true", help="show tracebacks of failures")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("fit", help="fit a flow to a target and write its diagnostics and figure")
    p.add_argument(
        "target",
        nargs="?",
        default="u1",
        help="target name, posteriordb:NAME or FILE.py:FUNCTION (default: u1)",
    )
    p.add_argument("--flow", default=None, help="flow family: the plain fit loop (default: infer)")
    p.add_argument("--dim", type=int, default=None, help="dimension (any-d targets, FILE.py:F)")
    p.add_argument("--steps", type=int, default=None, help="steps: the plain fit loop (3000)")
    p.add_argument("--samples", type=int, default=256, help="samples per step (default: 256)")
    p.add_argument("--lr", type=float, default=None, help="Adam step size, plain loop (3e-3)")
    p.add_argument("--stl", action="store_true", help="path-derivative (STL) gradient")
    p.add_argument("--objective", default=None, help="infer's loss: kl (default), stl, iw, ...")
    p.add_argument(
        "--precondition",
        default=None,
        choices=["auto", "laplace", "pilot", "none"],
        help="infer's whitening (default: auto)",
    )
    p.add_argument("--time-budget", type=float, default=None, help="seconds for infer")
    p.add_argument("--seed", type=int, default=0, help="torch seed (default: 0)")
    p.add_argument(
        "--eval-samples",
        type=int,
        default=100_000,
        help="draws for the diagnostics and verdict (default: 100000; infer's own is 16000)",
    )
    p.add_argument(
        "--draws", type=int, default=None, help="rows of draws.csv (infer; 4000, at most all)"
    )
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
    p.add_argument("--debug", action="store_true", help="show tracebacks of failures")
    p.set_defaults(func=_fit)

    p = sub.add_parser("show", help="reload a fitted flow and print its diagnostics")
    p.add_argument("run", help="a folder written by 'vi-flows fit'")
    p.add_argument(
        "--eval-samples", type=int, default=100_000, help="draws for the diagnostics (100000)"
    )
    p.add_argument("--seed", type=int, default=1, help="torch seed of the draws (default: 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of failures")
    p.set_defaults(func=_show)

    p = sub.add_parser("list", help="list the targets and flow families")
    p.set_defaults(func=_list)
    return parser


def closed_pipe_exit() -> int:
    """After a ``BrokenPipeError`` on stdout (``vi-flows list | head``): point stdout at
    /dev/null, so the flushes at exit go nowhere instead of failing again, and return 141, the
    status of a process killed by SIGPIPE (the shell's convention). No message: nothing went
    wrong."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured)
        pass
    return 141


#: Failures that are the input's fault, not a bug: one line, exit status 2.
_EXPECTED = (CliError, ValueError, TypeError, KeyError, OSError, NonFiniteError)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vi-flows`` command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        args = _parser().parse_args(argv)
        return args.func(args)
    except BrokenPipeError:  # the reader went away (vi-flows list | head): no error, no noise
        return closed_pipe_exit()
    except _EXPECTED as err:
        if debug:
            raise
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        message = " ".join(message.split()) or type(err).__name__
        print(f"vi-flows: error: {message}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()  # a no-op in one process


if __name__ == "__main__":
    sys.exit(main())
