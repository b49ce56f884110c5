r"""Automatic temperature: α as the Lagrange multiplier of a posterior-entropy target.

**What α does in rl/.** The variational algorithms minimise over φ (rl.algorithms.base
``Algorithm.loss``: ``alpha * posterior_loss(q, log_p, ξ)`` with log p̃ = R̂/α from rl.adapter)

.. math::

    α\,\mathrm{KL}(q_φ \,\|\, p) + \text{const}
        = α\,E_q[\log q_φ(θ)] − E_q[\hat R(θ)]
        = −\big(E_q[\hat R(θ)] + α\,\mathcal H(q_φ)\big),

i.e. they maximise the surrogate return plus α times the posterior entropy, the same max-entropy
objective as SAC's with the action entropy replaced by the entropy of the weight posterior.

**The constrained problem.** Instead of fixing α, fix the entropy the posterior must keep, per
parameter (so one number serves networks of any size d):

.. math::

    \max_φ\ E_{q_φ}[\hat R(θ)] \quad \text{s.t.} \quad h(q_φ) := \mathcal H(q_φ)/d \ge h^*,
    \qquad h^* = \tfrac12 \log(2πe\,σ_*^2),

where h* is the entropy per coordinate of a Gaussian with standard deviation σ* — so the target
is set by one interpretable number, ``posterior_std_target`` = σ*, "the per-weight std the
posterior should keep". Its Lagrangian is

.. math::

    \mathcal L(φ, α) = E_{q_φ}[\hat R] + α\,d\,(h(q_φ) − h^*), \qquad α \ge 0,

whose inner maximisation over φ *is* the algorithm's update at temperature α (the constant
−α d h* does not depend on φ). The dual problem min_{α ≥ 0} max_φ 𝓛 is solved by descent on α:
∂𝓛/∂α = d (h − h*). As SAC does (Haarnoja et al. 2018b, §5), we optimise log α so that α stays
positive and a step is a relative change, and drop the positive factor α d from the gradient (it
only rescales the step size per update and would make it depend on the network size):

.. math::

    \log α_{t+1} = \operatorname{clip}\big(\log α_t − η\,(h_t − h^*)\big)

(plus the proportional term below). Entropy below target (h < h*) ⇒ α grows, which
strengthens the entropy term and widens q; above target ⇒ α shrinks towards ``min_alpha``. At
a fixed point h = h* (the constraint is active) or α = ``min_alpha`` (slack: the return does not
care about the width, as for a reward that is linear in θ, and the KKT multiplier is 0).

For a Gaussian, h − h* = (1/d) log|det A| − log σ* = log(σ̄/σ*) with σ̄ = |det A|^{1/d} the
geometric-mean std (for a diagonal posterior exactly the geometric mean of the σ_i), so one step
moves log α by η·log(σ̄/σ*).

**When to step: after every optimizer step, as SAC does.** The posterior's widths are moved by
Adam, which changes each log σ_i by up to about its learning rate per step *whatever the size of
the entropy gradient α*: a too-large α widens q at the optimizer's full speed. A dual step per
update (the first version) let a PPO update's 10 epochs × 64 minibatches = 640 Adam steps act
before α reacted: on Pendulum from α₀ = 1e-2, σ̄ went from 0.01 to 0.08 in 6 updates, and once
α had fallen to its floor nothing narrowed q again (the policy gradient hardly depends on the
width at this scale), so the sampled policies stayed noisy (final return −234 at the posterior
mean, −353 with θ ~ q, against PPO's −194; one seed). Stepping log α after every optimizer step
instead, a pure integral step meets a plant whose rate is bounded by the learning rate lr per
step; from a log α error Δ the width overshoots by about √(2Δ·lr/η) nats, and the loop
oscillates without settling where lr is large (the toy of tests/test_rl_temperature.py at Adam
lr 0.05). So the step also has a proportional term (a PI controller, as the PID Lagrangian of
Stooke et al. 2020):

.. math::

    I_{t+1} = \operatorname{clip}\big(I_t − η\,(h_t − h^*)\big), \qquad
    \log α_{t+1} = \operatorname{clip}\big(I_{t+1} − κ\,(h_t − h^*)\big),

so α falls e-fold as soon as σ̄ exceeds σ* by a fraction 1/κ, whatever the optimizer's speed,
and the integral I carries the multiplier (at a fixed point h = h*, α = e^I). With κ = 20 and
η = 0.5 the toy settles from α₀ 50× too large (≤ 35% overshoot) and from 1e-6 at Adam lr 0.005
and 0.05 alike; on Pendulum from α₀ = 1e-2 (lr 1e-3) σ̄ stayed ≤ 1.08 σ*. TRPO takes one natural
step per update, so vtrpo takes one dual step per update (its trust region bounds the width's
change per step; α then falls more slowly).

**The posterior starts at σ*.** h then starts at h* and α at ``alpha`` only decides the
direction of the first steps. By default σ* itself is not a fixed number but calibrated when a
run starts (:mod:`rl.calibration`): the width at which the initial weight noise moves the policy
by ``policy_spread_target`` in units of its own action noise, since one per-weight σ* is a
34× larger perturbation of a 256-256 ReLU HalfCheetah policy than of a 64-64 tanh Pendulum one.

The constraint is an *inequality*: when the return does not
narrow q (measured on Pendulum, MountainCarContinuous and CartPole for σ* from 0.003 to 0.1:
the policy gradient of the width is noise there), α goes to ``min_alpha`` and q keeps
σ̄ ≈ σ*, i.e. auto α then holds the weight noise at σ* and adds no entropy gradient; where the
return narrows q, α rises to the multiplier that holds σ̄ = σ*.

**Estimating h.** With q = h_φ # N(0, I_d) the entropy is exact in the base:

.. math::

    \mathcal H(q) = −E_ξ[\log q_0(ξ) − \log|\det ∂h_φ/∂ξ|]
                  = \tfrac d2 \log(2πe) + E_ξ[\log|\det ∂h_φ/∂ξ|],

so :func:`entropy_per_param` averages the log-det term only (the base entropy is known exactly,
which removes the ½|ξ|² noise of a plain −mean log q). For affine flows (``gaussian``,
``lowrank-gaussian``, ``full-gaussian``) the log-det does not depend on ξ and one evaluation is
the closed form (Σ log σ_i; Σ log D_ii + log det(I + VᵀV) by the matrix determinant lemma);
other flows use ``num_samples`` Monte Carlo draws. A state-conditioned posterior (§3.1,
θ = μ_φ(s) + σ_φ(s) ξ) gives h averaged over the states passed.

>>> temp = AutoTemperature(std_target=0.05, init_alpha=1e-3)
>>> f"{temp(0):.3g}"  # a Schedule: α for an update index
'0.001'
>>> logs = temp.update(temp.entropy_target - 1.0)  # entropy below target: α goes up
>>> temp.alpha > 1e-3
True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rl.policies import ActionMeanPolicy, BNNPolicy
from vi_flows.bases import StandardNormal
from vi_flows.flows import Flow, standard_normal_log_prob
from vi_flows.transforms import (
    Compose,
    ElementwiseAffine,
    LowerTriangularAffine,
    LowRankAffine,
    Permutation,
    Transform,
)

__all__ = [
    "AutoTemperature",
    "gaussian_entropy_per_param",
    "entropy_per_param",
    "policy_entropy_per_param",
]

#: ½ log(2πe): the entropy of N(0, 1), per coordinate.
HALF_LOG_2PIE = 0.5 * math.log(2.0 * math.pi * math.e)


def gaussian_entropy_per_param(std: float) -> float:
    """h(σ) = ½ log(2πe σ²), the entropy per coordinate of an isotropic Gaussian with std σ.

    >>> round(gaussian_entropy_per_param(1.0), 6) == round(HALF_LOG_2PIE, 6)
    True
    """
    if not std > 0:
        raise ValueError(f"std must be positive, got {std}")
    return HALF_LOG_2PIE + math.log(std)


def _constant_log_det(transform: Transform) -> bool:
    """Whether log|det ∂h/∂ξ| is the same for every ξ (affine maps, permutations, compositions)."""
    if isinstance(transform, Compose):
        return all(_constant_log_det(part) for part in transform.parts)
    return isinstance(
        transform, ElementwiseAffine | LowRankAffine | LowerTriangularAffine | Permutation
    )


@torch.no_grad()
def entropy_per_param(q: nn.Module, xi: Tensor) -> float:
    """h = H(q)/d = ½ log(2πe) + mean over the rows of ξ of log|det ∂h_φ/∂ξ| / d.

    Args:
        q: a reparameterised posterior, ``q(ξ) -> (θ, log q(θ))`` with a standard-normal base
            (a vi_flows :class:`~vi_flows.flows.Flow`, or rl.posteriors.StateGaussian).
        xi: base noise (n, d) at which to average the log-det (one row suffices when the
            log-det is constant, e.g. for affine flows; a state-conditioned posterior takes one
            row per state).
    """
    if xi.ndim != 2 or xi.shape[0] < 1 or xi.shape[1] < 1:
        raise ValueError(f"xi must have shape (n >= 1, d >= 1), got {tuple(xi.shape)}")
    _, log_q = q(xi)
    # log q = log q₀(ξ) − log|det|, so the log-det is recovered exactly from q's own output.
    log_det = standard_normal_log_prob(xi) - log_q
    return HALF_LOG_2PIE + float(log_det.mean()) / xi.shape[1]


@torch.no_grad()
def _constant_entropy_per_param(flow: Flow) -> float:
    """:func:`entropy_per_param` of a standard-normal flow whose log-det does not depend on ξ,
    without base densities: h = ½ log(2πe) + log|det| / d. A single affine map gives the log-det
    in closed form (``log_abs_det``, the forward's own sum); other compositions push ξ = 0
    through once. This runs after every optimizer step, where the flow's forward and two base
    densities cost twice the log-det itself. It is also the more exact value: entropy_per_param
    recovers the log-det as log q₀(ξ) − log q, a float32 difference of two numbers ~10⁴ for a
    policy network, which rounds h by ~ulp(10⁴)/d ≈ 2·10⁻⁷ nats."""
    transform = flow.transform
    if isinstance(transform, ElementwiseAffine | LowRankAffine | LowerTriangularAffine):
        ladj = transform.log_abs_det()
    else:
        ladj = transform(torch.zeros(1, flow.dim))[1][0]
    return HALF_LOG_2PIE + float(ladj) / flow.dim


def policy_entropy_per_param(
    policy: nn.Module, obs: Tensor | None = None, num_samples: int = 64
) -> float:
    """The entropy per parameter of a policy's posterior (what :class:`AutoTemperature` tracks).

    The global torch RNG is left as it was found (the draws use a fork of it).

    Args:
        policy: a BNNPolicy with a flow posterior (exact for affine flows, else ``num_samples``
            Monte Carlo draws), or an ActionMeanPolicy / AuxiliaryPolicy (averaged over ``obs``).
        obs: states for a state-conditioned posterior (ignored by BNNPolicy).
        num_samples: Monte Carlo draws for non-affine flows.

    Raises:
        ValueError: for a point mass or particles (no density, hence no entropy to target), or
            a state-conditioned posterior without ``obs``.
    """
    if not isinstance(policy, BNNPolicy | ActionMeanPolicy) or not policy.has_kl_term:
        raise ValueError(
            f"automatic temperature needs a posterior with a density; {type(policy).__name__} "
            "has none (a point mass, particles or an implicit posterior): use a constant "
            "alpha_schedule"
        )
    if not isinstance(policy, BNNPolicy) and obs is None:
        raise ValueError("obs is required for a state-conditioned (action-mean) posterior")
    # This runs after every optimizer step: where the log-det does not depend on ξ (affine flows;
    # the state-conditioned Gaussian, affine in ξ at each state) ξ = 0 gives it without a draw.
    if not isinstance(policy, BNNPolicy):
        return entropy_per_param(policy.q_at(obs), torch.zeros(obs.shape[0], policy.noise_dim))
    q = policy.q
    if isinstance(q, Flow) and _constant_log_det(q.transform):
        if isinstance(q.base, StandardNormal):
            return _constant_entropy_per_param(q)
        return entropy_per_param(q, torch.zeros(1, policy.noise_dim))
    # The draws come from a fork of the global RNG: estimating h leaves the training run's
    # random stream as it found it (a run's resume and its other draws do not depend on it).
    with torch.random.fork_rng(devices=[]):
        return entropy_per_param(q, torch.randn(num_samples, policy.noise_dim))


class AutoTemperature:
    """α as a Lagrange multiplier for the posterior entropy per parameter (module docstring).

    Call :meth:`update` after every optimizer step with the posterior's entropy per parameter
    (from :func:`policy_entropy_per_param`; rl.algorithms.base ``Algorithm.dual_step``); read
    :attr:`alpha` (or call the object with an update index, which makes it a
    ``vi_flows.schedules.Schedule``) for the next step's α.

    Args:
        std_target: σ*, the per-weight standard deviation the posterior should keep; the target
            entropy per parameter is h* = ½ log(2πe σ*²).
        init_alpha: α₀.
        lr: η, the integral gain: the step on the integral part of log α per dual step per nat
            of entropy gap (0 < η).
        kp: κ, the proportional gain: log α = I − κ (h − h*), so α falls by e^1 as soon as h
            exceeds h* by 1/κ nats (0: the pure integral step of SAC).
        min_alpha, max_alpha: α (and the integral I) are clipped to this range (α → min_alpha
            when the constraint is slack).
        max_step: bound on |Δ I| per dual step.
    """

    def __init__(
        self,
        std_target: float,
        init_alpha: float = 1e-3,
        lr: float = 0.5,
        kp: float = 20.0,
        min_alpha: float = 1e-8,
        max_alpha: float = 1.0,
        max_step: float = 1.0,
    ) -> None:
        for name, value in [
            ("std_target", std_target),
            ("init_alpha", init_alpha),
            ("lr", lr),
            ("min_alpha", min_alpha),
            ("max_step", max_step),
        ]:
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        if not (kp >= 0 and math.isfinite(kp)):
            raise ValueError(f"kp must be a finite number >= 0, got {kp}")
        if not min_alpha <= init_alpha <= max_alpha:
            raise ValueError(
                f"init_alpha must lie in [min_alpha, max_alpha] = [{min_alpha}, {max_alpha}], "
                f"got {init_alpha}"
            )
        self.std_target = float(std_target)
        self.entropy_target = gaussian_entropy_per_param(std_target)
        self.lr, self.kp, self.max_step = float(lr), float(kp), float(max_step)
        self.min_alpha, self.max_alpha = float(min_alpha), float(max_alpha)
        #: I, the integral part of log α (log α₀ at the start).
        self.log_alpha = math.log(init_alpha)
        #: h − h* at the last dual step (0 before the first).
        self.gap = 0.0
        self.updates = 0

    @property
    def alpha(self) -> float:
        """The current temperature α = exp(clip(I − κ (h − h*))) at the last measured h."""
        log_alpha = self.log_alpha - self.kp * self.gap
        return math.exp(min(max(log_alpha, math.log(self.min_alpha)), math.log(self.max_alpha)))

    def __call__(self, step: int) -> float:
        """α for the update ``step`` (the current value: α is driven by :meth:`update`)."""
        return self.alpha

    def update(self, entropy_per_param: float) -> dict[str, float]:
        """One dual step: I ← clip(I − η (h − h*)), then α = exp(clip(I − κ (h − h*)));
        returns the values to log.

        Args:
            entropy_per_param: h, the posterior entropy divided by the number of parameters.

        Returns:
            ``entropy_per_param`` (h), ``entropy_target`` (h*), ``entropy_std`` (the σ̄ with
            h = ½ log(2πe σ̄²), comparable to ``std_target``) and ``alpha_next`` (α after the step).
        """
        if not math.isfinite(entropy_per_param):
            raise ValueError(f"entropy_per_param must be finite, got {entropy_per_param}")
        gap = entropy_per_param - self.entropy_target
        step = min(max(self.lr * gap, -self.max_step), self.max_step)
        low, high = math.log(self.min_alpha), math.log(self.max_alpha)
        self.log_alpha = min(max(self.log_alpha - step, low), high)
        self.gap = gap
        self.updates += 1
        return {
            "entropy_per_param": entropy_per_param,
            "entropy_target": self.entropy_target,
            "entropy_std": math.exp(entropy_per_param - HALF_LOG_2PIE),
            "alpha_next": self.alpha,
        }

    def state_dict(self) -> dict[str, Tensor]:
        """Plain tensors only (loads with ``torch.load(weights_only=True)``)."""
        return {
            "log_alpha": torch.tensor(self.log_alpha, dtype=torch.float64),
            "gap": torch.tensor(self.gap, dtype=torch.float64),
            "updates": torch.tensor(self.updates, dtype=torch.int64),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        missing = {"log_alpha", "updates"} - set(state)
        if missing:
            raise ValueError(f"AutoTemperature state lacks {sorted(missing)}")
        self.log_alpha = float(state["log_alpha"])
        self.gap = float(state.get("gap", 0.0))  # absent in checkpoints before the P term
        self.updates = int(state["updates"])

    def __repr__(self) -> str:
        return (
            f"AutoTemperature(alpha={self.alpha:.3g}, std_target={self.std_target}, "
            f"lr={self.lr}, kp={self.kp}, range=[{self.min_alpha}, {self.max_alpha}])"
        )
