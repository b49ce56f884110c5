"""Where a training cycle's time goes: PPO against V-PPO in one process, phase by phase.

``python -m benchmarks.rl --suite update-cost`` builds a PPO and a V-PPO run on the throughput
suite's shared work (:func:`benchmarks.rl.throughput_one.rl_config`: Pendulum-v1, 8 envs × 256
steps, 10 epochs of minibatch 256, the critic on the policy's minibatches) in one process and
trains both, alternating cycle by cycle (which of the two goes first alternates too), so that the
host's slow phases, which last seconds (README, "Training speed"), fall on both alike. Every
cycle is timed by phase:

* ``collect``: the rollout and its GAE batch;
* ``subset``: cutting the minibatches out of the batch (``Batch.minibatches``);
* ``gradients``: the minibatch's policy and critic gradients by the written-out chain rule
  (:func:`rl.written_out.clip_step`, the default for these runs), or on the autograd path
  (``hand_gradients=False``) the policy loss's forward (``Algorithm.loss``: flow, θ table, log π,
  surrogate);
* ``step``: gradient clipping and both Adam steps (``Algorithm.apply_gradients``), or on the
  autograd path the backward of the policy and critic losses with them (``Algorithm.joint_step``);
* ``dual``: auto α's dual step after every optimizer step (V-PPO only);
* ``diagnostics``: the end-of-update statistics (``Algorithm.diagnostics``);
* ``trainer row``: the trainer's per-update ``posterior_std``;
* ``update, rest``: the rest of ``update`` (the minibatch loop, per-epoch statistics).

Medians over the measured cycles, and the median over cycles of V-PPO's phase minus PPO's in
the same cycle pair. A second table counts, from one profiled update of each, the top-level
aten operators and the autograd nodes of the whole update divided by its minibatch steps
(amortised: the end-of-update diagnostics are spread over the steps): on CPU at these sizes a
step's time is mostly a fixed cost per kernel and per node, so the counts say where a
difference comes from. Writes ``update-cost.md`` and ``update-cost.csv`` under ``--out``.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.files import write_rows, write_text
from benchmarks.rl.throughput_one import N_ENVS, N_STEPS, SB3_EPOCHS, SB3_MINIBATCH, rl_config
from rl.algorithms import ppo as ppo_module
from rl.buffer import Batch
from rl.run import Run

__all__ = ["PHASES", "update_cost"]

#: The phases of a cycle, in the order of the table (module docstring).
PHASES = (
    "collect",
    "subset",
    "gradients",
    "step",
    "dual",
    "diagnostics",
    "trainer row",
    "update, rest",
)
#: The timed methods of an Algorithm and their phase.
_ALGO_PHASES = {
    "loss": "gradients",
    "joint_step": "step",
    "apply_gradients": "step",
    "dual_step": "dual",
    "diagnostics": "diagnostics",
}


class _Clock:
    """Seconds and calls per phase of the current cycle."""

    def __init__(self) -> None:
        self.spent: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def timed(self, fn: Callable, phase: str) -> Callable:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[phase] += time.perf_counter() - start
                self.calls[phase] += 1

        return run


@contextmanager
def _timed_subset(clocks: dict[int, _Clock]) -> Iterator[None]:
    """Each minibatch ``Batch.minibatches`` cuts out of the batch, timed into the clock of the
    run whose batch it is (keyed by the session table's identity: each run's batch carries its
    own)."""
    original = Batch.minibatches

    def minibatches(self: Batch, size: int, generator: torch.Generator) -> Iterator[Batch]:
        clock, cut = clocks.get(id(self.xi)), original(self, size, generator)
        while True:
            start = time.perf_counter()
            mb = next(cut, None)
            if clock is not None:
                clock.spent["subset"] += time.perf_counter() - start
            if mb is None:
                return
            yield mb

    Batch.minibatches = minibatches  # type: ignore[method-assign]
    try:
        yield
    finally:
        Batch.minibatches = original  # type: ignore[method-assign]


@contextmanager
def _timed_clip_step(clocks: dict[int, _Clock]) -> Iterator[None]:
    """The update's ``clip_step`` timed as "gradients" into the clock of the run whose policy it
    differentiates (keyed by the policy's identity)."""
    original = ppo_module.clip_step

    def clip_step(policy: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(policy, *args, **kwargs)
        finally:
            clocks[id(policy)].spent["gradients"] += time.perf_counter() - start

    ppo_module.clip_step = clip_step
    try:
        yield
    finally:
        ppo_module.clip_step = original


def _cycle(run: Run, clock: _Clock, clocks: dict[int, _Clock]) -> dict[str, float]:
    """One collect + update + trainer row of ``run``; milliseconds per phase."""
    clock.spent.clear()
    clock.calls.clear()
    start = time.perf_counter()
    batch, _ = run.collect()
    clock.spent["collect"] = time.perf_counter() - start
    clocks.clear()
    clocks[id(batch.xi)] = clock
    start = time.perf_counter()
    run.learn(batch)
    update = time.perf_counter() - start
    start = time.perf_counter()
    run.policy.posterior_std()
    clock.spent["trainer row"] = time.perf_counter() - start
    # each timed phase once (two methods time "step": joint_step and apply_gradients)
    inside = sum(clock.spent[p] for p in {"subset", *_ALGO_PHASES.values()})
    clock.spent["update, rest"] = update - inside
    return {p: 1e3 * clock.spent[p] for p in PHASES}


def _kernel_counts(run: Run, clock: _Clock) -> dict[str, float]:
    """Top-level aten operators and autograd nodes of one profiled update divided by its
    minibatch steps (an operator called by another aten operator is counted with its caller)."""
    from torch.profiler import ProfilerActivity, profile

    batch, _ = run.collect()
    clock.calls.clear()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run.learn(batch)
    steps = clock.calls["step"]  # the timed step wrappers count the update's steps
    ops = nodes = 0
    for event in prof.events():
        parent = event.cpu_parent
        if event.name.startswith("aten::") and (
            parent is None or not parent.name.startswith("aten::")
        ):
            ops += 1
        elif event.name.startswith("autograd::engine::evaluate_function"):
            nodes += 1
    return {"aten ops per step": ops / steps, "autograd nodes per step": nodes / steps}


def update_cost(
    root: Path, quick: bool, cycles: int | None = None, warmup: int | None = None
) -> list[dict[str, Any]]:
    """Time PPO's and V-PPO's cycles phase by phase (module docstring).

    Args:
        root: folder for ``update-cost.md`` and ``update-cost.csv``.
        quick: 4 measured cycles after 1 warm-up instead of 24 after 2.
        cycles, warmup: override those counts.

    Returns:
        The table's rows (milliseconds per phase; the counts per step in the last two).
    """
    torch.set_num_threads(1)
    cycles = cycles if cycles is not None else 4 if quick else 24
    warmup = warmup if warmup is not None else 1 if quick else 2
    env_id, algos = "Pendulum-v1", ("ppo", "vppo")
    steps = (cycles + warmup + 2) * N_ENVS * N_STEPS  # room for the profiled updates
    clock_of = {a: _Clock() for a in algos}
    clocks: dict[int, _Clock] = {}
    per_cycle: dict[str, list[dict[str, float]]] = {a: [] for a in algos}
    runs: dict[str, Run] = {}
    try:
        for a in algos:
            cfg = rl_config(env_id, a, steps, seed=0)
            # every optimizer step is one "step" (joint_step, or apply_gradients with the
            # critic's gradients) only while the critic rides along the policy's epochs and
            # minibatches, as rl_config sets it
            assert (cfg.value_epochs, cfg.value_minibatch_size) == (cfg.epochs, cfg.minibatch_size)
            runs[a] = Run(cfg)
            for name, phase in _ALGO_PHASES.items():
                setattr(runs[a].algo, name, clock_of[a].timed(getattr(runs[a].algo, name), phase))
        by_policy = {id(run.policy): clock_of[a] for a, run in runs.items()}
        with _timed_subset(clocks), _timed_clip_step(by_policy):
            for i in range(warmup + cycles):
                order = algos if i % 2 == 0 else algos[::-1]
                for a in order:
                    ms = _cycle(runs[a], clock_of[a], clocks)
                    if i >= warmup:
                        per_cycle[a].append(ms)
                print(f"update-cost: cycle {i + 1}/{warmup + cycles}", flush=True)
            counts = {a: _kernel_counts(run, clock_of[a]) for a, run in runs.items()}
    finally:
        for run in runs.values():
            run.envs.close()
    rows = []
    for phase in (*PHASES, "cycle"):
        values = {}
        for a in algos:
            if phase == "cycle":
                values[a] = np.array([sum(c.values()) for c in per_cycle[a]])
            else:
                values[a] = np.array([c[phase] for c in per_cycle[a]])
        rows.append(
            {
                "phase": phase,
                "ppo_ms": float(np.median(values["ppo"])),
                "vppo_ms": float(np.median(values["vppo"])),
                "paired_difference_ms": float(np.median(values["vppo"] - values["ppo"])),
                "cycles": cycles,
            }
        )
    for key in ("aten ops per step", "autograd nodes per step"):
        rows.append(
            {
                "phase": key,
                "ppo_ms": "",
                "vppo_ms": "",
                "paired_difference_ms": "",
                "cycles": "",
                "ppo_count": counts["ppo"][key],
                "vppo_count": counts["vppo"][key],
            }
        )
    write_rows(root / "update-cost.csv", rows)
    write_text(root / "update-cost.md", _markdown(rows, cycles))
    print(_markdown(rows, cycles))
    return rows


def _markdown(rows: list[dict[str, Any]], cycles: int) -> str:
    timed = [r for r in rows if r["cycles"] != ""]
    counted = [r for r in rows if r["cycles"] == ""]
    cycle = next(r for r in timed if r["phase"] == "cycle")
    lines = [
        f"Milliseconds per training cycle (one rollout of {N_ENVS} envs × {N_STEPS} steps and "
        f"one update: {SB3_EPOCHS} epochs of minibatch {SB3_MINIBATCH}, the critic on the "
        "policy's minibatches), PPO and V-PPO (auto α, gaussian posterior) on Pendulum-v1, "
        f"trained side by side in one process and alternating cycle by cycle; medians over "
        f"{cycles} cycles, and the median over cycles of V-PPO's phase minus PPO's in the same "
        "cycle pair (1 torch thread; `python -m benchmarks.rl --suite update-cost`; phases in "
        "benchmarks/rl/update_cost.py).",
        "",
        "| phase | PPO | V-PPO | V-PPO − PPO (paired) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['phase']} | {r['ppo_ms']:.1f} | {r['vppo_ms']:.1f} | "
        f"{r['paired_difference_ms']:+.1f} |"
        for r in timed
    ]
    lines += [
        "",
        f"V-PPO's cycle takes {cycle['vppo_ms'] / cycle['ppo_ms']:.2f}× PPO's (ratio of "
        "medians). Per minibatch step, amortised over one profiled update (its operators and "
        "nodes, the end-of-update diagnostics' included, divided by its steps; top-level aten "
        "operators: those not called by another aten operator):",
        "",
        "| count | PPO | V-PPO |",
        "|---|---|---|",
    ]
    lines += [f"| {r['phase']} | {r['ppo_count']:.1f} | {r['vppo_count']:.1f} |" for r in counted]
    return "\n".join(lines) + "\n"
