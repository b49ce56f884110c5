"""The settings of :func:`vi_flows.infer.infer` beyond its arguments (:class:`InferConfig`, a
frozen dataclass whose defaults are the documented rule, each field checked on construction) and
the step-size and stopping rule they drive (:class:`PlateauSchedule`)."""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vi_flows.checks import check_integer, positive_number

__all__ = ["InferConfig", "PlateauSchedule"]


@dataclass(frozen=True)
class InferConfig:
    """Settings of :func:`infer` beyond its arguments (the defaults are the documented rule)."""

    lr: float | None = None
    """Peak Adam step size; ``None``: 1e-2 for Gaussian families, 3e-3 for deep flows (each
    family's default in ``benchmarks/common.py``)."""
    schedule: str = "plateau-cosine"
    """``"plateau-cosine"`` (constant until the ELBO plateaus, then cosine decay to 0) or
    ``"constant"`` (the old default, for comparison)."""
    num_samples: int = 256
    """Samples per step."""
    window: int = 100
    """Steps per ELBO window of the stopping rule."""
    tol_gain: float = 0.01
    """The constant phase ends once the ELBO is confidently gaining less than this many nats
    per 1,000 steps: the least-squares slope of the window means over the second half of the
    steps so far, plus two standard errors, is below it. Absolute, not relative as Stan's
    ``tol_rel_obj``: adding a constant to log p̃ must not change when a fit stops."""
    min_steps: int = 500
    """Steps at constant step size before the rule may end that phase."""
    max_steps: int = 20_000
    """Cap on all steps when ``steps`` is None."""
    decay_fraction: float = 0.5
    """Decay-phase length as a fraction of the constant phase (at least ``min_steps``)."""
    explore_budget: float = 0.6
    """With a time budget, the constant phase ends by this fraction of it."""
    mask_fraction: float = 0.05
    """Up to this fraction of a step's samples may have non-finite log p̃ and be masked."""
    max_bad_steps: int = 100
    """Steps with more non-finite values than that may be skipped; then NonFiniteError."""
    eval_samples: int = 16_000
    """Draws for the verdict (ESS, k̂, ELBO, log Z) and the summary. 16,000 rather than 4,000,
    because 4,000 is too few for the verdict to be stable. For one flow fitted to the 10-d funnel
    (a miss: q's sd 0.41 of the truth in one direction), two 4,000-draw evaluations gave k̂ 0.76
    and 0.59, and worst sd ratios q/PSIS of 0.81 (flagged) and 0.93 (not flagged). At 16,000
    and 64,000 draws the ratios were 0.67 and 0.78, both flagged."""
    base: str = "normal"
    """The flow's base: ``"normal"`` or ``"student-t"`` (independent Student-t coordinates,
    ν learned from 5; polynomial tails reach posteriors whose tails a Gaussian base through an
    affine-tailed flow cannot, and a heavier-tailed q keeps importance weights bounded)."""

    def __post_init__(self) -> None:
        if self.base not in ("normal", "student-t"):
            raise ValueError(f"base must be 'normal' or 'student-t', got {self.base!r}")
        if self.schedule not in ("plateau-cosine", "constant"):
            raise ValueError(
                f"schedule must be 'plateau-cosine' or 'constant', got {self.schedule!r}"
            )
        if self.lr is not None and not positive_number(self.lr):
            raise ValueError(f"lr must be None or a finite number > 0, got {self.lr!r}")
        for name, low in (
            ("num_samples", 1),
            ("window", 1),
            ("min_steps", 0),
            ("max_steps", 1),
            ("max_bad_steps", 0),
            ("eval_samples", 100),
        ):
            check_integer(name, getattr(self, name), low)
        for name in ("tol_gain", "decay_fraction"):
            if not positive_number(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        if not (positive_number(self.explore_budget) and self.explore_budget < 1):
            raise ValueError(f"explore_budget must be in (0, 1), got {self.explore_budget!r}")
        fraction = self.mask_fraction
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, numbers.Real)
            or not 0 <= fraction < 1
        ):
            raise ValueError(f"mask_fraction must be in [0, 1), got {fraction!r}")


