"""The minibatch step through autograd against the same step written out (:mod:`rl.written_out`).

``python -m benchmarks.rl --suite step-floor`` builds a PPO and a V-PPO run on the throughput
suite's shared work (:func:`benchmarks.rl.throughput_one.rl_config`: Pendulum-v1, 64-64 tanh
networks, minibatch 256, the critic on the policy's minibatches), collects one batch each and
times, on that batch's first minibatch and alternating, the two ways the library can take one
minibatch step:

* ``autograd``: the adapter's target through ``vi_flows.objectives.kl_loss``
  (``Algorithm.loss``) and ``Algorithm.joint_step`` (one backward of the policy and value losses,
  clipping, both Adam steps): what ``hand_gradients=False`` runs, and every configuration
  :mod:`rl.written_out` does not cover;
* ``written out``: :func:`rl.written_out.clip_step` (the same loss's gradients by the chain rule
  written out, no autograd) and ``Algorithm.apply_gradients`` (the same clipping and Adam steps):
  the default where it applies.

Both step the same run's parameters, in turn. After timing (the parameters by then hundreds of
steps from the rollout's, so ratios leave the clip range) the two paths' gradients are compared
(the largest relative difference is in the table). ``written out (V-PPO)`` over ``written out
(PPO)`` is the per-session work the method itself adds: K weight vectors instead of one, an MLP
per session on padded groups, and the (K, d) gradient table through the flow. Writes
``step-floor.md`` and ``step-floor.csv`` under ``--out``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks.files import write_rows, write_text
from benchmarks.rl.throughput_one import rl_config
from rl.adapter import clipped_objective
from rl.buffer import Batch
from rl.run import Run
from rl.value import value_loss
from rl.written_out import clip_step, policy_parameters, unsupported

__all__ = ["step_floor"]


def _autograd_gradients(run: Run, mb: Batch, alpha: float) -> list[Tensor]:
    """Autograd's gradients of the policy and value losses, in ``clip_step``'s order."""
    algo, clip = run.algo, run.cfg.clip_coef
    params = policy_parameters(run.policy) + list(run.critic.parameters())
    loss = algo.loss(mb, clipped_objective(mb.logp, mb.advantages, clip), alpha)
    return list(torch.autograd.grad(loss + value_loss(run.critic, mb.obs, mb.returns), params))


def _median_us(fn: Callable[[], Any], reps: int) -> float:
    """Median wall time of ``reps`` calls of ``fn``, in microseconds."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def step_floor(root: Path, quick: bool, reps: int | None = None) -> list[dict[str, Any]]:
    """Time the autograd and the written-out minibatch step of PPO and V-PPO (module
    docstring).

    Args:
        root: folder for ``step-floor.md`` and ``step-floor.csv``.
        quick: 20 alternating repetitions of each step instead of 400.
        reps: override that count.

    Returns:
        The table's rows, PPO's then V-PPO's.
    """
    torch.set_num_threads(1)
    reps = reps if reps is not None else 20 if quick else 400
    rows = [_measure(name, reps) for name in ("ppo", "vppo")]
    _write(root, rows, reps)
    return rows


def _measure(algo_name: str, reps: int) -> dict[str, Any]:
    """One row of the table: ``algo_name``'s two minibatch steps on one minibatch."""
    run = Run(rl_config("Pendulum-v1", algo_name, 10**6, seed=0))
    try:
        why = unsupported(run.policy, run.critic, run.cfg.objective, run.cfg.rpo_alpha)
        if why:
            raise ValueError(f"step-floor: rl.written_out does not cover this run: {why}")
        batch, _ = run.collect()
    finally:
        run.envs.close()
    cfg, algo = run.cfg, run.algo
    mb = next(iter(batch.minibatches(cfg.minibatch_size, torch.Generator())))
    alpha = run.temperature(0) if run.policy.has_kl_term else 1.0

    # listed once, as PPO does (rl.algorithms.ppo)
    policy_params, critic_params = policy_parameters(run.policy), list(run.critic.parameters())

    def written_out() -> None:
        step = clip_step(run.policy, run.critic, mb, alpha, cfg.clip_coef, True, critic_params)
        algo.apply_gradients(*step.pairs(policy_params, critic_params))

    def autograd() -> None:
        objective = clipped_objective(mb.logp, mb.advantages, cfg.clip_coef)
        algo.joint_step(algo.loss(mb, objective, alpha), mb)

    for fn in (autograd, written_out, autograd, written_out):  # warm-up
        _median_us(fn, max(2, reps // 20))
    times: dict[Callable, list[float]] = {autograd: [], written_out: []}
    for i in range(reps):
        for fn in (autograd, written_out) if i % 2 else (written_out, autograd):
            times[fn].append(_median_us(fn, 1))
    auto_us, hand_us = statistics.median(times[autograd]), statistics.median(times[written_out])
    step = clip_step(run.policy, run.critic, mb, alpha, cfg.clip_coef)
    error = max(
        float((a - b).norm() / b.norm().clamp_min(1e-12))
        for a, b in zip(
            step.policy_grads + step.critic_grads, _autograd_gradients(run, mb, alpha), strict=True
        )
    )
    return {
        "method": algo_name,
        "sessions K": int(mb.xi.shape[0]) if run.policy.random_theta else 1,
        "autograd us/step": round(auto_us, 1),
        "written out us/step": round(hand_us, 1),
        "autograd / written out": round(auto_us / hand_us, 2),
        "max rel. grad difference": f"{error:.1e}",
    }


def _write(root: Path, rows: list[dict[str, Any]], reps: int) -> None:
    write_rows(root / "step-floor.csv", rows)
    head = list(rows[0])
    by_method = {r["method"]: r for r in rows}

    def ratio(column: str) -> float:
        return by_method["vppo"][column] / by_method["ppo"][column]

    lines = [
        "Microseconds per minibatch step (policy loss + value loss, one backward or the written-"
        "out gradients, clipping, both fused Adam steps) on one Pendulum-v1 minibatch of 256 from "
        "the throughput work (64-64 tanh, the critic on the policy's minibatch), through autograd "
        f"and through rl.written_out; medians of {reps} alternating repetitions (1 torch "
        "thread; `python -m benchmarks.rl --suite step-floor`; benchmarks/rl/step_floor.py).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows),
        "",
        f"V-PPO over PPO: autograd {ratio('autograd us/step'):.2f}×, written out "
        f"{ratio('written out us/step'):.2f}× (the per-session work itself).",
    ]
    text = "\n".join(lines) + "\n"
    write_text(root / "step-floor.md", text)
    print(text, flush=True)
