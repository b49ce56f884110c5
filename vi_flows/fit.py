"""``fit``: minimize KL(q‖p) over a flow's parameters by stochastic gradient descent."""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from vi_flows import distributed, runfiles
from vi_flows.flows import Flow
from vi_flows.losses import STL, Loss, get_loss
from vi_flows.objectives import as_log_prob
from vi_flows.schedules import Schedule, as_schedule

__all__ = ["fit", "History", "NonFiniteError"]


class NonFiniteError(FloatingPointError):
    """The target's log-density or its gradient was NaN or infinite at some samples."""


@dataclass
class History:
    """Per-step record of a fit (one entry per completed or skipped step)."""

    step: list[int] = field(default_factory=list)
    """Step index (0-based)."""
    loss: list[float] = field(default_factory=list)
    """The minimized estimate E[log q − β log p̃] (NaN for skipped steps)."""
    elbo: list[float] = field(default_factory=list)
    """E[log p̃ − log q] at β = 1; log Z − ELBO = KL(q‖p)."""
    beta: list[float] = field(default_factory=list)
    """Temperature β_t applied to log p̃ at that step."""
    lr: list[float] = field(default_factory=list)
    """Learning rate used at that step."""
    skipped: list[bool] = field(default_factory=list)
    """Whether the step was skipped for non-finite values."""
    masked: list[int] = field(default_factory=list)
    """Samples whose non-finite log p̃ was masked at that step (see ``fit``'s ``mask_fraction``)."""

    @classmethod
    def from_dict(cls, columns: dict[str, list]) -> History:
        """Rebuild from :func:`dataclasses.asdict` output (older checkpoints lack ``masked``)."""
        columns = dict(columns)
        columns.setdefault("masked", [0] * len(columns.get("step", [])))
        return cls(**columns)

    def __len__(self) -> int:
        return len(self.step)

    def to_csv(self, path: str | Path) -> None:
        """Write one row per step with a header (atomically: a crash leaves no torn file)."""
        columns = asdict(self)
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(columns)
        writer.writerows(zip(*columns.values(), strict=True))
        runfiles.write_text(path, text.getvalue())


def _make_scheduler(
    lr_schedule: str | Callable[[torch.optim.Optimizer], Any] | None,
    optimizer: torch.optim.Optimizer,
    steps: int,
) -> Any:
    if lr_schedule is None:
        return None
    if lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    if callable(lr_schedule):
        return lr_schedule(optimizer)
    raise ValueError(f"lr_schedule must be None, 'cosine' or a callable, got {lr_schedule!r}")


