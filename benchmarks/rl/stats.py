r"""Aggregate statistics in the style of rliable (Agarwal et al. 2021, "Deep RL at the edge of the
statistical precipice"): the interquartile mean (IQM) with a 95% stratified-bootstrap CI.

Own implementation (a few lines) rather than the ``rliable`` package, which pulls arch,
statsmodels, pandas and seaborn into the environment.

* IQM of n scores: the mean of the middle half, i.e. the 25% trimmed mean with ⌊n/4⌋ scores cut
  from each end after sorting (``scipy.stats.trim_mean(x, 0.25)``, as rliable computes it). Robust
  to a few outlier runs, far less noisy than the median for small n.
* Stratified bootstrap: for scores ``X[t]`` of task t (one per run), each replicate resamples the
  runs *within each task* with replacement (keeping every task's run count) and recomputes the
  statistic on the union; the CI is the (2.5%, 97.5%) percentile interval of the replicates. With
  several tasks the scores must be on one scale first (:func:`normalise`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["iqm", "normalise", "stratified_bootstrap_ci"]


def iqm(scores: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: the mean after cutting ⌊n/4⌋ scores from each end of the sorted scores.

    >>> iqm([8, 1, 7, 2, 6, 3, 5, 4])  # middle half of 1…8: (3 + 4 + 5 + 6) / 4
    4.5
    """
    x = np.sort(np.asarray(scores, dtype=float).ravel())
    if x.size == 0:
        raise ValueError("scores must be non-empty")
    cut = x.size // 4
    return float(x[cut : x.size - cut].mean())


def normalise(scores: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map returns so that ``low`` → 0 and ``high`` → 1 (a task's cross-task score)."""
    if not high != low:
        raise ValueError(f"score range needs low != high, got ({low}, {high})")
    return (np.asarray(scores, dtype=float) - low) / (high - low)


def stratified_bootstrap_ci(
    scores: Sequence[Sequence[float]],
    statistic: Callable[[np.ndarray], float] = iqm,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Point estimate and percentile CI of ``statistic`` over all runs of all tasks.

    Args:
        scores: one sequence of run scores per task (tasks may have different run counts).
        statistic: maps the concatenated scores to a number (default :func:`iqm`).
        reps: bootstrap replicates.
        confidence: the CI's coverage, in (0, 1).
        seed: seed of the resampling (the CI is reproducible).

    Returns:
        ``(point, low, high)``.
    """
    tasks = [np.asarray(s, dtype=float).ravel() for s in scores]
    if not tasks or any(t.size == 0 for t in tasks):
        raise ValueError("scores must hold at least one run for every task")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if reps < 1:
        raise ValueError(f"reps must be an integer >= 1, got {reps}")
    rng = np.random.default_rng(seed)
    point = statistic(np.concatenate(tasks))
    # One index draw per task and replicate: resampling happens within each stratum only.
    draws = [t[rng.integers(0, t.size, (reps, t.size))] for t in tasks]
    reps_stat = np.array([statistic(np.concatenate([d[r] for d in draws])) for r in range(reps)])
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(reps_stat, [tail, 100 - tail])
    return float(point), float(low), float(high)
