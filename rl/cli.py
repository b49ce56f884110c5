"""``vi-rl``: train, evaluate and plot variational policy-gradient runs.

Examples::

    vi-rl train --env CartPole-v1 --algo vppo --posterior lowrank-gaussian --steps 50000 \\
        --seed 0 --out runs/vppo-s0 --set lr=1e-3 --alpha 1e-3
    vi-rl train --out runs/vppo-s0 --resume --steps 100000
    vi-rl train --env Pendulum-v1 --algo ppo --steps 100000 --out runs/ppo-pend  # its preset
    vi-rl train --env Pendulum-v1 --algo ppo --no-preset --steps 100000 --out runs/ppo-defaults
    vi-rl eval runs/vppo-s0
    vi-rl plot runs/vppo-s* --output curves.png
    vi-rl config vtrpo            # every field with its documentation and default

A known environment (rl/presets/*.yaml) gets its preset unless ``--no-preset``; ``config.json``
records it in the ``preset`` field ("" for none) and ``train`` prints one line on stderr saying
which applied (after the first update, so a run that fails to start prints only its error).

Expected failures (bad options, unknown names, missing or corrupt run files) print one line on
stderr and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rl.algorithms import ALGORITHMS, default_config
from rl.config import field_docs, with_overrides
from rl.presets import env_ids, env_preset
from vi_flows import distributed
from vi_flows.cli import closed_pipe_exit
from vi_flows.runfiles import strict_json

__all__ = ["main"]


def _overrides(pairs: list[str], extra: list[str]) -> dict[str, str]:
    """``--set k=v`` pairs and free ``--k v`` / ``--k=v`` options as a dict of strings."""
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects name=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key] = value
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--"):
            raise ValueError(f"unexpected argument {token!r}")
        if "=" in token:
            key, value = token[2:].split("=", 1)
            i += 1
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            key, value = token[2:], extra[i + 1]
            i += 2
        else:
            key, value = token[2:], "true"
            i += 1
        out[key] = value
    return out


def _train(args: argparse.Namespace, extra: list[str]) -> int:
    from rl.run import saved_config
    from rl.trainer import train

    distributed.init()  # torchrun's environment: several ranks, no new flags; else a no-op
    out = Path(args.out)
    overrides = _overrides(args.set or [], extra)
    fields = {"env_id": args.env, "seed": args.seed, "total_steps": args.steps}
    fields = {k: v for k, v in fields.items() if v is not None}
    if args.posterior is not None:
        fields["posterior"] = args.posterior
    if args.preset and args.no_preset:
        raise ValueError("--preset and --no-preset exclude each other (presets apply by default)")
    if "preset" in overrides:
        raise ValueError("the preset field is set by vi-rl itself; use --no-preset to skip it")
    if "algo" in overrides:
        raise ValueError("the algorithm is chosen with --algo (its config class goes with it)")
    if args.resume:
        if args.overwrite:
            raise ValueError("--resume and --overwrite exclude each other")
        if not (out / "checkpoint.pt").exists():
            raise ValueError(
                f"--resume: {out} has no checkpoint.pt (nothing to resume); --overwrite starts "
                "the run again there"
            )
        saved = saved_config(out)
        if args.algo is not None and args.algo != saved.algo:
            raise ValueError(
                f"--resume keeps the saved config: --algo {args.algo} differs from the saved "
                f"{saved.algo!r} (use a new --out)"
            )
        preset = env_preset(fields.get("env_id", saved.env_id), saved.algo) if args.preset else {}
        # train() refuses (naming them) any of these that changes a non-resumable field.
        cfg = with_overrides(saved, {**preset, **fields, **overrides})
        announce = None  # the saved config.json already records its preset
    else:
        algo = args.algo or "vppo"
        fields.setdefault("env_id", "Pendulum-v1")
        preset = {} if args.no_preset else env_preset(fields["env_id"], algo)
        if preset:
            fields["preset"] = fields["env_id"]
        cfg = with_overrides(default_config(algo), {**preset, **fields, **overrides})
        if preset:
            lines = [_preset_line(fields["env_id"], algo, preset)]
        elif args.no_preset:
            lines = []
        else:  # a miss is reported: the class defaults are untuned for this env
            known = [e for e in env_ids() if env_preset(e, algo)]
            lines = [
                f"vi-rl: no preset for {fields['env_id']} and {algo} ({algo} presets: "
                f"{', '.join(known) or 'none'}); the class defaults apply (vi-rl config {algo})"
            ]
        announce = _once(lines) if distributed.is_main() else None
    ended = []  # episodes that ended in each update of this invocation

    def callback(run, row) -> None:
        ended.append(row.get("episodes", 0))
        if announce is not None:
            announce(run, row)

    row = train(
        cfg,
        out,
        resume=args.resume,
        progress=not args.quiet,
        overwrite=args.overwrite,
        callback=callback,
    )
    if distributed.is_main():
        if ended and not any(ended):  # returns are unknown, not zero: say why
            tqdm.write(
                f"vi-rl: warning: no episode ended during this run ({len(ended)} updates), so no "
                "return was measured (null); an environment without a time limit needs one "
                "(gymnasium.wrappers.TimeLimit, or max_episode_steps when registering it)",
                file=sys.stderr,
            )
        print(strict_json(row))
    distributed.barrier()  # every rank leaves together (rank 0 writes last)
    return 0


def _once(lines: list[str]):
    """A train() callback that prints ``lines`` after the first update (and, when the run
    calibrated σ*, the line saying so): a run that fails to start prints its one error line
    only."""
    said = []

    def callback(run, row) -> None:
        if not said:
            extra = [_calibration_line(run.cfg)] if run.calibrated else []
            if run.policy.head.rescaled:
                extra.append(
                    f"vi-rl: Box actions are mapped from [-1, 1] onto the env's bounds "
                    f"({run.policy.head.rescaled}; --set action_rescale=off keeps the env's "
                    "units)"
                )
            for line in [*lines, *extra]:
                tqdm.write(line, file=sys.stderr)
            said.append(True)

    return callback


def _calibration_line(cfg) -> str:
    """The one line that says which σ* the run calibrated (rl.calibration)."""
    return (
        f"vi-rl: calibrated posterior_std_target = {cfg.posterior_std_target:.3g} (the initial "
        f"posterior moves the policy by policy_spread_target = {cfg.policy_spread_target:g}; "
        "--set posterior_std_target=X fixes it)"
    )


def _preset_line(env_id: str, algo: str, preset: dict) -> str:
    """The one line that says which preset a fresh run starts from."""
    return (
        f"vi-rl: applied the {env_id} preset for {algo} ({', '.join(sorted(preset))}; "
        "--set overrides them, --no-preset skips them)"
    )


def _eval(args: argparse.Namespace) -> int:
    from rl.evaluate import evaluate

    result = evaluate(args.run, episodes=args.episodes, stochastic_actions=args.stochastic)
    print(strict_json(result, indent=2))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from rl.plot import plot

    print(plot(args.runs, args.output))
    return 0


def _config(args: argparse.Namespace) -> int:
    cfg = default_config(args.algo)
    docs = field_docs(type(cfg))
    for field in dataclasses.fields(cfg):
        print(f"{field.name} = {getattr(cfg, field.name)!r}\n    {docs.get(field.name, '')}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (its usage block would make it several)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vi-rl", description=__doc__.split("\n")[0])
    p.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    common = _Parser(add_help=False)
    # SUPPRESS: a subcommand without --debug keeps the top-level value.
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser(
        "train", parents=[common], help="train (or --resume) a run; extra --field value overrides"
    )
    t.add_argument(
        "--env", default=None, help="gymnasium env id or module:Env-v0 (default Pendulum-v1)"
    )
    t.add_argument("--algo", default=None, choices=sorted(ALGORITHMS), help="default vppo")
    t.add_argument("--posterior", default=None, help="vi_flows family (v-algorithms)")
    t.add_argument("--steps", type=int, default=None, help="total env steps")
    t.add_argument("--seed", type=int, default=None, help="default 0")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--set", action="append", metavar="FIELD=VALUE", help="config override")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out; only --steps and --set checkpoint_every/target_return/"
        "tensorboard may change (other changed flags are refused)",
    )
    t.add_argument(
        "--overwrite", action="store_true", help="replace the run already in --out (else refused)"
    )
    t.add_argument(
        "--preset",
        action="store_true",
        help="apply the recommended settings for --env (rl/presets/*.yaml) before --set: the "
        "default for a fresh run (kept for old command lines); on --resume, re-apply them",
    )
    t.add_argument(
        "--no-preset",
        action="store_true",
        help="start from the algorithm's class defaults, not the preset of --env",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    e = sub.add_parser(
        "eval", parents=[common], help="evaluate a run (posterior mean and sampled θ)"
    )
    e.add_argument("run")
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--stochastic", action="store_true", help="sample actions instead of the mode")
    pl = sub.add_parser(
        "plot", parents=[common], help="learning curves of runs (mean ± std over seeds)"
    )
    pl.add_argument("runs", nargs="+")
    pl.add_argument("--output", default="curves.png")
    c = sub.add_parser(
        "config", parents=[common], help="list an algorithm's config fields and their docs"
    )
    c.add_argument("algo", choices=sorted(ALGORITHMS))
    return p


#: Failures that are the input's fault: one line and exit 2 (OSError covers missing, unreadable
#: or unwritable paths; KeyError an unknown flow family; RunFileError is a ValueError).
EXPECTED = (ValueError, KeyError, FloatingPointError, OSError)


def _one_line(err: BaseException) -> str:
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return " ".join(str(text).split()) or type(err).__name__


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a scheduler), handled as Ctrl-C is: a run stopped before
    its first checkpoint removes its files, and the exit status is 128 + 15."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vi-rl`` console script."""
    torch.set_num_threads(1)
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    finally:  # the caller's handler back, also after an argument error (argparse's SystemExit)
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _main(argv: list[str] | None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    if extra and args.command != "train":
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "train":
            return _train(args, extra)
        return {"eval": _eval, "plot": _plot, "config": _config}[args.command](args)
    except BrokenPipeError:  # the reader went away (vi-rl config ppo | head): no noise
        return closed_pipe_exit()
    except EXPECTED as err:
        if args.debug:
            raise
        print(f"vi-rl: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        if args.debug:
            raise
        said = ""
        if args.command == "train":  # a run interrupted before its first checkpoint has none
            if (Path(args.out) / "checkpoint.pt").exists():
                said = " (the last checkpoint is intact; --resume continues)"
            else:
                said = " before the first checkpoint: nothing to resume"
        how = "terminated" if isinstance(stop, Terminated) else "interrupted"
        print(f"vi-rl: {how}{said}", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    finally:
        distributed.shutdown()  # a no-op in one process


if __name__ == "__main__":
    sys.exit(main())
