"""Temperature schedules β_t (small frozen objects; call ``schedule(step)``).

In density fitting β_t multiplies log p (annealing from a flat start towards the target); in
policy learning β_t = 1/α_t, the inverse of the paper's annealed temperature α.

>>> LinearSchedule(0.1, 1.0, steps=10)(5)
0.55
>>> ExponentialSchedule(1.0, 0.1, rate=0.5)(10)
0.1
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Schedule", "Constant", "LinearSchedule", "ExponentialSchedule", "as_schedule"]


class Schedule(Protocol):
    """Anything that maps a step index (0-based) to a float."""

    def __call__(self, step: int) -> float: ...


@dataclass(frozen=True)
class Constant:
    """β_t = value."""

    value: float
    """The constant value."""

    def __call__(self, step: int) -> float:
        return float(self.value)


@dataclass(frozen=True)
class LinearSchedule:
    """β_t goes linearly from ``start`` to ``end`` over ``steps`` steps, then stays at ``end``."""

    start: float
    """Value at step 0."""
    end: float
    """Value from step ``steps`` on."""
    steps: int
    """Length of the ramp, in steps (> 0)."""

    def __call__(self, step: int) -> float:
        frac = min(max(step / max(self.steps, 1), 0.0), 1.0)
        return float(self.start + frac * (self.end - self.start))


@dataclass(frozen=True)
class ExponentialSchedule:
    """β_t = start · rateᵗ, stopped at the floor (or ceiling) ``end``."""

    start: float
    """Value at step 0 (> 0)."""
    end: float
    """Floor when decaying (rate < 1), ceiling when growing (rate > 1)."""
    rate: float
    """Multiplicative factor per step (> 0)."""

    def __call__(self, step: int) -> float:
        value = self.start * math.exp(step * math.log(self.rate))
        return float(max(value, self.end) if self.rate < 1 else min(value, self.end))


def as_schedule(value: float | Schedule) -> Schedule:
    """A number becomes a :class:`Constant`; a schedule is returned unchanged."""
    return Constant(float(value)) if isinstance(value, int | float) else value
