r"""Mass-covering losses: Rényi / VR bound, forward KL, χ² (α = 2) and FAB.

Reverse KL (``kl``) is mode seeking: q is never penalized for missing a mode of p. The losses here
weigh regions where p has mass and q has little, so fitted flows cover modes. They implement the
:class:`~vi_flows.losses.Loss` protocol and are registered in :data:`~vi_flows.losses.LOSSES`
(``renyi``, ``forward``, ``chi2``, ``fab``). Throughout, w = p̃_β / q with p̃_β = p̃^β (β is the
``fit`` temperature) and softmax weights w̄_i = w_i / Σ_j w_j.

Which estimators are unbiased: ``renyi`` is the exact reparameterization gradient of the n-sample
VR bound it states (unbiased for that bound; the bound itself tends to the Rényi objective as
n → ∞); ``forward``, ``chi2`` and ``fab`` use self-normalized importance weights, so their
gradients are consistent with an O(1/n) bias (the ratio of two unbiased means).

>>> import torch
>>> from vi_flows.flows import build
>>> q = build("gaussian", 2)
>>> out = Chi2()(q, lambda x: -0.5 * (x - 1).square().sum(-1), 128)
>>> out.loss.backward()
>>> bool(q.transform.loc.grad.abs().sum() > 0)
True
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from vi_flows.ais import AISResult, adapt_step_sizes, ais
from vi_flows.losses import LOSSES, LossOutput
from vi_flows.objectives import LogProb, Reparameterized, check_log_prob_output, elbo_terms

__all__ = ["FAB", "FAB_BASE", "Chi2", "Forward", "Renyi", "fab_for_dim"]


@LOSSES.register("renyi")
class Renyi:
    r"""The variational Rényi (VR) bound of Li & Turner (NeurIPS 2016), reparameterized:

    .. math::
        \hat{\mathcal L}_α = \frac{1}{1−α} \log \frac1n \sum_{i=1}^n w_i^{1−α},
        \quad θ_i = h_φ(ξ_i),\ w_i = p̃_β(θ_i)/q_φ(θ_i).

    E[L̂_α] ≤ log Z for α ≥ 0 (maximized: loss = −L̂_α); α = 0 is the IWAE bound (Burda et al.
    2016; ``iw`` is its DReG-gradient variant), α → 1 the ELBO (``kl``); for α < 0 it is an upper
    bound (α = −1: the χ² upper bound CUBO of Dieng et al. 2017), so it is minimized. Gradient:
    ∇L̂_α = Σ_i softmax((1−α) log w)_i ∇_φ log w_i with θ_i reparameterized, the exact gradient
    of the n-sample bound. Smaller α weighs low-q regions more: more mass-covering.

    Args:
        alpha: α (any real; 1 is reverse KL).
    """

    def __init__(self, alpha: float = 0.5) -> None:
        if not math.isfinite(alpha):
            raise ValueError(f"renyi: alpha must be finite, got {alpha}")
        self.alpha = float(alpha)

    def __call__(
        self, q: Reparameterized, log_prob: LogProb, num_samples: int, *, beta: float = 1.0
    ) -> LossOutput:
        theta, log_p, log_q = elbo_terms(q, log_prob, num_samples)
        log_w = beta * log_p - log_q
        if self.alpha == 1.0:
            bound = log_w.mean()
        else:
            lse = torch.logsumexp((1.0 - self.alpha) * log_w, 0) - math.log(len(log_w))
            bound = lse / (1.0 - self.alpha)
        loss = bound if self.alpha < 0 else -bound
        return LossOutput(loss, theta, log_p, log_q, (log_p - log_q).detach().mean())

    def __repr__(self) -> str:
        return f"Renyi(alpha={self.alpha})"


def _snis_terms(
    q: Any, log_prob: LogProb, num_samples: int, beta: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """θ ~ q (no gradient path), log p̃(θ), log q_φ(θ) (differentiable in φ) and log w (detached).

    θ is returned as a leaf that requires grad, so ``fit``'s gradient check can inspect it."""
    with torch.no_grad():
        x = q.sample(num_samples)
    theta = x.detach().requires_grad_(True)
    log_q = q.log_prob(theta)
    # With a graph to θ (not to φ), so fit's step-0 check sees that log p̃ depends on θ.
    log_p = log_prob(theta)
    check_log_prob_output(log_p, theta)
    return theta, log_p, log_q, (beta * log_p - log_q).detach()


