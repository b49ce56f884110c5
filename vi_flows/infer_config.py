"""The settings of :func:`vi_flows.infer.infer` beyond its arguments: one frozen dataclass whose
defaults are the documented rule, each field checked on construction (one line naming it)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

__all__ = ["InferConfig", "positive_number"]


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
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
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


def positive_number(x: Any) -> bool:
    """A finite real number > 0 (not a bool)."""
    real = isinstance(x, numbers.Real) and not isinstance(x, bool)
    return real and math.isfinite(x) and x > 0
