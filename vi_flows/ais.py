r"""Annealed importance sampling (Neal 2001) from a proposal q to an unnormalized target p̃.

Geometric path over temperatures 0 = β₀ < β₁ < … < β_T = 1 towards the target
π(x) = p̃(x)^α q(x)^{1−α} (α = 1: p̃ itself; α = 2: FAB's p̃²/q, Midgley et al. 2023):

.. math::
    \log π_t(x) = (1 − αβ_t) \log q(x) + αβ_t \log p̃(x).

Each of n chains starts at x₀ ~ q; at temperature t its log-weight gains
(β_t − β_{t−1})·(log π(x) − log q(x)) and then x moves by an MCMC kernel that leaves π_t invariant
(``hmc``, ``mala`` or ``rwm``, in the :data:`TRANSITIONS` registry). Then
Z_π ≈ (1/n) Σ_i w_i, unbiased, and the weighted final states are samples of π. All n chains move
together as one batch: the only Python loops are over temperatures and leapfrog steps.

**Step-size adaptation.** Each temperature t has its own scalar step size ε_t. ``tune`` pilot
passes (on ``tune_n`` fresh chains, discarded) adapt them by a Robbins–Monro rule on log ε,

.. math:: \log ε_t ← \log ε_t + \mathrm{clip}(\bar a_t − a^*, −\log 2, 0.1),

after every MCMC step at temperature t, where ā_t is the mean over chains of the Metropolis
acceptance probability min(1, r) and a* the target rate (0.65 HMC, 0.57 MALA, 0.3 RWM). Steps
shrink fast and grow slowly, because HMC's acceptance falls off a cliff once ε passes the
stability limit of the leapfrog integrator. In the first pass ε_t starts from the adapted
ε_{t−1} (neighbouring temperatures need similar steps). The returned run then uses the adapted
ε frozen, so its weights stay unbiased. A caller that runs AIS repeatedly (FAB) instead carries
ε from call to call with :func:`adapt_step_sizes` and ``tune=0``.

>>> import torch
>>> q = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
>>> r = ais(lambda x: -0.5 * (x - 1).square().sum(-1), q, 256, num_temperatures=4)
>>> abs(r.log_z - math.log(2 * math.pi)) < 4 * r.log_z_se + 1e-3, tuple(r.samples.shape)
(True, (256, 2))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from vi_flows.objectives import LogProb, as_log_prob
from vi_flows.registry import Registry

__all__ = [
    "AISResult",
    "NonFiniteWeightError",
    "Proposal",
    "TRANSITIONS",
    "adapt_step_sizes",
    "ais",
]


class NonFiniteWeightError(FloatingPointError):
    """An AIS log-weight became NaN or infinite (the message names the temperature)."""


@runtime_checkable
class Proposal(Protocol):
    """What AIS needs of q: its dimension, draws with their log-density, and log q anywhere."""

    dim: int

    def sample_and_log_prob(
        self, sample_shape: int | tuple[int, ...] = ()
    ) -> tuple[Tensor, Tensor]:
        """(x, log q(x)) for x ~ q."""
        ...

    def log_prob(self, x: Tensor) -> Tensor:
        """log q(x)."""
        ...


class _DistributionProposal:
    """A ``torch.distributions.Distribution`` as a :class:`Proposal`."""

    def __init__(self, dist: torch.distributions.Distribution) -> None:
        if len(dist.event_shape) != 1:
            raise ValueError(f"q must have event shape (d,), got {tuple(dist.event_shape)}")
        self.dist, self.dim = dist, int(dist.event_shape[0])

    def sample_and_log_prob(
        self, sample_shape: int | tuple[int, ...] = ()
    ) -> tuple[Tensor, Tensor]:
        shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
        x = self.dist.sample(shape)
        return x, self.dist.log_prob(x)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.dist.log_prob(x)


@dataclass(frozen=True)
class AISResult:
    """The output of :func:`ais` (tensors detached, float64 weights)."""

    log_z: float
    """log of the mean AIS weight: unbiased-in-Z estimate of log Z_π (log Z of p̃ when α = 1)."""
    log_z_se: float
    """Delta-method standard error sd(w)/(mean(w)√n) of log_z."""
    samples: Tensor
    """(n, d) final chain states; weighted by ``log_weights`` they target π."""
    log_weights: Tensor
    """(n,) AIS log-weights."""
    ess: float
    """Normalized effective sample size (Σw)²/(n Σw²) ∈ (0, 1]."""
    acceptance: Tensor
    """(T,) mean Metropolis acceptance probability at each temperature β₁ … β_T."""
    step_sizes: Tensor
    """(T,) the step sizes ε_t that were used."""
    betas: Tensor
    """(T + 1,) the temperatures β₀ = 0 … β_T = 1."""
    is_log_weights: Tensor
    """(n,) plain importance log-weights log p̃(x₀) − log q(x₀) at the initial draws x₀ ~ q."""

    @property
    def is_log_z(self) -> float:
        """The plain importance-sampling log Z from the same initial draws (beside AIS's)."""
        n = self.is_log_weights.numel()
        return float(torch.logsumexp(self.is_log_weights, 0) - math.log(n))

    @classmethod
    def merge(cls, runs: list[AISResult]) -> AISResult:
        """Pool independent runs over the same temperatures into one run of Σnᵢ chains.

        Each run's weights are unbiased for Z_π, so the pooled mean weight is too: log Z, its
        se and the ESS are recomputed from all the weights; acceptance rates are averaged with
        weights nᵢ. This makes AIS anytime: a caller with a wall-clock budget runs batches of
        chains with the step sizes of the first batch (``step_size=r.step_sizes, tune=0``) and
        merges what finished.

        >>> q = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
        >>> a = ais(lambda x: -0.5 * x.square().sum(-1), q, 64, num_temperatures=3)
        >>> b = ais(lambda x: -0.5 * x.square().sum(-1), q, 32, step_size=a.step_sizes,
        ...         num_temperatures=3, tune=0)
        >>> AISResult.merge([a, b]).log_weights.shape
        torch.Size([96])
        """
        if not runs:
            raise ValueError("runs must hold at least one AISResult")
        first = runs[0]
        for r in runs[1:]:
            if r.betas.shape != first.betas.shape or not torch.equal(r.betas, first.betas):
                raise ValueError("runs must share the same temperatures (betas) to be merged")
        log_w = torch.cat([r.log_weights for r in runs])
        log_z, se, ess = _log_z_and_se(log_w)
        sizes = torch.tensor([r.log_weights.numel() for r in runs], dtype=torch.float64)
        acceptance = sum(s * r.acceptance for s, r in zip(sizes, runs, strict=True)) / sizes.sum()
        return cls(
            log_z, se, torch.cat([r.samples for r in runs]), log_w, ess, acceptance,
            first.step_sizes, first.betas, torch.cat([r.is_log_weights for r in runs]),
        )  # fmt: skip


def _log_z_and_se(log_w: Tensor) -> tuple[float, float, float]:
    n = log_w.numel()
    w = (log_w - log_w.max()).exp()
    log_z = float(torch.logsumexp(log_w, 0) - math.log(n))
    se = float(w.std() / w.mean()) / math.sqrt(n) if n > 1 else math.nan
    ess = float(w.sum() ** 2 / (w.square().sum() * n))
    return log_z, se, ess


class _Path:
    """Evaluates log q and log p̃ (and their gradients) at chain states, and combines them."""

    def __init__(self, log_prob: LogProb, q: Proposal, alpha: float, need_grad: bool) -> None:
        self.log_prob, self.q, self.alpha, self.need_grad = log_prob, q, alpha, need_grad

    def evaluate(self, x: Tensor) -> dict[str, Tensor]:
        # A diverged leapfrog trajectory leaves non-finite states: evaluate at 0 instead and mark
        # them with log density −inf, so the Metropolis step rejects them.
        finite = torch.isfinite(x).all(-1)
        safe = torch.where(finite[:, None], x, torch.zeros_like(x)).detach()
        if not self.need_grad:
            with torch.no_grad():
                lq, lp = self.q.log_prob(safe), self.log_prob(safe)
            grads: dict[str, Tensor] = {}
        else:
            with torch.enable_grad():
                safe.requires_grad_(True)
                lq, lp = self.q.log_prob(safe), self.log_prob(safe)
                glq = torch.autograd.grad(lq.sum(), safe, retain_graph=True, allow_unused=True)[0]
                glp = torch.autograd.grad(lp.sum(), safe, allow_unused=True)[0]
            zero = torch.zeros_like(x)
            grads = {"glq": zero if glq is None else glq, "glp": zero if glp is None else glp}
        bad = torch.full_like(lq, -math.inf)
        lq = torch.where(finite, lq.detach(), bad)
        lp = torch.where(finite, lp.detach(), bad)
        return {"x": x.detach(), "lq": lq, "lp": lp, **grads}

    def coefficients(self, beta: float) -> tuple[float, float]:
        return 1.0 - self.alpha * beta, self.alpha * beta

    def log_pi(self, s: dict[str, Tensor], beta: float) -> Tensor:
        a, b = self.coefficients(beta)
        out = a * s["lq"] + b * s["lp"]
        return torch.where(torch.isnan(out), -math.inf, out)

    def grad(self, s: dict[str, Tensor], beta: float) -> Tensor:
        a, b = self.coefficients(beta)
        return a * s["glq"] + b * s["glp"]


def _accept(
    path: _Path, s: dict[str, Tensor], new: dict[str, Tensor], log_ratio: Tensor
) -> tuple[dict[str, Tensor], Tensor]:
    """Metropolis step per chain; a NaN/inf proposal is rejected. Returns (state, accept prob)."""
    ok = torch.isfinite(log_ratio)
    if "glq" in new:
        ok &= torch.isfinite(new["glq"]).all(-1) & torch.isfinite(new["glp"]).all(-1)
    log_ratio = torch.where(ok, log_ratio, -math.inf)
    prob = log_ratio.clamp(max=0.0).exp()
    take = torch.rand_like(prob).log() < log_ratio
    out = {k: torch.where(take.view(-1, *([1] * (v.ndim - 1))), new[k], v) for k, v in s.items()}
    return out, prob


Kernel = Callable[[_Path, dict[str, Tensor], float, float, int], tuple[dict[str, Tensor], Tensor]]
#: MCMC kernels ``kernel(path, state, beta, step_size, leapfrog_steps) -> (state, accept_prob)``.
TRANSITIONS: Registry[Kernel] = Registry("AIS transition")
_TARGET_ACCEPT = {"hmc": 0.65, "mala": 0.57, "rwm": 0.3}


@TRANSITIONS.register("rwm")
def _rwm(path: _Path, s: dict[str, Tensor], beta: float, eps: float, _: int) -> Any:
    """Random-walk Metropolis: x' = x + ε z."""
    new = path.evaluate(s["x"] + eps * torch.randn_like(s["x"]))
    return _accept(path, s, new, path.log_pi(new, beta) - path.log_pi(s, beta))


@TRANSITIONS.register("mala")
def _mala(path: _Path, s: dict[str, Tensor], beta: float, eps: float, _: int) -> Any:
    """Metropolis-adjusted Langevin: x' = x + ½ε²∇log π_t(x) + ε z, with the MH correction."""
    g = path.grad(s, beta)
    x_new = s["x"] + 0.5 * eps**2 * g + eps * torch.randn_like(g)
    new = path.evaluate(x_new)
    g_new = path.grad(new, beta)
    fwd = -(x_new - s["x"] - 0.5 * eps**2 * g).square().sum(-1) / (2 * eps**2)
    bwd = -(s["x"] - x_new - 0.5 * eps**2 * g_new).square().sum(-1) / (2 * eps**2)
    return _accept(path, s, new, path.log_pi(new, beta) - path.log_pi(s, beta) + bwd - fwd)


@TRANSITIONS.register("hmc")
def _hmc(path: _Path, s: dict[str, Tensor], beta: float, eps: float, leapfrog: int) -> Any:
    """Hamiltonian Monte Carlo, unit mass, ``leapfrog`` leapfrog steps of size ε."""
    p0 = torch.randn_like(s["x"])
    p = p0 + 0.5 * eps * path.grad(s, beta)
    new = s
    for i in range(leapfrog):
        new = path.evaluate(new["x"] + eps * p)
        if i < leapfrog - 1:
            p = p + eps * path.grad(new, beta)
    p = p + 0.5 * eps * path.grad(new, beta)
    log_ratio = (
        path.log_pi(new, beta) - path.log_pi(s, beta) - 0.5 * (p.square() - p0.square()).sum(-1)
    )
    return _accept(path, s, new, log_ratio)


def adapt_step_sizes(step_sizes: Tensor, acceptance: Tensor, target_accept: float) -> Tensor:
    """One Robbins–Monro update of log ε_t towards the target acceptance rate (see the module
    docstring): log ε ← log ε + clip(ā − a*, −log 2, 0.1); NaN acceptance leaves ε."""
    delta = (acceptance - target_accept).clamp(-math.log(2), 0.1)
    return step_sizes * torch.nan_to_num(delta, nan=0.0).exp()


def _run(
    path: _Path, q: Proposal, n: int, betas: Tensor, eps: Tensor, kernel: Kernel, opts: dict,
    adapt_to: float | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """One AIS pass; with ``adapt_to`` it adapts ``eps`` in place after every MCMC step."""
    with torch.no_grad():
        x0, _ = q.sample_and_log_prob(n)
    s = path.evaluate(x0.detach())
    is_log_w = (s["lp"] - s["lq"]).double()
    log_w = torch.zeros(n, dtype=torch.float64, device=x0.device)
    acceptance = torch.zeros(len(betas) - 1, dtype=torch.float64)
    for t in range(1, len(betas)):
        b_prev, b = float(betas[t - 1]), float(betas[t])
        # log π_b − log π_{b'} = α (b − b') (log p̃ − log q), without cancelling large terms
        log_w = log_w + path.alpha * (b - b_prev) * (s["lp"] - s["lq"]).double()
        # −inf is a legitimate zero weight (a state where p̃ underflows); NaN and +inf are not,
        # and neither is every weight being zero.
        bad = torch.isnan(log_w) | (log_w == math.inf)
        if bad.any() or (log_w == -math.inf).all():
            count = int(bad.sum()) if bad.any() else n
            raise NonFiniteWeightError(
                f"AIS log-weight non-finite at temperature {t} of {len(betas) - 1} (β={b:.4g}) "
                f"for {count} of {n} chains: log p̃ or log q is NaN/+inf (or every weight is 0) at "
                "the chains' states (check the target's support and the proposal)"
            )
        if opts["first_pass"] and t > 1:
            eps[t - 1] = eps[t - 2]
        rates = []
        for _ in range(opts["num_steps"]):
            s, prob = kernel(path, s, b, float(eps[t - 1]), opts["leapfrog_steps"])
            rate = prob.double().mean()
            rates.append(float(rate))
            if adapt_to is not None:
                eps[t - 1 : t] = adapt_step_sizes(eps[t - 1 : t], rate.reshape(1), adapt_to)
        acceptance[t - 1] = sum(rates) / len(rates)
    return s["x"], log_w, is_log_w, acceptance, eps


def ais(
    log_prob: Any,
    q: Proposal | torch.distributions.Distribution,
    n: int,
    *,
    num_temperatures: int = 16,
    transition: str = "hmc",
    num_steps: int = 1,
    leapfrog_steps: int = 5,
    step_size: float | Tensor | None = None,
    target_accept: float | None = None,
    tune: int = 3,
    tune_n: int = 256,
    betas: Tensor | None = None,
    alpha: float = 1.0,
) -> AISResult:
    """Annealed importance sampling from ``q`` to ``p̃^α q^{1−α}`` (α = 1: to p̃).

    Args:
        log_prob: the target (anything with ``log_prob``) or a callable x (n, d) ↦ log p̃(x) (n,).
        q: the proposal: a flow (anything with ``sample_and_log_prob`` and ``log_prob``) or a
            ``torch.distributions.Distribution`` with event shape (d,).
        n: number of chains (all run as one batch).
        num_temperatures: T ≥ 1, the number of annealing steps; T = 1 is plain importance
            sampling followed by one MCMC move at β = 1.
        transition: ``"hmc"``, ``"mala"`` or ``"rwm"``.
        num_steps: MCMC steps per temperature.
        leapfrog_steps: leapfrog steps per HMC move.
        step_size: initial ε (a number, or a (T,) tensor of per-temperature values); default
            0.5·d^{-1/4} for HMC/MALA and 2.38·d^{-1/2} for RWM.
        target_accept: acceptance rate the adaptation aims for (default 0.65 HMC, 0.57 MALA,
            0.3 RWM).
        tune: number of pilot passes that adapt the step sizes (0: use ``step_size`` as given).
        tune_n: chains per pilot pass.
        betas: explicit temperatures (T + 1,) from 0 to 1 (overrides the linear default
            β_t = t/T).
        alpha: the path's end point p̃^α q^{1−α}; 2 gives FAB's proposal p̃²/q.

    Returns:
        :class:`AISResult`.

    Raises:
        ValueError: for num_temperatures < 1, n < 1 or malformed ``betas``.
        NonFiniteWeightError: a log-weight is NaN/inf; the message names the temperature.
        UnknownNameError: for an unknown ``transition``.
    """
    if int(num_temperatures) < 1 and betas is None:
        raise ValueError(f"num_temperatures must be >= 1, got {num_temperatures}")
    if int(n) < 1:
        raise ValueError(f"n (the number of chains) must be >= 1, got {n}")
    if num_steps < 1 or leapfrog_steps < 1 or tune < 0:
        raise ValueError("num_steps and leapfrog_steps must be >= 1 and tune >= 0")
    if not math.isfinite(alpha):  # the path p̃^α q^{1−α} needs a number
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    kernel = TRANSITIONS.get(transition)
    key = transition.strip().lower()
    if isinstance(q, torch.distributions.Distribution):
        q = _DistributionProposal(q)
    if betas is None:
        betas = torch.linspace(0.0, 1.0, int(num_temperatures) + 1, dtype=torch.float64)
    betas = torch.as_tensor(betas, dtype=torch.float64)
    if betas.ndim != 1 or len(betas) < 2 or betas[0] != 0 or betas[-1] != 1:
        raise ValueError("betas must be a 1-D increasing sequence from 0 to 1 (at least 2 values)")
    if (betas.diff() <= 0).any():
        raise ValueError("betas must be strictly increasing")
    temps = len(betas) - 1
    path = _Path(as_log_prob(log_prob), q, float(alpha), need_grad=key != "rwm")
    dim = int(q.dim)
    default = 2.38 / math.sqrt(dim) if key == "rwm" else 0.5 / dim**0.25
    eps = torch.as_tensor(default if step_size is None else step_size, dtype=torch.float64)
    eps = eps.expand(temps).clone() if eps.ndim == 0 else eps.clone()
    if eps.shape != (temps,) or not (eps > 0).all():
        raise ValueError(f"step_size must be a positive number or a ({temps},) tensor")
    goal = _TARGET_ACCEPT[key] if target_accept is None else float(target_accept)
    opts = {"num_steps": int(num_steps), "leapfrog_steps": int(leapfrog_steps)}
    for i in range(int(tune)):
        opts["first_pass"] = i == 0 and step_size is None
        _run(path, q, int(tune_n), betas, eps, kernel, opts, adapt_to=goal)
    opts["first_pass"] = False
    x, log_w, is_log_w, acceptance, eps = _run(path, q, int(n), betas, eps, kernel, opts, None)
    log_z, se, ess = _log_z_and_se(log_w)
    return AISResult(log_z, se, x, log_w, ess, acceptance, eps, betas, is_log_w)