@LOSSES.register("forward")
class Forward:
    r"""Forward (inclusive) KL(p_β‖q) by self-normalized importance sampling from q itself:

    .. math::
        ∇_φ KL(p‖q_φ) = −E_p[∇_φ \log q_φ(θ)]
        ≈ −\sum_i \bar w_i ∇_φ \log q_φ(θ_i),\quad θ_i \sim q_φ \text{ (not reparameterized)},

    i.e. loss = −Σ_i sg(w̄_i) log q_φ(θ_i). The self-normalized weights make the gradient biased
    by O(1/n) (consistent as n → ∞); with a q that misses a mode entirely no weight can reveal it,
    so this is mass-*covering* once q overlaps p, not mode-*finding* (see ``fab``). Needs
    ``q.sample`` and ``q.log_prob`` (an invertible flow). Reference: e.g. Jerfel et al. (UAI 2021),
    "Variational refinement for importance sampling using the forward KL".
    """

    power = 1.0

    def __call__(
        self, q: Any, log_prob: LogProb, num_samples: int, *, beta: float = 1.0
    ) -> LossOutput:
        theta, log_p, log_q, log_w = _snis_terms(q, log_prob, num_samples, beta)
        weights = torch.softmax(self.power * log_w, 0)
        loss = -(weights * log_q).sum()
        return LossOutput(loss, theta, log_p, log_q, (log_p - log_q).detach().mean())

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@LOSSES.register("chi2")
class Chi2(Forward):
    r"""The α = 2 divergence D₂(p_β‖q) = log ∫ p²/q − 2 log Z = log(1 + χ²(p‖q)), minimized by
    self-normalized importance sampling from q:

    .. math::
        ∇_φ D_2 = −\frac{E_q[w^2 ∇_φ \log q_φ]}{E_q[w^2]}
        ≈ −\sum_i \mathrm{softmax}(2 \log w)_i\, ∇_φ \log q_φ(θ_i),\quad θ_i \sim q_φ,

    loss = −Σ_i sg(softmax(2 log w)_i) log q_φ(θ_i): biased by O(1/n), consistent. The weights
    w² make it more mass-covering than ``forward`` (it penalizes q ≪ p quadratically), and also
    higher-variance; ``fab`` estimates the same gradient with AIS targeting p²/q, which is where
    the variance goes down. Minimizing χ² is the CHIVI objective of Dieng et al. (NeurIPS 2017);
    this score-function form is Midgley et al. (ICLR 2023), Eq. 5, with q as the proposal.
    """

    power = 2.0


