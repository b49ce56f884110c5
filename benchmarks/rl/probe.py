"""One exploratory run of rl/ with the benchmark's evaluation and its α / σ̄ trace printed.

``python -m benchmarks.rl.probe ENV ALGO STEPS SEED [field=value ...]`` trains ``ALGO`` on
``ENV`` with its preset (rl/presets) and the fields given (JSON values), evaluates as the suites
do (4 evaluations, 10 episodes, posterior mean and θ ~ q) and prints one line of final returns and
one of α, the posterior's σ̄ (``entropy_std``), the training return and the grad norm at nine
updates. Used for the σ* measurements behind ``posterior_std_target``'s default
(benchmarks/results/rl-autoalpha/README.md). Runs go to ``/tmp/bench/rl-probe``.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path

import torch

from benchmarks.rl.runners import run_ours
from benchmarks.rl.suites import Task, ours
from rl.presets import env_preset


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    env, algo, steps, seed = argv[0], argv[1], int(argv[2]), int(argv[3])
    params = dict(env_preset(env, algo))
    for item in argv[4:]:
        key, _, text = item.partition("=")
        params[key] = _value(text)
    task = Task(env, steps, 1, (), episodes=10, evals=4)
    name = "_".join([env, algo, str(seed), *argv[4:]]).replace("/", "-")
    out = Path("/tmp/bench/rl-probe") / name
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = run_ours(task, ours("probe", algo, **params), seed, out)
    with (out / "progress.csv").open() as f:
        rows = list(csv.DictReader(f))
    trace = []
    for r in rows[:: max(1, len(rows) // 8)] + rows[-1:]:
        std = float(r["entropy_std"] or "nan")
        trace.append(
            f"u{r['update']} a={float(r['alpha']):.2g} s={std:.3g} "
            f"R={float(r['return_mean']):.0f} gn={float(r['grad_norm']):.2g}"
        )
    final = result["evals"][-1]
    sampled = round(final[2]) if not math.isnan(final[2]) else None
    evals = [round(e[1]) for e in result["evals"]]
    seconds = time.perf_counter() - start
    print(" ".join(argv), "| evals", evals, "sampled", sampled, f"| {seconds:.0f}s")
    print("   ", " | ".join(trace), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