class PlateauSchedule:
    """infer's step-size and stopping rule, as fit's ``lr_schedule`` factor (:meth:`factor`) and
    ``callback`` (calling it after each step returns True to stop).

    Constant step size until the ELBO plateaus (the least-squares slope of ``window``-step means
    over the second half of the run, plus two standard errors, below ``tol_gain`` nats per 1,000
    steps, after ``min_steps``), or until the constant phase has used ``explore_budget`` of a
    time budget; then a cosine decay to 0 over ``decay_fraction`` of the steps so far (at least
    ``min_steps``, fitted into the time left). With a fixed ``steps``: half constant, half decay.
    :attr:`reason` says why the fit stopped. ``clock`` gives the seconds that ``start`` was
    read from (``time.perf_counter``; a test passes its own).
    """

    def __init__(
        self,
        cfg: InferConfig,
        steps: int | None,
        time_budget: float | None,
        start: float,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.cfg, self.budget, self.start, self.clock = cfg, time_budget, start, clock
        self.elbos: list[float] = []
        self.means: list[tuple[float, float]] = []
        self.decay_start: int | None = None
        self.decay_len = 1
        self.end = cfg.max_steps if steps is None else steps
        self.reason = "step cap"
        if steps is not None:  # a fixed budget: constant for half, cosine over the rest
            self._begin_decay(steps // 2, steps - steps // 2, "the given number of steps")

    def _begin_decay(self, at: int, length: int, reason: str) -> None:
        self.decay_start, self.decay_len = at, max(1, length)
        self.end = at + self.decay_len
        self.reason = reason

    def _gain_upper_bound(self) -> float:
        """Slope (nats per step) of the window means over the second half, plus 2 se."""
        recent = self.means[len(self.means) // 2 :]
        if len(recent) < 5:
            return math.inf
        m = torch.tensor([r[0] for r in recent], dtype=torch.float64)
        if not bool(torch.isfinite(m).all()):
            return math.inf
        x = torch.arange(len(recent), dtype=torch.float64) * self.cfg.window
        xc = x - x.mean()
        slope = float((xc * (m - m.mean())).sum() / xc.square().sum())
        var_m = sum(r[1] for r in recent) / len(recent)
        return slope + 2.0 * math.sqrt(var_m / float(xc.square().sum()))

    def factor(self, step: int) -> float:
        if self.cfg.schedule == "constant" or self.decay_start is None or step < self.decay_start:
            return 1.0
        frac = min(1.0, (step - self.decay_start) / self.decay_len)
        return 0.5 * (1.0 + math.cos(math.pi * frac))

    def __call__(self, step: int, info: dict[str, float]) -> bool:
        elapsed = self.clock() - self.start
        if self.budget is not None and elapsed > self.budget:
            self.reason = f"time budget {self.budget:g} s reached"
            return True
        if step + 1 >= self.end:
            return True
        self.elbos.append(info["elbo"])
        if self.decay_start is not None:
            return False
        cfg, w = self.cfg, self.cfg.window
        over_time = self.budget is not None and elapsed > cfg.explore_budget * self.budget
        over_time |= step + 1 >= int(cfg.max_steps / (1.0 + cfg.decay_fraction))
        plateau = False
        if len(self.elbos) % w == 0:
            chunk = torch.tensor([e for e in self.elbos[-w:] if math.isfinite(e)] or [math.nan])
            var = float(chunk.var()) if chunk.numel() > 1 else math.nan  # one value: unknown
            self.means.append((float(chunk.mean()), var / chunk.numel()))
            if step + 1 >= cfg.min_steps:
                plateau = self._gain_upper_bound() < cfg.tol_gain / 1000.0
        if plateau or over_time:
            explored = step + 1
            length = max(cfg.min_steps, int(cfg.decay_fraction * explored))
            length = min(length, cfg.max_steps - explored - 1)
            if self.budget is not None:  # fit the decay into the time left
                per_step = elapsed / max(1, explored)
                length = min(length, int(0.95 * (self.budget - elapsed) / per_step))
            why = "ELBO plateaued" if plateau else "constant phase reached its share of the budget"
            self._begin_decay(step + 2, max(1, length), f"{why} at step {explored}, then decayed")
        return False