class _Buffer:
    """The prioritized replay buffer of FAB (Midgley et al. 2023, Alg. 2), FIFO with capacity.

    Holds AIS samples x with their log-weights log w for the target p̃²/q (relative to the q
    whose log-density is stored as ``log_q``), so weights can be re-targeted when q changes.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.x: Tensor | None = None
        self.log_w = self.log_q = torch.empty(0)
        self.pending: Tensor | None = None  # indices drawn last call, whose log q is stale

    def __len__(self) -> int:
        return 0 if self.x is None else len(self.x)

    def add(self, x: Tensor, log_w: Tensor, log_q: Tensor) -> None:
        if self.x is None:
            self.x, self.log_w, self.log_q = x, log_w, log_q
        else:
            self.x = torch.cat([self.x, x])[-self.capacity :]
            self.log_w = torch.cat([self.log_w, log_w])[-self.capacity :]
            self.log_q = torch.cat([self.log_q, log_q])[-self.capacity :]
        self.pending = None  # FIFO shifted the indices; the stale entries are a handful

    @torch.no_grad()
    def refresh(self, q: Any) -> None:
        """After q changed, move the last-drawn entries' weights from p²/q_old to p²/q_new
        (w ← w · q_old/q_new, the log-ratio clipped at log 10 as in FAB's code)."""
        if self.pending is None:
            return
        idx = self.pending.unique()
        new = q.log_prob(self.x[idx]).double()
        self.log_w[idx] += (self.log_q[idx] - new).clamp(max=math.log(10.0))
        self.log_q[idx] = new
        self.pending = None

    def draw(self, n: int) -> Tensor:
        idx = torch.multinomial(torch.softmax(self.log_w, 0), n, replacement=True)
        self.pending = idx
        return idx


@LOSSES.register("fab")
class FAB:
    r"""Flow AIS Bootstrap (Midgley et al., ICLR 2023): the α = 2 divergence with AIS targeting
    p̃²/q as the proposal, optionally with a prioritized replay buffer.

    The minimizer of D₂(p‖q) = log ∫ p²/q (up to a constant) has gradient
    ∇_φ D₂ = −E_{g}[∇_φ \log q_φ] with g ∝ p²/q_φ, the distribution that minimizes the variance
    of importance weights for estimating Z. AIS from q to g (:func:`vi_flows.ais.ais` with
    α = 2, HMC) gives samples x_i and weights w_i, and

    .. math::
        \mathcal L(φ) = −\sum_i \bar w_i \log q_φ(x_i), \quad \bar w = \mathrm{softmax}(\log w),

    with x_i, w_i held fixed (sg): a self-normalized, O(1/n)-biased, consistent estimator. Because
    AIS *moves* the samples towards p²/q — which is large exactly where q is too small — it finds
    mass q misses, unlike ``chi2``, which can only reweight q's own draws.

    With ``buffer_size > 0`` (Alg. 2 of the paper) each AIS pass adds its samples to a FIFO buffer
    and is followed by ``updates_per_ais`` gradient steps on batches drawn ∝ w from the buffer;
    after each step the drawn entries' log-weights move to the new q by log w += log q_old − log
    q_new, and the loss uses the importance ratio q_old(x)/q_φ(x) so that the gradient still
    targets p²/q_φ. The object is stateful (buffer, step sizes carried between AIS calls and
    adapted by :func:`vi_flows.ais.adapt_step_sizes`): use one per fit (``get_loss("fab")`` makes
    a fresh one).

    **Tempering** (``beta`` < 1) moves the divergence's order, not a temperature on log p̃ as in
    the other losses: the AIS path ends at p̃^{2β} q^{1−2β}, the proposal of the α = 2β divergence
    D_{2β}(p‖q) — q itself at β = 0, p at β = ½ (the forward KL), p²/q at β = 1. Each of these is
    a proper density for β ≤ ½ (Hölder), where the tempered (p̃^β)²/q would not be (at β = 0 it
    is 1/q). The replay buffer's weights are for p²/q, so a buffered FAB refuses β ≠ 1.

    Args:
        num_temperatures: AIS temperatures T.
        transition: AIS kernel (``"hmc"``, ``"mala"``, ``"rwm"``).
        leapfrog_steps: HMC leapfrog steps.
        num_steps: MCMC steps per temperature.
        target_accept: acceptance rate the step sizes adapt to (default per kernel).
        buffer_size: replay capacity (0: no buffer, every step runs AIS).
        updates_per_ais: gradient steps per AIS pass when buffering.
        min_buffer: with a buffer, train on fresh AIS samples until it holds this many.
    """

    def __init__(
        self,
        num_temperatures: int = 8,
        transition: str = "hmc",
        leapfrog_steps: int = 5,
        num_steps: int = 1,
        target_accept: float | None = None,
        buffer_size: int = 0,
        updates_per_ais: int = 4,
        min_buffer: int = 0,
    ) -> None:
        if int(num_temperatures) < 1:
            raise ValueError(f"fab: num_temperatures must be >= 1, got {num_temperatures}")
        if buffer_size < 0 or updates_per_ais < 1:
            raise ValueError("fab: buffer_size must be >= 0 and updates_per_ais >= 1")
        self.options = {
            "num_temperatures": int(num_temperatures),
            "transition": transition,
            "leapfrog_steps": int(leapfrog_steps),
            "num_steps": int(num_steps),
        }
        self.target_accept = target_accept
        self.step_sizes: Tensor | None = None
        self.buffer = _Buffer(int(buffer_size)) if buffer_size else None
        self.updates_per_ais, self.min_buffer = int(updates_per_ais), int(min_buffer)
        self.calls = 0
        self.last: AISResult | None = None

    def run_ais(self, q: Any, log_prob: LogProb, n: int, beta: float) -> AISResult:
        """One AIS pass from q to p̃^{2β} q^{1−2β} (p̃²/q at β = 1), with the step sizes carried
        over from the last."""
        first = self.step_sizes is None
        res = ais(  # the path q → p̃^{2β} q^{1−2β} (class docstring, "Tempering")
            log_prob, q, n, alpha=2.0 * beta, step_size=self.step_sizes,
            tune=1 if first else 0, tune_n=min(n, 256), target_accept=self.target_accept,
            **self.options,
        )  # fmt: skip
        goal = (
            self.target_accept
            or {"hmc": 0.65, "mala": 0.57, "rwm": 0.3}[self.options["transition"].strip().lower()]
        )
        self.step_sizes = adapt_step_sizes(res.step_sizes, res.acceptance, goal)
        self.last = res
        return res

    def __call__(
        self, q: Any, log_prob: LogProb, num_samples: int, *, beta: float = 1.0
    ) -> LossOutput:
        buf = self.buffer
        if buf is not None and beta != 1.0:
            raise ValueError(
                f"fab: tempering (beta = {beta}) needs buffer_size = 0: the replay buffer's "
                "weights are for p²/q (beta = 1)"
            )
        fresh = buf is None or len(buf) < self.min_buffer
        if buf is not None:
            buf.refresh(q)
        if fresh or self.calls % self.updates_per_ais == 0:
            res = self.run_ais(q, log_prob, num_samples, beta)
            if buf is not None:
                with torch.no_grad():
                    log_q = q.log_prob(res.samples).double()
                buf.add(res.samples, res.log_weights, log_q)
        self.calls += 1
        assert self.last is not None
        if fresh:
            x, log_w, log_q_old = self.last.samples, self.last.log_weights, None
        else:
            idx = buf.draw(num_samples)
            x, log_w, log_q_old = buf.x[idx], None, buf.log_q[idx]
        theta = x.detach().requires_grad_(True)
        log_q = q.log_prob(theta)
        log_p = log_prob(theta)  # a graph to θ only (fit's step-0 differentiability check)
        check_log_prob_output(log_p, theta)
        if log_q_old is None:  # fresh AIS samples: self-normalized AIS weights
            weights = torch.softmax(log_w, 0).to(log_q)
        else:  # buffer draws ∝ w already; correct from p²/q_old to p²/q_φ
            weights = torch.softmax((log_q_old - log_q.detach().double()), 0).to(log_q)
        loss = -(weights * log_q).sum()
        elbo = self.last.is_log_weights.mean()  # from the last AIS pass's initial draws x₀ ~ q
        return LossOutput(loss, theta, log_p, log_q, elbo.to(log_q))

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        size = 0 if self.buffer is None else self.buffer.capacity
        return f"FAB({opts}, buffer_size={size})"


#: The base distribution of a flow trained with ``fab`` (``flows.build(..., **FAB_BASE)``):
#: independent Student-t(ν) coordinates, ν learned from 5. D₂(p‖q) = log ∫ p²/q is finite only
#: where q's tails are at least as heavy as p²'s; for a Gaussian-tailed q it is infinite on every
#: target with heavier-than-Gaussian tails (Neal's funnel: p's x_i marginals are log-normal scale
#: mixtures) and wherever q starts narrower than p/√2. The AIS target p²/q is then improper, its
#: chains run outwards, q is fitted to them and the next pass runs further: on Funnel-10 a
#: Gaussian-base realnvp reached |v| ~ 10⁵ within 700 steps, where p̃ underflows to 0. A
#: polynomial tail keeps p²/q integrable on such targets (against a Student-t(ν_p) p it needs
#: ν < 2ν_p). ν is learned with the flow (the α = 2 loss is a weighted maximum likelihood on the
#: AIS draws): on a Student-t(3) target it settles near 3. It does not return to light tails on
#: light-tailed targets (on ManyWell-32 it fell to 2.2), which costs some draws in the far tails
#: there — where a diverging fit would cost all of them.
FAB_BASE: dict[str, Any] = {"base": "student-t", "df": 5.0, "learn_df": True}


def fab_for_dim(dim: int, num_samples: int = 256) -> FAB:
    """FAB with the settings the turnkey path uses (``infer(..., objective="fab")``).

    The fab-jax defaults (Midgley et al.'s ``experiments/config``): HMC with 5 leapfrog steps and
    one outer step, step sizes adapted to 65% acceptance, linear β spacing, T = 8 temperatures
    (their ManyWell-32 setting), 4 gradient steps per AIS pass, weight adjustments clipped at 10.
    The buffer is smaller than their 400 batches (filled after 40) because a CPU run takes far
    fewer steps: 64 batches (64·``num_samples``), replay after 4. ``dim`` is accepted so the rule
    can grow with d; today the settings do not depend on it (the paper uses T = 8 at d = 32).
    The flow it trains should have the :data:`FAB_BASE` base (``infer`` builds it so).
    """
    del dim  # same settings at every d for now (see the docstring)
    return FAB(
        num_temperatures=8,
        buffer_size=64 * num_samples,
        updates_per_ais=4,
        min_buffer=4 * num_samples,
    )
