"""What every update shares: one Adam step, the value fit, and policy diagnostics.

Under several ranks (torchrun, DD-PPO style) every rank holds a share of the global batch (the
concatenation of the ranks' batches, :mod:`rl.buffer`) and computes its *share of the global
loss*: the sums over its rows divided by the global counts, so that the shares add up to the loss
of the global batch and all-reducing (summing) their gradients gives its gradient. Means logged or
used for decisions (KL for β and early stopping) are global means, so all ranks decide alike.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rl.adapter import Objective, policy_log_density, posterior_loss, reinforce_objective
from rl.buffer import Batch
from rl.calibration import session_kls
from rl.config import TrainConfig
from rl.optim import check_finite_gradient, clip_grad_norm, optimizer_step, zero_grad
from rl.policy_api import PolicyFamily
from rl.posteriors import probe_draws
from rl.temperature import AutoTemperature, policy_entropy_per_param
from rl.value import fit_value, value_loss, value_step
from vi_flows import distributed

__all__ = [
    "Algorithm",
    "adam",
    "adam_step",
    "approx_kl",
    "explained_variance",
    "global_group_means",
    "global_mean",
    "global_means",
    "share_of_mean",
    "policy_stats",
    "posterior_spread",
    "reinforce_loss",
]


def adam(params, lr: float, eps: float = 1e-8) -> torch.optim.Adam:
    """Adam with the fused kernel: one call per step instead of a Python loop over parameters
    (the optimizer was ~15 % of a PPO update in the profile of small networks)."""
    return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)


def adam_step(loss: Tensor, optimizer: torch.optim.Optimizer, max_grad_norm: float) -> float:
    """Backpropagate ``loss`` and take one optimizer step; returns the pre-clipping grad norm."""
    zero_grad(optimizer)
    loss.backward()
    return _clip_and_step(optimizer, max_grad_norm)


def _clip_and_step(optimizer: torch.optim.Optimizer, max_grad_norm: float) -> float:
    """All-reduce, clip (``max_grad_norm`` ≤ 0: no limit) and apply the gradients of the
    optimizer's parameters; returns their pre-clipping norm."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    # Several ranks: the loss is this rank's share of the global loss, so the gradients add up.
    distributed.all_reduce_grads(params, weights=1.0)
    limit = max_grad_norm if max_grad_norm > 0 else float("inf")
    norm = float(clip_grad_norm(params, limit))
    check_finite_gradient(norm)
    optimizer_step(optimizer)
    return norm


def share_of_mean(x: Tensor) -> Tensor:
    """``x.mean()`` on one process; under several ranks this rank's share Σ_local x / n_global of
    the mean over all ranks' ``x`` (differentiable; the shares add up to the global mean)."""
    if not distributed.is_distributed():
        return x.mean()
    count = distributed.all_reduce_sum(torch.tensor(float(x.numel()), dtype=torch.float64))
    return x.sum() / count.to(x.dtype)


def global_means(*xs: Tensor) -> list[float]:
    """``float(x.mean())`` of each ``x``, over the concatenation of all ranks' ``x`` under several
    ranks (one all-reduce of their sums and counts in float64, so every rank gets the same)."""
    if not distributed.is_distributed():
        return [float(x.mean()) for x in xs]
    acc = torch.tensor([[0.0, float(x.numel())] for x in xs], dtype=torch.float64)
    for i, x in enumerate(xs):
        acc[i, 0] = x.detach().double().sum()
    return _global_ratios(acc)


def _global_ratios(acc: Tensor) -> list[float]:
    """total / count of each (total, count) row of ``acc`` (float64), both summed over ranks
    under several (one all-reduce); NaN where the count is 0."""
    if distributed.is_distributed():
        acc = distributed.all_reduce_sum(acc)
    return [total / count if count else math.nan for total, count in acc.tolist()]


