"""How far a minibatch step is from its own arithmetic: PPO's and V-PPO's step against the same
math written out by hand.

``python -m benchmarks.rl --suite step-floor`` builds a PPO and a V-PPO run on the throughput
suite's shared work (:func:`benchmarks.rl.throughput_one.rl_config`: Pendulum-v1, 64-64 tanh
networks, minibatch 256, the critic on the policy's minibatches), collects one batch each and
times, on that batch's first minibatch and alternating, two versions of one minibatch step:

* ``library``: what the update runs per minibatch, ``Algorithm.loss`` (the adapter's target
  through ``vi_flows.objectives.kl_loss``) and ``Algorithm.joint_step`` (one backward of the
  policy and value losses, clipping, both Adam steps);
* ``by hand``: the same loss's gradients written out with no autograd (the policy MLP per
  session over the same padded layout, its backward the networks' own written-out chain rule
  ``FlatMLP.backprop`` / ``linear_stack_backprop``, log π, the clipped surrogate, Eq. 4's
  gradient of α·KL(q‖p) for q = N(μ, diag softplus(ρ)²), the critic's MSE), then the same
  clipping and fused Adam kernels. The gradients are taken at the library run's parameters
  (which its interleaved steps keep moving) and applied to copies with their own Adam states,
  so the two never disturb each other: the same work per call, for timing. After timing (the
  parameters by then hundreds of steps from the rollout's, so ratios leave the clip range),
  its gradients are checked against the library's backward on the library's loss (the largest
  relative difference is in the table): a floor of the same work, not a cheaper one.

Its per-step time is a floor for any implementation at these sizes on this CPU: the kernels the
math needs and nothing else. ``by hand (V-PPO)`` over ``by hand (PPO)`` is the per-session work
the method itself adds: K weight vectors instead of one, an MLP per session on padded groups,
and the (K, d) gradient table through the flow. Supported: a BNN policy with a Box action head,
``clip`` objective, no RPO, a ``gaussian`` posterior or the point mass (the throughput
work). Writes ``step-floor.md`` and ``step-floor.csv`` under ``--out``.
"""

from __future__ import annotations

import math
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
from rl.networks import MLP, linear_stack, linear_stack_backprop
from rl.optim import clip_grad_norm, optimizer_step
from rl.policies import BNNPolicy, group_layout
from rl.posteriors import PointMass
from rl.run import Run
from rl.value import value_loss
from vi_flows.flows import Flow
from vi_flows.transforms import ElementwiseAffine

