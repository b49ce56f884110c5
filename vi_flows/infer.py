"""``infer``: from a log-density to draws you can trust, or a clear statement that you can't.

The turnkey path reads top to bottom: precondition → fit → verdict.

1. **Precondition** (:func:`vi_flows.precondition.choose`): whiten with the Laplace Gaussian
   at the mode holding the most mass (:func:`vi_flows.modes.find_mode`: several starts, L-BFGS
   then Newton) when its Hessian is finite and positive definite and the Gaussian passes an
   importance check (PSIS k̂ ≤ 0.7), else with a pilot mean-field Gaussian. The flow is built on
   the whitened z and composed with the exact affine θ = m + L z, so ``.flow`` lives in θ.
2. **Fit** (:func:`vi_flows.fit`) with a two-phase step size: Adam at a constant rate until the
   ELBO stops improving, then a cosine decay to zero (the decay plays the role of iterate
   averaging: the step noise vanishes at the end). A few non-finite log p̃ values per step are
   masked rather than fatal.
3. **Verdict** (:class:`Inference`): ELBO, IS log Z, ESS and PSIS k̂ from 16,000 fresh draws,
   and q's moments against importance-corrected ones from a defensive mixture
   (:mod:`vi_flows.importance`); k̂ > 0.7 or a moment gap warns with a concrete next step.

>>> import torch
>>> result = infer(lambda x: -0.5 * ((x - 2.0) / 0.5).square().sum(-1), dim=2, steps=400,
...                seed=0, progress=False)
>>> result.precondition.method, bool((result.sample(4000).mean(0) - 2.0).abs().max() < 0.05)
('laplace', True)
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from vi_flows import flows
from vi_flows.bases import StandardNormal, StudentT
from vi_flows.checks import check_integer, positive_number
from vi_flows.diagnostics import K_HAT_MAX, Diagnostics, from_log_weights
from vi_flows.fit import History, fit
from vi_flows.importance import (
    defensive_log_weights,
    log_weights,
    missed_modes,
    moment_check,
    psis_weights,
)
from vi_flows.infer_config import InferConfig, PlateauSchedule
from vi_flows.losses import get_loss
from vi_flows.losses_mass import FAB, FAB_BASE, fab_for_dim
from vi_flows.mixture import split_mixture
from vi_flows.precondition import Preconditioner, choose, precondition
from vi_flows.targets import Target, as_target

__all__ = ["InferConfig", "Inference", "auto_flow", "infer", "psis_weights"]


def auto_flow(dim: int) -> tuple[str, dict[str, Any]]:
    """The family and size ``flow="auto"`` uses for dimension d.

    d = 1: a Gaussian (affine; couplings need two coordinates). d ≥ 2: RealNVP with 8 coupling
    layers and two hidden layers of width clip(2d, 64, 256). After whitening the flow only has to
    learn the non-Gaussian part; RealNVP was among the best families on the whitened posteriors
    of the density benchmark (``benchmarks/results/densities-posteriors-whitened``), and the
    width grows with d so the conditioner can see every coordinate. No size sweep backs the
    exact numbers; ``benchmarks/results/infer`` measures the rule as a whole.
    """
    if dim == 1:
        return "gaussian", {}
    width = int(min(256, max(64, 2 * dim)))
    return "realnvp", {"layers": 8, "hidden": (width, width)}


@dataclass
class Inference:
    """The result of :func:`infer`.

    Attributes:
        flow: the fitted flow in the target's own coordinates (family ``"preconditioned"``: the
            whitening is a fixed affine layer inside it; ``flows.save``/``load`` rebuild it).
        target: the target that was fitted.
        history: the fit's :class:`~vi_flows.fit.History`.
        diagnostics: ELBO, IS log Z, ESS and k̂ from ``config.eval_samples`` fresh draws.
        precondition: the whitening that was chosen, and why.
        objective: the loss's name or repr.
        seconds: wall time of the whole call.
        stop_reason: why the fit stopped.
        nonfinite: how many of the evaluation draws had a non-finite log p̃ (weight 0).
        shift: the largest |mean_q − mean_IS| / sd_IS over coordinates, where mean_IS and sd_IS
            are PSIS-weighted moments of p from a defensive mixture ½ q + ½ q_s whose second
            half pushes 4ξ through the same flow (so tails q under-represents are visited): an
            estimate of q's own bias that k̂ alone cannot see.
        sd_ratio: the range of sd_q / sd_IS over coordinates.
        shift_bound: the upper end of the shift's 90% bootstrap interval (see
            :func:`~vi_flows.importance.moment_check`); reported, the verdict reads ``shift``.
        sd_ratio_bounds: the lowest lower end and highest upper end of the sd ratios' 90%
            bootstrap intervals. The verdict reads these bounds, not the point estimates: a
            heavy tail makes the importance estimate of p's sd noisy and biased toward q's, and
            a deficit the draws cannot rule out is flagged.
        missed_modes: the separate modes found by the mode search where q has almost no
            density, as (Laplace mass share, log p̃ − log q − log Ẑ there) each
            (:func:`~vi_flows.importance.missed_modes`): mass q never draws, which k̂ and the
            moment check cannot see. Any miss makes the verdict ``BIASED``.
        modes_unchecked: several separate modes were found, but the flow has no log q at given
            points (planar, radial), so whether q covers them is not known; the verdict says so.
    """

    flow: flows.Flow
    target: Target
    history: History
    diagnostics: Diagnostics
    precondition: Preconditioner
    objective: str
    seconds: float
    stop_reason: str
    nonfinite: int = 0
    shift: float = 0.0
    sd_ratio: tuple[float, float] = (1.0, 1.0)
    shift_bound: float = 0.0
    sd_ratio_bounds: tuple[float, float] = (1.0, 1.0)
    missed_modes: tuple[tuple[float, float], ...] = ()
    modes_unchecked: bool = False
    _draws: Tensor = field(default=None, repr=False)  # type: ignore[assignment]
    _log_w: Tensor = field(default=None, repr=False)  # type: ignore[assignment]

    @property
    def verdict(self) -> str:
        """One line: whether the draws can be trusted, and what to try when not."""
        k, ess = self.diagnostics.k_hat, self.diagnostics.ess
        total = self.diagnostics.n + self.nonfinite
        if k > K_HAT_MAX or self.nonfinite > 0.01 * total:
            why = f"k̂ = {k:.2f} > {K_HAT_MAX:g}" if k > K_HAT_MAX else f"k̂ = {k:.2f}"
            if self.nonfinite:
                why += f", {self.nonfinite} of {total} draws have a non-finite log p̃"
            modes = f"; and {self._modes_missed()}" if self.missed_modes else ""
            return (
                f"UNRELIABLE: {why}: the flow misses mass of p (often a tail{modes}); try "
                f"{self._heavier()}objective='iw', a larger flow, or more steps / a longer "
                "time_budget"
            )
        if self.missed_modes:
            more = (
                "a mixture with a component per mode (flows.build('mixture', d, components=K),"
                " fitted with vi_flows.fit; infer's mixture has 4)"
                if split_mixture(self.flow) is not None
                else "flow='mixture' with objective='mixture-kl' (its components start on the "
                "modes found)"
            )
            return (
                f"BIASED: k̂ = {k:.2f}, but q misses {self._modes_missed()}: importance "
                f"weights cannot see mass q never draws; try {more}, objective='fab', or fit "
                "each mode on its own"
            )
        lo, hi = self.sd_ratio
        lo_b, hi_b = self.sd_ratio_bounds
        # The sd ratios are judged on their interval: on a heavy tail the importance estimate
        # of p's sd misses the rare tail draws, so its point estimate errs toward "pass". The
        # mean shift's error is symmetric and small at the default 16,000 draws (se ≈ 0.015 sd),
        # so it is judged on its point estimate; its upper end is reported, not enforced (it
        # would flag exact fits checked with a few thousand draws).
        if self.shift >= 0.1 or not 0.9 <= lo_b <= hi_b <= 1.1:
            return (
                f"BIASED: k̂ = {k:.2f}, but q's draws may be off the importance-corrected moments "
                f"(worst mean shift {self.shift:.2f} sd, up to {self.shift_bound:.2f}; sd ratios "
                f"{lo:.2f}-{hi:.2f}, 90% interval {lo_b:.2f}-{hi_b:.2f}; tolerated: shift < 0.1, "
                f"ratios in [0.9, 1.1]); use .resample() for corrected draws, {self._heavier()}"
                "or more steps / a longer time_budget"
            )
        tail = (
            f"; {self.nonfinite} of {total} draws have a non-finite log p̃" if self.nonfinite else ""
        )
        if self.modes_unchecked:
            tail += (
                f"; the mode search found {len(self.precondition.modes)} separate modes, and "
                "this flow has no log q at given points to check that q covers them"
            )
        if k > 0.5:
            return (
                f"usable: k̂ = {k:.2f} in (0.5, 0.7], ESS/n = {ess:.2f}; means and sds are fine, "
                f"importance-weighted estimates (resample) are noisier{tail}"
            )
        return f"good: k̂ = {k:.2f} ≤ 0.5, ESS/n = {ess:.2f}{tail}"

    def _heavier(self) -> str:
        """The heavy-tailed-base advice, unless the flow already has a Student-t base."""
        if not isinstance(self.flow.base, StandardNormal):  # already heavy-tailed (Student-t)
            return ""
        return "a heavy-tailed base (config=InferConfig(base='student-t')), "

    def _modes_missed(self) -> str:
        """ "1 of the 2 separate modes the mode search found (Laplace mass 10%; q's density
        there is e^-38 of p's)"."""
        found = len(self.precondition.modes)
        shares = ", ".join(f"{100 * s:.3g}%" for s, _ in self.missed_modes)
        gaps = ", ".join(f"e^-{g:.3g}" if math.isfinite(g) else "0" for _, g in self.missed_modes)
        return (
            f"{len(self.missed_modes)} of the {found} separate modes the mode search found "
            f"(Laplace mass {shares}; q's density there is {gaps} of p's)"
        )

    @property
    def weighted_draws(self) -> tuple[Tensor, Tensor]:
        """The draws of q behind the verdict (``config.eval_samples``; a larger pool once
        :meth:`resample` needed one) and their log w = log p̃ − log q (−inf where log p̃ is
        not finite)."""
        return self._draws, self._log_w

    def sample(self, n: int) -> Tensor:
        """``n`` draws from the fitted flow, (n, d)."""
        check_integer("n", n, 1)
        return self.flow.sample(n)

    @torch.no_grad()
    def resample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws corrected toward p: sampling-importance resampling with PSIS weights.

        Draws come (with replacement) from a pool of max(4n, eval_samples) draws of q weighted
        by Pareto-smoothed w = p̃/q; with k̂ > 0.7 the correction is itself unreliable.
        """
        check_integer("n", n, 1)
        if self._draws is None or self._draws.shape[0] < 4 * n:
            self._draws, self._log_w, _ = log_weights(self.flow, self.target, 4 * n)
        weights = psis_weights(self._log_w)
        idx = torch.multinomial(weights, n, replacement=True, generator=generator)
        return self._draws[idx]

    def summary(self, max_rows: int = 60) -> str:
        """A table: per-parameter mean, sd and 5/50/95% quantiles, then the fit's diagnostics."""
        draws = self.flow.sample(self.diagnostics.n).double()
        qs = torch.quantile(draws, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64), dim=0)
        mean, sd = draws.mean(0), draws.std(0)
        names = [f"θ[{i + 1}]" for i in range(draws.shape[1])]
        width = max(8, *(len(s) for s in names))
        head = f"{'param':<{width}} {'mean':>10} {'sd':>10} {'5%':>10} {'50%':>10} {'95%':>10}"
        lines = [
            f"target {self.target.name} (dim {self.target.dim}); flow {_flow_name(self.flow)}; "
            f"objective {self.objective}",
            f"conditioning: {self.precondition.detail}",
            f"fit: {len(self.history)} steps in {self.seconds:.1f} s ({self.stop_reason})",
            "",
            head,
            "-" * len(head),
        ]
        for i, name in enumerate(names[:max_rows]):
            row = (mean[i], sd[i], qs[0, i], qs[1, i], qs[2, i])
            lines.append(f"{name:<{width}} " + " ".join(f"{float(v):>10.4g}" for v in row))
        if len(names) > max_rows:
            lines.append(f"... {len(names) - max_rows} more (summary(max_rows=...))")
        nu = float(self.flow.base.df().detach()) if isinstance(self.flow.base, StudentT) else 3.0
        if nu <= 2:
            lost = "variance nor mean" if nu <= 1 else "variance"
            lines.append(
                f"(q's Student-t base has ν = {nu:.2f}: q has no finite {lost}, so the mean and "
                "sd columns describe these draws, not p; read the quantiles)"
            )
        d = self.diagnostics
        lines += [
            "",
            f"ELBO       {d.elbo:.4f} ± {d.elbo_se:.4f}",
            f"log Z (IS) {d.log_z:.4f} ± {d.log_z_se:.4f}",
            f"ESS / n    {d.ess:.4f} (n = {d.n})",
            f"PSIS k̂     {d.k_hat:.3f}",
            f"q vs IS    worst mean shift {self.shift:.3f} sd (≤ {self.shift_bound:.3f}), sd "
            f"ratios {self.sd_ratio[0]:.3f}-{self.sd_ratio[1]:.3f} (90% interval "
            f"{self.sd_ratio_bounds[0]:.3f}-{self.sd_ratio_bounds[1]:.3f})",
            f"verdict    {self.verdict}",
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _flow_name(q: flows.Flow) -> str:
    cfg = q.config
    if cfg.get("name") == "preconditioned":
        opts = cfg["options"]
        inner = ", ".join(f"{k}={v}" for k, v in opts.get("flow_options", {}).items())
        return f"{opts['flow']}({inner}) on whitened coordinates"
    return str(cfg.get("name"))


def infer(
    target: Any,
    dim: int | None = None,
    *,
    flow: str = "auto",
    objective: str = "kl",
    precondition: str = "auto",
    steps: int | None = None,
    time_budget: float | None = None,
    seed: int | None = None,
    progress: bool = True,
    config: InferConfig | None = None,
) -> Inference:
    """Fit a flow to ``target`` with no tuning and say whether its draws can be trusted.

    Args:
        target: a callable θ (n, d) ↦ log p̃(θ) (n,), a :class:`~vi_flows.targets.Target`, a
            torch distribution, or a registered name such as ``"posteriordb:eight_schools-..."``.
        dim: the dimension (needed for a bare callable).
        flow: a family name for :func:`vi_flows.flows.build`, or ``"auto"`` (:func:`auto_flow`).
        objective: any loss name in :data:`vi_flows.losses.LOSSES` (``"kl"``, ``"stl"``,
            ``"iw"``, ``"renyi"``, ``"chi2"``, ``"forward"``, ``"fab"``, ...). ``"fab"`` gets
            the turnkey AIS settings and replay buffer of
            :func:`vi_flows.losses_mass.fab_for_dim` and a Student-t base
            (:data:`vi_flows.losses_mass.FAB_BASE`).
        precondition: ``"auto"``, ``"laplace"``, ``"pilot"`` or ``"none"``
            (:func:`vi_flows.precondition.choose`).
        steps: a fixed number of steps (constant step size for half, cosine decay for the rest);
            ``None``: stop by the ELBO-plateau rule
            (:class:`~vi_flows.infer_config.PlateauSchedule`), ``time_budget`` or
            ``config.max_steps``.
        time_budget: wall-clock seconds for the whole call (conditioning included).
        seed: seeds torch's global RNG (the flow's initial weights and every draw).
        progress: show a progress bar during the fit.
        config: the remaining settings (:class:`InferConfig`).

    Returns:
        An :class:`Inference`. Warns (``UserWarning``) when the verdict is unreliable.
    """
    start = time.perf_counter()
    if config is not None and not isinstance(config, InferConfig):
        raise TypeError(f"config must be None or an InferConfig, got {type(config).__name__}")
    cfg = config if config is not None else InferConfig()
    check_integer("steps", steps, 1, or_none=True)
    if time_budget is not None and not positive_number(time_budget):
        raise ValueError(f"time_budget must be None or a finite number > 0, got {time_budget!r}")
    check_integer("seed", seed, 0, or_none=True)
    loss = get_loss(objective)  # an unknown name fails here, listing the known ones
    tgt = as_target(target, dim)
    if objective == "fab":  # the turnkey AIS settings and replay buffer (fab_for_dim)
        loss = fab_for_dim(tgt.dim, cfg.num_samples)
    if seed is not None:
        torch.manual_seed(seed)
    family, options = auto_flow(tgt.dim) if flow == "auto" else (flow, {})
    flows.FLOWS.get(family)  # fail before any work on an unknown family
    heavy = cfg.base == "student-t" or objective == "fab" or isinstance(objective, FAB)
    if family == "mixture" and heavy:
        raise ValueError(
            "infer: flow='mixture' needs the normal base (its component choice reuses ξ₁ ~ "
            "N(0, 1)), and objective='fab' or base='student-t' gives the flow a Student-t one; "
            "use another flow family there, or objective='mixture-kl' with the mixture"
        )
    cond = choose(tgt, tgt.dim, precondition)
    if cfg.base == "student-t":
        options = {**options, "base": "student-t", "df": 5.0, "learn_df": True}
    if objective == "fab" or isinstance(objective, FAB):  # D₂ needs heavy tails: FAB_BASE
        options = {**options, **FAB_BASE}
    q = precondition_flow(family, tgt.dim, cond, options)
    mixture = split_mixture(q)
    if mixture is not None and len(cond.modes) > 1:  # one component per mode found
        mix = mixture[0]
        locs = torch.stack([m for m, _ in cond.modes[: len(mix.components)]]) - cond.loc
        z = torch.linalg.solve_triangular(cond.scale_tril, locs.T, upper=False).T
        mix.start_at(z.to(mix.logits.dtype))
    lr = cfg.lr if cfg.lr is not None else (1e-2 if "gaussian" in family else 3e-3)
    ctl = PlateauSchedule(cfg, steps, time_budget, start, clock=time.perf_counter)
    history = fit(
        q,
        tgt,
        ctl.end if steps is not None else cfg.max_steps,
        loss=loss,
        num_samples=cfg.num_samples,
        lr=lr,
        lr_schedule=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, ctl.factor),
        callback=ctl,
        mask_fraction=cfg.mask_fraction,
        max_bad_steps=cfg.max_bad_steps,
        progress=progress,
    )
    draws, log_w, nonfinite = log_weights(q, tgt, cfg.eval_samples)
    finite = log_w[torch.isfinite(log_w)]
    if finite.numel() < 2:
        raise ValueError("infer: fewer than 2 evaluation draws have a finite log p̃")
    diagnostics = from_log_weights(finite, tgt.log_z)
    checks = moment_check(draws, *defensive_log_weights(q, tgt, cfg.eval_samples))
    misses = missed_modes(q, tgt, cond.modes, diagnostics.log_z)
    result = Inference(
        flow=q,
        target=tgt,
        history=history,
        diagnostics=diagnostics,
        precondition=cond,
        objective=objective if isinstance(objective, str) else repr(objective),
        seconds=time.perf_counter() - start,
        stop_reason=ctl.reason,
        nonfinite=nonfinite,
        **checks,
        missed_modes=misses,
        modes_unchecked=len(cond.modes) > 1 and not q.has_log_prob,
        _draws=draws,
        _log_w=log_w,
    )
    if not result.verdict.startswith(("good", "usable")):
        warnings.warn(f"infer: {result.verdict}", UserWarning, stacklevel=2)
    return result


def precondition_flow(
    family: str, dim: int, cond: Preconditioner, options: dict[str, Any]
) -> flows.Flow:
    """A fresh flow of ``family`` composed with ``cond``'s affine (see :func:`precondition`)."""
    return precondition(family, dim, cond.loc, cond.scale_tril, **options)