def global_group_means(x: Tensor, sizes: list[int]) -> list[float]:
    """The mean of each consecutive group of ``sizes`` entries of ``x`` (one reduction for all
    groups; NaN for an empty group). Under several ranks group j is the concatenation of every
    rank's group j (one all-reduce of the sums and counts in float64, as :func:`global_means`).

    >>> global_group_means(torch.tensor([1.0, 3.0, 2.0, 0.0]), [2, 0, 2])
    [2.0, nan, 1.0]
    """
    sums = torch.segment_reduce(
        x.detach().double(), "sum", lengths=torch.tensor(sizes), unsafe=True, initial=0.0
    )
    return _global_ratios(torch.stack([sums, torch.tensor(sizes, dtype=torch.float64)], dim=1))


def global_mean(x: Tensor) -> float:
    """:func:`global_means` of one tensor."""
    return global_means(x)[0]


@torch.no_grad()
def policy_stats(policy: PolicyFamily, batch: Batch) -> dict[str, float]:
    """Diagnostics of the updated policy on the batch, in one pass under the sessions' θ:

    * ``kl``: mean KL̂(π_old‖π_θ) = E[(r − 1) − log r], r = π_θ(a|s)/π_old(a|s);
    * ``entropy``: mean entropy of π_θ(·|s);
    * ``posterior_entropy``: H[q] ≈ −mean log q(θ) over the batch's draws (NaN without a density).
    """
    q, xi, _ = policy.variational(batch)
    theta, log_q = q(xi)
    dist = policy.grouped_distribution(batch, theta)
    log_ratio = dist.log_prob(batch.actions) - batch.logp
    kl, entropy, posterior_entropy = global_means(
        log_ratio.exp() - 1 - log_ratio, dist.entropy(), -log_q
    )
    return {
        "kl": kl,
        "entropy": entropy,
        "posterior_entropy": posterior_entropy if policy.has_kl_term else math.nan,
    }


#: θ draws and states of :func:`posterior_spread` (run once per update).
SPREAD_DRAWS, SPREAD_STATES = 8, 32


@torch.no_grad()
def posterior_spread(
    policy: PolicyFamily, obs: Tensor, draws: int = SPREAD_DRAWS
) -> dict[str, float]:
    """How far the posterior's θ-noise moves the policy, in the policy's own units.

    θ is drawn once per episode, so this is the temporally consistent part of the exploration;
    the action noise of π(·|s, θ) is redrawn every step. Reporting the two side by side tells a
    user whether the posterior explores at all: at a fixed σ* = 0.01 a DeepSea network's logits
    move by 0.014 (nothing), a HalfCheetah policy's action mean by a fifth of its action noise
    (the calibrated default, rl.calibration, sets the initial spread instead).

    Returns:
        ``policy_spread``: for Box actions the std over ``draws`` sessions θ ~ q of the action
        mean, for discrete actions the std of π(a|s) over θ; averaged over the states ``obs``
        and the action dimensions (0 where every session runs the same θ).
        ``policy_spread_kl``: the same sessions' √(2 mean KL(π_θ ‖ π_θ(ξ=0))), the spread
        :mod:`rl.calibration` sets σ* by (``policy_spread_target`` at the start; NaN for SVPG's
        particles). ``action_std``: the mean σ of a Box policy's action noise (NaN for discrete
        actions).

    The probe sessions are the same on every call and rank (their noise is drawn from a fork of
    the global torch RNG seeded 0, so the run's own stream is untouched and the logged trace
    follows q, not the draw); under several ranks the mean runs over all ranks' states.
    """
    head = policy.head
    action_std = math.nan if head.discrete else float(head.log_std.exp().mean())
    if not policy.random_theta or obs.shape[0] == 0:
        return {"policy_spread": 0.0, "policy_spread_kl": 0.0, "action_std": action_std}
    xi = probe_draws(lambda: policy.new_noise(torch.arange(draws)))
    dist = policy.sessions_distribution(policy.session_params(xi), obs)  # batch (draws, states)
    outputs = dist.probs if head.discrete else dist.mean
    # ρ of rl.calibration (what policy_spread_target calibrates σ* to at the start); only for a
    # posterior h_φ # N(0, I), whose ξ = 0 is its centre (SVPG's ξ are particle indices)
    kls = session_kls(policy, obs, xi, dist) if policy.has_kl_term else torch.full((1,), math.nan)
    spread, kl = global_means(outputs.std(0), kls)
    return {
        "policy_spread": spread,
        "policy_spread_kl": math.sqrt(2.0 * max(kl, 0.0)) if math.isfinite(kl) else math.nan,
        "action_std": action_std,
    }