__all__ = ["hand_gradients", "step_floor"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _policy_params(run: Run) -> list[Tensor]:
    """The policy's parameters in :func:`hand_gradients`' order: μ (and ρ) of q, then log σ_a."""
    q = run.policy.q
    if isinstance(q, PointMass):
        return [q.loc, run.policy.head.log_std]
    return [q.transform.loc, q.transform.raw_scale, run.policy.head.log_std]


def _check_supported(run: Run) -> None:
    """Raise ``ValueError`` unless :func:`hand_gradients` writes out ``run``'s loss: a BNN
    policy with a learned-σ Box head and a gaussian or point posterior, the
    clip objective without RPO, a gradient-norm limit."""
    policy, cfg = run.policy, run.cfg
    q = policy.q if isinstance(policy, BNNPolicy) else None
    affine = isinstance(q, Flow) and isinstance(q.transform, ElementwiseAffine)
    if not (type(q) is PointMass or affine) or policy.head.discrete:
        raise ValueError(
            "step-floor: a BNN policy with a Box head and a gaussian or point posterior"
        )
    if not isinstance(policy.head.log_std, torch.nn.Parameter):
        raise ValueError("step-floor: a learned action log-std (learn_log_std=True)")
    if cfg.objective != "clip" or cfg.rpo_alpha:
        raise ValueError("step-floor: the clip objective without RPO")
    if cfg.max_grad_norm <= 0:
        raise ValueError("step-floor: a gradient-norm limit (max_grad_norm > 0)")


def hand_gradients(run: Run, mb: Batch, alpha: float, clip: float) -> list[Tensor]:
    """Gradients of the library's minibatch loss, policy loss + value MSE, written out.

    Policy loss: α·mean_k[log q(θ_k)] − (1/M) Σ_i s_i with the network's weights θ₀ + θ_k,
    θ_k = μ + σ ⊙ ξ_k, σ = softplus(ρ), log q(θ_k) = log q₀(ξ_k) − Σ_j log σ_j (the point mass:
    θ = μ and no KL term); s_i = min(r_i Â_i, clip(r_i, 1 ± ε) Â_i), r_i = π/π_old, of
    log π(a_i|s_i) = −Σ(½ z² + log σ_a + ½ log 2π), z = (a − m(s_i; θ₀ + θ_k))/σ_a. Then

    .. math:: \\frac{∂s_i}{∂\\log π} = r_i Â_i [\\text{unclipped}], \\quad
        \\frac{∂\\log π}{∂m} = z/σ_a, \\quad \\frac{∂\\log π}{∂\\log σ_a} = z^2 − 1,

    .. math:: \\bar θ_k = −\\tfrac1M \\textstyle\\sum_{i: k(i) = k} ∂s_i/∂θ_k, \\quad
        \\bar μ = \\sum_k \\bar θ_k, \\quad
        \\bar ρ = \\mathrm{softplus}'(ρ) ⊙ \\big(\\sum_k \\bar θ_k ⊙ ξ_k − α/σ\\big),

    the MLP's chain rule per session on the padded groups (:meth:`rl.networks.FlatMLP.backprop`,
    the library's own backward), and the critic's for mean (V(s) − R̂)², ∂/∂V = 2(V − R̂)/M,
    through its layers (:func:`rl.networks.linear_stack_backprop`).

    Args:
        run: a run :func:`_check_supported` accepts; its current parameters are used.
        mb: one minibatch of its batch (``Batch.minibatches``).
        alpha: the temperature α (1 and unused for the point mass).
        clip: PPO's clip ε.

    Returns:
        The gradients of ``_policy_params(run)`` and then of the critic's parameters.
    """
    policy, net = run.policy, run.policy.net
    point = isinstance(policy.q, PointMass)
    m = mb.obs.shape[0]
    log_std = policy.head.log_std.detach()
    if point:  # one θ for every sample: no grouping (as the library)
        theta, padded = policy.q.loc.detach()[None], mb.obs[None]
    else:
        t = policy.q.transform
        scale = torch.nn.functional.softplus(t.raw_scale.detach())
        theta = torch.addcmul(t.loc.detach(), scale, mb.xi)
        rows = mb.session
        pos, largest = group_layout(rows, theta.shape[0])
        padded = mb.obs.new_zeros(theta.shape[0], largest, mb.obs.shape[-1])
        padded[rows, pos] = mb.obs
    # the policy's forward per session (no gradient recorded), keeping each layer's input
    layers, hidden = net.layers(policy.theta0 + theta), []
    h = net.apply(layers, padded, keep=hidden)
    inputs = [padded, *hidden]
    mean = h[0] if point else h[rows, pos]
    inv_std = torch.exp(-log_std)
    z = (mb.actions - mean) * inv_std
    logp = -(0.5 * z.square() + log_std + _HALF_LOG_2PI).sum(-1)
    ratio = torch.exp(logp - mb.logp)
    keep = ratio * mb.advantages <= ratio.clamp(1.0 - clip, 1.0 + clip) * mb.advantages
    grad_logp = torch.where(keep, ratio * mb.advantages, 0.0).mul_(-1.0 / m)
    grad_mean = grad_logp[:, None] * z * inv_std
    grad_log_std = (grad_logp[:, None] * (z.square() - 1.0)).sum(0)
    if point:
        delta = grad_mean[None]
    else:
        delta = padded.new_zeros(theta.shape[0], largest, mean.shape[-1])
        delta[rows, pos] = grad_mean
    grad_theta, _ = net.backprop(layers, inputs, delta)
    if point:
        grads = [grad_theta[0], grad_log_std]
    else:
        grad_scale = (grad_theta * mb.xi).sum(0).sub_(alpha / scale)
        grad_raw = torch.ops.aten.softplus_backward(grad_scale, t.raw_scale.detach(), 1.0, 20.0)
        grads = [grad_theta.sum(0), grad_raw, grad_log_std]
    return grads + _critic_gradients(run.critic, mb.obs, mb.returns)


def _critic_gradients(critic: MLP, obs: Tensor, returns: Tensor) -> list[Tensor]:
    """Gradients of mean (V(s) − R̂)² for the critic's Linear weights and biases, in order."""
    params = [
        p.detach()
        for layer in critic
        if isinstance(layer, torch.nn.Linear)
        for p in (layer.weight, layer.bias)
    ]
    hidden: list[Tensor] = []
    value = linear_stack(obs, params, critic.activation, keep=hidden)
    delta = (value.squeeze(-1) - returns).mul_(2.0 / obs.shape[0]).unsqueeze(-1)
    return linear_stack_backprop(params, [obs, *hidden], delta, critic.activation)[1]


def _library_gradients(run: Run, mb: Batch, alpha: float, clip: float) -> list[Tensor]:
    """What the library's backward gives for :func:`hand_gradients`' loss and parameters."""
    algo = run.algo
    params = _policy_params(run) + list(run.critic.parameters())
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
    """Time the library's and the hand-written minibatch step of PPO and V-PPO (module
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
    """One row of the table: ``algo_name``'s library and hand-written step on one minibatch."""
    run = Run(rl_config("Pendulum-v1", algo_name, 10**6, seed=0))
    try:
        _check_supported(run)
        batch, _ = run.collect()
    finally:
        run.envs.close()
    cfg, algo = run.cfg, run.algo
    mb = next(iter(batch.minibatches(cfg.minibatch_size, torch.Generator())))
    alpha = run.temperature(0) if run.policy.has_kl_term else 1.0
    # the hand step's own parameters and Adam states, so the library's are left alone
    copies = (
        [p.detach().clone() for p in _policy_params(run)],
        [p.detach().clone() for p in run.critic.parameters()],
    )
    opts = [
        torch.optim.Adam(copies[0], lr=cfg.lr, eps=1e-5, fused=True),
        torch.optim.Adam(copies[1], lr=cfg.value_lr, fused=True),
    ]
    for opt in opts:  # a first step makes the states (optimizer_step's fast path)
        for p in opt.param_groups[0]["params"]:
            p.grad = torch.zeros_like(p)
        opt.step()

    def by_hand() -> None:
        grads = hand_gradients(run, mb, alpha, cfg.clip_coef)
        for p, g in zip(copies[0] + copies[1], grads, strict=True):
            p.grad = g
        for opt, params in zip(opts, copies, strict=True):
            clip_grad_norm(params, cfg.max_grad_norm)
            optimizer_step(opt)

    def library() -> None:
        objective = clipped_objective(mb.logp, mb.advantages, cfg.clip_coef)
        algo.joint_step(algo.loss(mb, objective, alpha), mb)

    for fn in (library, by_hand, library, by_hand):  # warm-up
        _median_us(fn, max(2, reps // 20))
    times: dict[Callable, list[float]] = {library: [], by_hand: []}
    for i in range(reps):
        for fn in (library, by_hand) if i % 2 else (by_hand, library):
            times[fn].append(_median_us(fn, 1))
    lib_us, hand_us = statistics.median(times[library]), statistics.median(times[by_hand])
    # the check, at parameters the timed library steps have moved off the rollout's
    hand = hand_gradients(run, mb, alpha, cfg.clip_coef)
    library_grads = _library_gradients(run, mb, alpha, cfg.clip_coef)
    error = max(
        float((a - b).norm() / b.norm().clamp_min(1e-12))
        for a, b in zip(hand, library_grads, strict=True)
    )
    return {
        "method": algo_name,
        "sessions K": int(mb.xi.shape[0]) if run.policy.random_theta else 1,
        "library us/step": round(lib_us, 1),
        "by hand us/step": round(hand_us, 1),
        "library / by hand": round(lib_us / hand_us, 2),
        "max rel. grad difference": f"{error:.1e}",
    }


def _write(root: Path, rows: list[dict[str, Any]], reps: int) -> None:
    write_rows(root / "step-floor.csv", rows)
    head = list(rows[0])
    by_method = {r["method"]: r for r in rows}

    def ratio(column: str) -> float:
        return by_method["vppo"][column] / by_method["ppo"][column]

    lines = [
        "Microseconds per minibatch step (policy loss + value loss, one backward or its written-"
        "out "
        "gradients, clipping, both fused Adam steps) on one Pendulum-v1 minibatch of 256 from the "
        "throughput work (64-64 tanh, the critic on the policy's minibatch), the library's step "
        f"against the same math by hand; medians of {reps} alternating repetitions (1 torch "
        "thread; `python -m benchmarks.rl --suite step-floor`; benchmarks/rl/step_floor.py).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows),
        "",
        f"V-PPO over PPO: library {ratio('library us/step'):.2f}×, by hand "
        f"{ratio('by hand us/step'):.2f}× (the per-session work itself).",
    ]
    text = "\n".join(lines) + "\n"
    write_text(root / "step-floor.md", text)
    print(text, flush=True)
