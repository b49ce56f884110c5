"""``fit``: minimize KL(q‖p) over a flow's parameters by stochastic gradient descent."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from vi_flows import runfiles
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


def _describe_bad(values: Tensor) -> str:
    nan = int(values.isnan().sum())
    pos = int((values == math.inf).sum())
    neg = int((values == -math.inf).sum())
    return f"{nan} NaN, {pos} +inf, {neg} -inf"


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
        progress: show a tqdm bar with the running ELBO.

    Returns:
        The :class:`History` of every step (including the resumed part's past).

    Raises:
        NonFiniteError: when the target (or its gradient) is non-finite beyond ``max_bad_steps``.
        ValueError / TypeError: when ``log_prob`` returns the wrong shape or type (at step 0).
    """
    log_p_fn = as_log_prob(log_prob)
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

    if resume and ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=True)
        q.load_state_dict(state["flow"])
        opt.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        history = History(**state["history"])
        start, bad_steps = state["step"], state["bad_steps"]
        torch.set_rng_state(state["rng"])
    elif seed is not None:
        torch.manual_seed(seed)

    def save(next_step: int) -> None:
        if ckpt_path is None:
            return
        state = {
            "flow": q.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "history": asdict(history),
            "step": next_step,
            "bad_steps": bad_steps,
            "rng": torch.get_rng_state(),
        }
        tmp = ckpt_path.with_suffix(ckpt_path.suffix + ".tmp")
        torch.save(state, tmp)
        tmp.replace(ckpt_path)  # atomic: a crash mid-write never leaves a torn checkpoint

    bar = tqdm(range(start, steps), disable=not progress, desc="fit", leave=False)
    for step in bar:
        b = schedule(step)
        opt.zero_grad(set_to_none=True)
        out = objective(q, log_p_fn, num_samples, beta=b)
        theta, log_p = out.theta, out.log_p
        problem = None
        if not torch.isfinite(log_p).all():
            bad = ~torch.isfinite(log_p)
            problem = (
                f"step {step}: log_prob returned non-finite values at {int(bad.sum())} of "
                f"{num_samples} samples ({_describe_bad(log_p)})"
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
        if problem is not None:
            bad_steps += 1
            if bad_steps > max_bad_steps:
                raise NonFiniteError(
                    f"{problem}; {bad_steps} bad step(s) so far, max_bad_steps={max_bad_steps}"
                )
            opt.zero_grad(set_to_none=True)
            info = {"loss": math.nan, "elbo": math.nan}
        else:
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            info = {"loss": float(out.loss.detach()), "elbo": float(out.elbo)}
        info.update(beta=b, lr=float(opt.param_groups[0]["lr"]))
        if scheduler is not None:
            scheduler.step()
        history.step.append(step)
        history.loss.append(info["loss"])
        history.elbo.append(info["elbo"])
        history.beta.append(info["beta"])
        history.lr.append(info["lr"])
        history.skipped.append(problem is not None)
        if progress:
            bar.set_postfix(elbo=f"{info['elbo']:.3f}", refresh=False)
        if checkpoint_every and (step + 1) % checkpoint_every == 0:
            save(step + 1)
        if callback is not None and callback(step, info):
            break
    save(len(history))  # one history entry per step taken or skipped: the next step's index
    return history