def _check_range(name: str, value: Any, low: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer {what}, got {value!r}")


def _check_differentiable(log_p: Tensor, theta: Tensor) -> None:
    """At step 0: log p̃ must be a float tensor that depends on θ with a non-zero gradient.

    A detached, numpy-round-tripped or integer log-density gives zero or no gradient, and the
    KL objective then maximizes entropy without bound (the flow's scale grows forever).
    """
    hint = (
        "log_prob must be computed from θ with torch operations (no .item(), .detach(), numpy "
        "round trip or integer arithmetic)"
    )
    if not log_p.is_floating_point():
        raise TypeError(f"log_prob returned dtype {log_p.dtype}, not a float tensor; {hint}")
    if not log_p.requires_grad:
        raise ValueError(f"log_prob's output does not depend on θ (requires_grad=False); {hint}")
    finite = torch.isfinite(log_p)
    if not finite.any():
        return  # the non-finite check reports it
    (grad,) = torch.autograd.grad(log_p[finite].sum(), theta, retain_graph=True, allow_unused=True)
    if grad is None or not bool((grad[finite] != 0).any()):
        flat = bool((log_p[finite] == log_p[finite][0]).all())
        why = (
            "log p̃ takes one value at all of them: a flat (improper) density, or a uniform "
            "one, which a flow on all of R^d cannot fit; map a bounded parameter to an "
            "unbounded one (log, logit) and add the log-Jacobian. Otherwise, "
            if flat
            else ""
        )
        raise ValueError(
            f"log_prob's gradient with respect to θ is zero at all {int(finite.sum())} samples of "
            f"step 0, so fit cannot learn from it; {why}{hint}"
        )


class _MaskedLogProb:
    """log p̃ with non-finite values at up to ``limit`` samples per call replaced by a constant.

    A masked sample keeps its flow terms (log q) but its log p̃ becomes the smallest finite value
    of the batch with no gradient (a hook zeroes its NaN gradient): the step's gradient then
    ignores the target there, a bias toward q at those points, bounded by ``limit`` / n.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], limit: int) -> None:
        self.fn, self.limit, self.masked = fn, limit, 0

    def __call__(self, theta: Tensor) -> Tensor:
        log_p = self.fn(theta)
        self.masked = 0
        if not isinstance(log_p, Tensor) or log_p.shape != theta.shape[:-1]:
            return log_p  # the loss's shape check reports it
        bad = ~torch.isfinite(log_p) & torch.isfinite(theta).all(-1)
        count = int(bad.sum())
        if count == 0 or count > self.limit or count == bad.numel():
            return log_p
        self.masked = count
        if theta.requires_grad:
            theta.register_hook(lambda g: g.masked_fill(bad[..., None], 0.0))
        fill = log_p.detach()[~bad].min()
        return torch.where(bad, fill, log_p)


def _describe_bad(values: Tensor) -> str:
    nan = int(values.isnan().sum())
    pos = int((values == math.inf).sum())
    neg = int((values == -math.inf).sum())
    return f"{nan} NaN, {pos} +inf, {neg} -inf"


def _check_same_setup(
    state: dict[str, Any], path: Path, opt_name: str, sched_name: str | None
) -> None:
    """A resumed fit must use the optimizer and LR schedule its checkpoint was written with."""
    saved_opt = state.get("optimizer_name")
    saved_sched = state.get("scheduler_name", "?" if state["scheduler"] is not None else None)
    diffs = []
    if saved_opt is not None and saved_opt != opt_name:
        diffs.append(f"optimizer {saved_opt} in the checkpoint, {opt_name} now")
    if (saved_sched is None) != (sched_name is None) or (
        saved_sched not in (None, "?") and saved_sched != sched_name
    ):
        diffs.append(f"lr_schedule {saved_sched} in the checkpoint, {sched_name} now")
    if diffs:
        raise ValueError(
            f"cannot resume {path}: {'; '.join(diffs)}; resume with the same optimizer and "
            "lr_schedule, or start a new checkpoint"
        )


def fit(
    q: Flow,
    log_prob: Any,
    steps: int = 1000,
    *,
    loss: str | Loss = "kl",
    num_samples: int = 256,
    lr: float = 1e-2,
    optimizer: Callable[..., torch.optim.Optimizer] | None = None,
    lr_schedule: str | Callable[[torch.optim.Optimizer], Any] | None = None,
    beta: float | Schedule = 1.0,
    stl: bool = False,
    grad_clip: float | None = None,
    seed: int | None = None,
    callback: Callable[[int, dict[str, float]], bool | None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    max_bad_steps: int = 0,
    mask_fraction: float = 0.0,
    progress: bool = True,
) -> History:
    """Fit ``q`` to the unnormalized density ``log_prob`` by minimizing KL(q‖p) (Eq. 2).

    Each step draws ``num_samples`` reparameterized θ = h_φ(ξ), evaluates
    E[log q(θ) − β_t log p̃(θ)] and takes one optimizer step on φ.

    Args:
        q: the flow to train (modified in place).
        log_prob: a target (anything with ``log_prob``) or a callable θ (n, d) ↦ log p̃(θ) (n,).
        steps: total number of steps (a resumed fit runs until this many are done).
        loss: the objective, a name registered in :data:`vi_flows.losses.LOSSES` (``"kl"``,
            Eq. 2, the default; ``"stl"``; ...) or a :class:`~vi_flows.losses.Loss` object.
        num_samples: samples per step.
        lr: learning rate of the default Adam optimizer.
        optimizer: a factory ``optimizer(params, lr=lr)``; Adam by default.
        lr_schedule: ``None``, ``"cosine"`` or a factory ``schedule(optimizer)`` stepped once per
            step.
        beta: temperature on log p̃, a number or a schedule β_t (annealing).
        stl: shorthand for ``loss="stl"``, the path-derivative ("sticking the landing")
            gradient (invertible flows only).
        grad_clip: clip the gradient norm to this value.
        seed: seed for the global torch RNG (ignored when resuming: the checkpoint's RNG state
            is restored so that the continuation is identical).
        callback: called as ``callback(step, info)`` after each step; return ``True`` to stop.
        checkpoint: file to write the fit's state to (flow, optimizer, scheduler, history, RNG).
        checkpoint_every: write the checkpoint every this many steps (0: only at the end).
        resume: continue from ``checkpoint`` if it exists.
        max_bad_steps: how many steps with non-finite target values or gradients may be skipped
            before :class:`NonFiniteError` is raised.
        mask_fraction: up to this fraction of a step's samples may have a non-finite log p̃;
            they are masked (their log p̃ term gets no gradient; counted in ``History.masked``)
            and the step goes on. A step with more is a bad step. 0 (the default) masks nothing.
        progress: show a tqdm bar with the running ELBO.

    Under ``torchrun`` (:mod:`vi_flows.distributed`) each of the N ranks draws its share n_r of
    the ``num_samples`` from its own stream (``seed`` split by rank), evaluates the target on
    them, and the gradients are all-reduced with weights n_r / n: every step equals the
    single-process step on the union of the samples, up to floating-point summation order.
    Rank 0's φ, LR schedule and stopping decision are shared; rank 0 writes the checkpoint
    (with every rank's RNG state), and a resume needs the same number of ranks.

    Returns:
        The :class:`History` of every step (including the resumed part's past).

    Raises:
        NonFiniteError: when the target (or its gradient) is non-finite beyond ``max_bad_steps``,
            or the flow's own samples or log-density went non-finite.
        ValueError / TypeError: for an argument out of range, a checkpoint folder that is missing
            or not writable, or (at step 0) a ``log_prob`` of the wrong shape or type or with no
            gradient in θ; resuming with another optimizer or LR schedule than the checkpoint's.
    """
    _check_range("steps", steps, 0, ">= 0")
    _check_range("num_samples", num_samples, 1, ">= 1")
    _check_range("checkpoint_every", checkpoint_every, 0, ">= 0 (0: only at the end)")
    _check_range("max_bad_steps", max_bad_steps, 0, ">= 0")
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not (isinstance(mask_fraction, int | float) and 0.0 <= mask_fraction < 1.0):
        raise ValueError(f"mask_fraction must be in [0, 1), got {mask_fraction!r}")
    if grad_clip is not None and not (
        isinstance(grad_clip, int | float) and math.isfinite(grad_clip) and grad_clip > 0
    ):  # a negative max_norm would flip every gradient (clip_grad_norm_ scales by it)
        raise ValueError(f"grad_clip must be None or a finite number > 0, got {grad_clip!r}")
    if checkpoint is None and (resume or checkpoint_every):
        raise ValueError("resume and checkpoint_every need checkpoint (a file to write)")
    # Under torchrun each rank draws its share of the samples; gradients are averaged with
    # weights n_r / n, so one step equals the single-process step on the union of the samples.
    world = distributed.world_size()
    local_n = distributed.shard(num_samples)[1]
    weight = local_n / num_samples
    log_p_fn = _MaskedLogProb(as_log_prob(log_prob), int(mask_fraction * local_n))
    objective = get_loss(loss)
    if stl:
        if loss != "kl":
            raise ValueError(f"stl=True means loss='stl'; it cannot be combined with loss={loss!r}")
        objective = STL()
    schedule = as_schedule(beta)
    params = [p for p in q.parameters() if p.requires_grad]
    opt = (optimizer or torch.optim.Adam)(params, lr=lr)
    scheduler = _make_scheduler(lr_schedule, opt, steps)
    history = History()
    start, bad_steps = 0, 0
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and distributed.is_main():
        runfiles.check_writable(ckpt_path.parent, "checkpoint")
    opt_name = type(opt).__name__
    sched_name = type(scheduler).__name__ if scheduler is not None else None

    if resume and ckpt_path is not None and ckpt_path.exists():
        state = runfiles.load(ckpt_path)  # weights_only, CRC-checked, one clear error
        _check_same_setup(state, ckpt_path, opt_name, sched_name)
        q.load_state_dict(state["flow"])
        opt.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        history = History.from_dict(state["history"])
        start, bad_steps = state["step"], state["bad_steps"]
        saved_world = int(state.get("world_size", 1))
        if saved_world != world:
            raise ValueError(
                f"cannot resume {ckpt_path}: it was written by {saved_world} rank(s), this run has "
                f"{world}; resume with the same number of processes"
            )
        rng = state["rng"]
        torch.set_rng_state(rng if rng.dim() == 1 else rng[distributed.rank()].clone())
    else:
        if seed is None and world > 1:  # agree on a base seed, then split it by rank
            seed = int(distributed.broadcast_(torch.randint(2**62, (1,)))[0])
        if seed is not None:
            torch.manual_seed(distributed.rank_seed(seed))
        distributed.broadcast_module(q)  # every rank starts from rank 0's φ

    def save(next_step: int) -> None:
        if ckpt_path is None:
            return
        # Every rank's RNG state, so that a resume with the same world size is bit for bit.
        rng = torch.get_rng_state()
        if world > 1:
            rng = distributed.all_gather_cat(rng[None])
        if distributed.is_main():
            state = {
                "flow": q.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "history": asdict(history),
                "step": next_step,
                "bad_steps": bad_steps,
                "rng": rng,
                "world_size": world,
                "optimizer_name": opt_name,
                "scheduler_name": sched_name,
            }
            runfiles.save(state, ckpt_path)  # temp file, fsync, os.replace: never torn
        distributed.barrier()  # no rank reads the checkpoint before it is complete

    bar = tqdm(range(start, steps), disable=not progress, desc="fit", leave=False)
    for step in bar:
        b = schedule(step)
        if not (math.isfinite(b) and b >= 0):  # β < 0 would fit the inverted target silently
            raise ValueError(f"beta must be a finite number >= 0, got {b!r} at step {step}")
        opt.zero_grad(set_to_none=True)
        out = objective(q, log_p_fn, local_n, beta=b)
        theta, log_p = out.theta, out.log_p
        if step == 0:
            _check_differentiable(log_p, theta)
        problem = None
        flow_bad = ~torch.isfinite(theta).all(-1) | ~torch.isfinite(out.log_q)
        if flow_bad.any():
            # The flow itself diverged (its θ or log q); the target is not to blame.
            problem = (
                f"step {step}: the flow's own samples or log-density are non-finite at "
                f"{int(flow_bad.sum())} of {num_samples} samples (the flow diverged: lower lr, "
                "set grad_clip, or check the starting point)"
            )
        elif not torch.isfinite(log_p).all():
            bad = ~torch.isfinite(log_p)
            support = (
                "; -inf or NaN off a bounded support? a flow covers all of R^d: give a bounded "
                "parameter in unconstrained coordinates (log or logit, plus its log-Jacobian)"
                if bool((log_p[bad] != math.inf).any())
                else ""
            )
            problem = (
                f"step {step}: log_prob returned non-finite values at {int(bad.sum())} of "
                f"{num_samples} samples ({_describe_bad(log_p)}{support})"
            )
        else:
            theta.retain_grad()
            out.loss.backward()
            grads_ok = all(p.grad is None or torch.isfinite(p.grad).all() for p in params)
            if not grads_ok:
                bad_rows = int((~torch.isfinite(theta.grad)).any(-1).sum())
                where = (
                    f"the gradient of log_prob is non-finite at {bad_rows} of {num_samples} samples"
                    if bad_rows
                    else "log_prob's gradient is finite: the flow's own terms are not"
                )
                problem = f"step {step}: the gradient is non-finite ({where})"
        if world > 1 and distributed.any_true(problem is not None) and problem is None:
            problem = f"step {step}: another rank had non-finite values"
        if problem is not None:
            bad_steps += 1
            if bad_steps > max_bad_steps:
                raise NonFiniteError(
                    f"{problem}; {bad_steps} bad step(s) so far, max_bad_steps={max_bad_steps}"
                )
            opt.zero_grad(set_to_none=True)
            info = {"loss": math.nan, "elbo": math.nan}
        else:
            if world > 1:
                distributed.all_reduce_grads(params, weights=weight)
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            info = {"loss": float(out.loss.detach()), "elbo": float(out.elbo)}
            if world > 1:  # the union's averages
                both = distributed.all_reduce_sum(
                    torch.tensor([info["loss"], info["elbo"]]) * weight
                )
                info.update(loss=float(both[0]), elbo=float(both[1]))
        info.update(beta=b, lr=float(opt.param_groups[0]["lr"]))
        if scheduler is not None:
            with warnings.catch_warnings():  # a skipped step still advances the schedule
                warnings.filterwarnings(
                    "ignore", "Detected call of `lr_scheduler.step", UserWarning
                )
                scheduler.step()
            if world > 1:  # a schedule driven by wall time may differ between ranks: use rank 0's
                lrs = distributed.broadcast_(torch.tensor([g["lr"] for g in opt.param_groups]))
                for group, value in zip(opt.param_groups, lrs.tolist(), strict=True):
                    group["lr"] = value
        history.step.append(step)
        history.loss.append(info["loss"])
        history.elbo.append(info["elbo"])
        history.beta.append(info["beta"])
        history.lr.append(info["lr"])
        history.skipped.append(problem is not None)
        history.masked.append(
            log_p_fn.masked
            if world == 1
            else int(distributed.all_reduce_sum(torch.tensor([log_p_fn.masked]))[0])
        )
        if progress:
            bar.set_postfix(elbo=f"{info['elbo']:.3f}", refresh=False)
        if checkpoint_every and (step + 1) % checkpoint_every == 0:
            save(step + 1)
        stop = callback is not None and bool(callback(step, info))
        if distributed.any_true(stop):  # every rank stops at the same step
            break
    save(len(history))  # one history entry per step taken or skipped: the next step's index
    return history