def approx_kl(policy: PolicyFamily, batch: Batch) -> float:
    """Mean KL̂(π_old‖π_θ) over the batch (see :func:`policy_stats`)."""
    return policy_stats(policy, batch)["kl"]


def explained_variance(values: Tensor, returns: Tensor) -> float:
    """1 − Var[R̂ − V] / Var[R̂] of the collection-time V(s) (NaN when the returns are constant
    or there is one)."""
    if returns.numel() < 2:
        return math.nan
    var = returns.var()
    return float(1.0 - (returns - values).var() / var) if var > 0 else math.nan


#: Monte Carlo draws of the entropy estimate of a non-affine flow in :meth:`Algorithm.dual_step`.
DUAL_SAMPLES = 4


class Algorithm:
    """Base of the update rules: owns the value baseline's optimizer and the minibatch RNG."""

    def __init__(self, cfg: TrainConfig, policy: PolicyFamily, critic: nn.Module) -> None:
        self.cfg, self.policy, self.critic = cfg, policy, critic
        self.value_opt = adam(critic.parameters(), lr=cfg.value_lr)
        #: The policy's Adam optimizer, when the update uses one (TRPO's natural step does not).
        self.opt: torch.optim.Optimizer | None = None
        self.generator = torch.Generator().manual_seed(cfg.seed)

    def update(
        self, batch: Batch, alpha: float, temperature: AutoTemperature | None = None
    ) -> dict[str, float]:  # pragma: no cover
        """One update on ``batch`` at temperature ``alpha``; with ``temperature`` (auto α) α is
        read from it and a dual step follows every optimizer step (:meth:`dual_step`)."""
        raise NotImplementedError

    def dual_step(self, temperature: AutoTemperature, obs: Tensor) -> dict[str, float]:
        """One dual step of auto α on the current posterior (``obs``: the states a
        state-conditioned posterior is averaged over); returns the values to log.

        Under several ranks the entropy is the ranks' mean, so every rank takes the same step.
        A flow whose log-det depends on ξ is estimated from :data:`DUAL_SAMPLES` draws: the
        estimate of h is a mean over d parameters (noise O(1/d)), and this runs after every
        optimizer step.
        """
        h = policy_entropy_per_param(self.policy, obs, num_samples=DUAL_SAMPLES)
        if distributed.is_distributed():
            h = float(distributed.all_reduce_mean(torch.tensor([h], dtype=torch.float64)))
        return temperature.update(h)

    def diagnostics(self, batch: Batch) -> dict[str, float]:
        """:func:`policy_stats`, :func:`posterior_spread` (on this rank's first states), the
        explained variance and the policy's current learning rate."""
        lr = self.opt.param_groups[0]["lr"] if self.opt is not None else math.nan
        return {
            **policy_stats(self.policy, batch),
            **posterior_spread(self.policy, batch.obs[:SPREAD_STATES]),
            "explained_variance": explained_variance(
                distributed.all_gather_cat(batch.values), distributed.all_gather_cat(batch.returns)
            ),
            "lr": float(lr),
        }

    def fit_value(self, batch: Batch, epochs: int | None = None) -> float:
        """:func:`rl.value.fit_value` for ``epochs`` (default ``value_epochs``) epochs."""
        cfg = self.cfg
        return fit_value(
            self.critic,
            self.value_opt,
            batch,
            cfg.value_epochs if epochs is None else epochs,
            cfg.value_minibatch_size,
            self.generator,
            cfg.max_grad_norm,
        )

    def joint_step(self, loss: Tensor, batch: Batch) -> tuple[float, Tensor]:
        """One optimizer step of the policy on ``loss`` and one of the critic on the value loss of
        the same minibatch ``batch``, from a single backward of their sum (SB3's and CleanRL's
        joint loss): the networks share no parameter, so each gets exactly its own loss's
        gradient, then its own all-reduce, clipping and optimizer step: the policy's as
        :func:`adam_step`, the critic's as :func:`rl.value.fit_value` (:func:`value_step`).
        Returns the policy's pre-clipping gradient norm and the value loss (this rank's
        share)."""
        value = value_loss(self.critic, batch.obs, batch.returns)
        zero_grad(self.opt)
        zero_grad(self.value_opt)
        (loss + value).backward()
        return self._step_both(list(self.critic.parameters())), value.detach()

    def apply_gradients(
        self,
        policy: list[tuple[Tensor, Tensor]],
        critic: list[tuple[Tensor, Tensor]] | None = None,
    ) -> float:
        """The optimizer step(s) of :meth:`joint_step` (or of :func:`adam_step` without
        ``critic``) on gradients computed elsewhere (:mod:`rl.written_out`).

        Args:
            policy: (parameter, gradient) pairs of the policy; every other parameter of its
                optimizer gets no gradient (and so no step).
            critic: the same for the critic, whose step then follows the policy's.

        Returns:
            The policy's pre-clipping gradient norm.
        """
        zero_grad(self.opt)
        for p, g in policy:
            p.grad = g
        if critic is None:
            return _clip_and_step(self.opt, self.cfg.max_grad_norm)
        for p, g in critic:
            p.grad = g
        return self._step_both([p for p, _ in critic])

    def _step_both(self, critic_params: list[Tensor]) -> float:
        """Clip and apply the policy's gradients, then the critic's (``critic_params``)."""
        norm = _clip_and_step(self.opt, self.cfg.max_grad_norm)
        value_step(self.value_opt, critic_params, self.cfg.max_grad_norm)
        return norm

    def loss(self, batch: Batch, objective: Objective, alpha: float) -> Tensor:
        """α · kl_loss(q, log p̃) (Eq. 4), or −mean s for the point mass (α·KL has KL's minimiser
        and a gradient on the plain algorithm's scale, so lr and clipping mean the same)."""
        if not self.policy.has_kl_term:
            alpha = 1.0
        if distributed.is_distributed():
            return self._loss_share(batch, objective, alpha)
        q, xi, log_p = policy_log_density(self.policy, batch, objective, alpha)
        return alpha * posterior_loss(q, log_p, xi, self.policy.has_kl_term)

    def _loss_share(self, batch: Batch, objective: Objective, alpha: float) -> Tensor:
        """This rank's share of :meth:`loss` on the global batch (K θ rows, M samples in all):

        α·KL loss = (α/K) Σ_k log q(θ_k) − (1/M) Σ_i s_i  (the second term alone for a point
        mass), the sums running over this rank's rows. A rank may hold no sample of a minibatch;
        its share is then its sessions' log q alone (zero gradient without a KL term).
        """
        policy = self.policy
        q, xi, rows = policy.variational(batch)
        counts = torch.tensor([float(xi.shape[0]), float(rows.shape[0])], dtype=torch.float64)
        k, m = distributed.all_reduce_sum(counts).tolist()
        zero = sum(p.sum() for p in policy.parameters() if p.requires_grad) * 0.0
        if rows.shape[0] == 0:
            objective(batch.logp.new_zeros(0))  # algorithms that watch the log-probs see none
            if policy.has_kl_term and xi.shape[0]:
                return alpha * q(xi)[1].sum() / k + zero
            return zero
        theta, log_q = q(xi)
        surrogate = objective(policy.log_prob(batch, theta)).sum() / m
        if policy.has_kl_term:
            return alpha * log_q.sum() / k - surrogate + zero
        return zero - surrogate

    def state_dict(self) -> dict:
        state = {"value_opt": self.value_opt.state_dict(), "generator": self.generator.get_state()}
        if self.opt is not None:
            state["opt"] = self.opt.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.value_opt.load_state_dict(state["value_opt"])
        self.generator.set_state(state["generator"])
        if self.opt is not None:
            self.opt.load_state_dict(state["opt"])


def reinforce_loss(algo: Algorithm, batch: Batch, alpha: float) -> Tensor:
    """The REINFORCE surrogate loss Σ log π Â through the adapter (used by pg and tests)."""
    return algo.loss(batch, reinforce_objective(batch.advantages), alpha)
