r"""PPO-clip's minibatch gradients by the written-out chain rule, for the usual configuration.

Every PPO / V-PPO minibatch step differentiates the same loss: the adapter's target through
``vi_flows.objectives.kl_loss`` (:meth:`rl.algorithms.base.Algorithm.loss`) plus the critic's MSE
(:func:`rl.value.value_loss`). Autograd records ~30 nodes for it, and on the update's small
tensors each node costs ~10 µs of bookkeeping whatever its size: measured on one Pendulum
minibatch (`python -m benchmarks.rl --suite step-floor`, two measurements), the autograd step
took 1.38–1.53× (V-PPO) and 1.49–1.76× (PPO) the time of the same arithmetic written out. For

* a :class:`~rl.policies.BNNPolicy` (not SVPG's particles) with a Box head whose log σ is learned,
* whose posterior is the point mass (PPO) or q = N(μ, diag softplus(ρ)²), vi_flows' ``gaussian``
  flow on a standard-normal base (V-PPO's default),
* the clip objective without RPO's noise, an rl.networks MLP critic, no frozen parameter
  (checked when the algorithm is built, by :func:`unsupported`), on one process,

:func:`clip_step` computes the gradients of exactly that loss by hand (tests hold it to autograd's
to float rounding; every other configuration goes through autograd, and
``PPOConfig.hand_gradients = False`` sends these through it too). With θ_k = μ + σ ⊙ ξ_k the
weights of session k (θ = μ for the point mass, which has no KL term and α = 1), M samples and K
sessions in the minibatch:

.. math::

    L = α\,\frac1K \sum_k \log q(θ_k) − \frac1M \sum_i s_i
        + \frac1M \sum_i (V(s_i) − \hat R_i)^2, \qquad
    \log q(θ_k) = \log q_0(ξ_k) − \sum_j \log σ_j,

s_i = min(r_i Â_i, clip(r_i, 1 ± ε) Â_i), r_i = π/π_old, log π(a_i|s_i) = −Σ(½ z² + log σ_a +
½ log 2π), z = (a − m(s_i; θ₀ + θ_{k(i)}))/σ_a. Then

.. math:: \frac{∂s_i}{∂\log π} = r_i Â_i\,[\text{unclipped}], \quad
    \frac{∂\log π}{∂m} = z/σ_a, \quad \frac{∂\log π}{∂\log σ_a} = z^2 − 1,

.. math:: \bar θ_k = −\tfrac1M \textstyle\sum_{i: k(i) = k} ∂s_i/∂θ_k, \quad
    \bar μ = \sum_k \bar θ_k, \quad
    \bar ρ = \mathrm{softplus}'(ρ) ⊙ \big(\sum_k \bar θ_k ⊙ ξ_k − α/σ\big),

with ∂s_i/∂θ_k through the MLP per session on the padded groups the library evaluates
(:meth:`rl.networks.FlatMLP.backprop`, the networks' own written-out backward), and the critic's
∂/∂V = 2(V − R̂)/M through its layers (:func:`rl.networks.linear_stack_backprop`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rl.action_head import ActionHead
from rl.buffer import Batch
from rl.distributions import log_prob_terms
from rl.networks import MLP, group_layout, linear_stack, linear_stack_backprop, to_groups
from rl.policies import BNNPolicy
from rl.posteriors import PointMass
from vi_flows import distributed
from vi_flows.bases import StandardNormal, standard_normal_log_prob
from vi_flows.flows import Flow
from vi_flows.transforms import ElementwiseAffine

__all__ = ["ClipStep", "unsupported", "policy_parameters", "clip_step", "critic_step"]


class ClipStep(NamedTuple):
    """One minibatch's gradients and what the update logs of it (the logged values are computed
    when asked: the update logs its last minibatch's only)."""

    policy_grads: list[Tensor]
    """Gradients of :func:`policy_parameters`, in its order."""
    critic_grads: list[Tensor] | None
    """Gradients of the critic's ``parameters()`` (None when the critic was not asked for)."""
    logp: Tensor
    """log π_θ(a_i|s_i) of every sample (M,), no gradient (the clip fraction and KL guard)."""
    value_error: Tensor | None
    """V(s_i) − R̂_i (M,) (None without the critic)."""
    terms: tuple[Tensor, Tensor]
    """r_i Â_i and clip(r_i, 1 ± ε) Â_i (M,), whose minimum is s_i."""
    kl_term: tuple[float, Tensor, Tensor] | None
    """(α, ξ, σ) of the α·mean log q term (None for the point mass)."""

    def surrogate(self) -> Tensor:
        """(1/M) Σ s_i, 0-dim."""
        unclipped, clipped = self.terms
        # the selection of rl.adapter.clipped_objective (torch.minimum would give NaN where the
        # ratio is infinite and Â = 0; the selection takes the clipped term, 0)
        return torch.where(unclipped <= clipped, unclipped, clipped).mean()

    def policy_loss(self) -> Tensor:
        """The policy loss's value (module docstring)."""
        if self.kl_term is None:
            return -self.surrogate()
        alpha, xi, scale = self.kl_term
        log_q = standard_normal_log_prob(xi).mean() - scale.log().sum()
        return alpha * log_q - self.surrogate()

    def value_loss(self) -> Tensor | None:
        """The critic's MSE, 0-dim (None without the critic)."""
        return None if self.value_error is None else self.value_error.square().mean()

    def pairs(
        self, policy_params: Sequence[Tensor], critic_params: Sequence[Tensor]
    ) -> tuple[list[tuple[Tensor, Tensor]], list[tuple[Tensor, Tensor]] | None]:
        """The gradients with their parameters (:func:`policy_parameters`, the critic's
        ``parameters()``), policy's and critic's (None without the critic's), as
        ``rl.algorithms.base.Algorithm.apply_gradients`` takes them."""
        with_params = list(zip(policy_params, self.policy_grads, strict=True))
        if self.critic_grads is None:
            return with_params, None
        return with_params, list(zip(critic_params, self.critic_grads, strict=True))


def unsupported(policy: nn.Module, critic: nn.Module, objective: str, rpo_alpha: float) -> str:
    """Why :func:`clip_step` does not write out this configuration's gradients.

    Args:
        policy: the policy family.
        critic: V(s).
        objective: PPOConfig.objective.
        rpo_alpha: PPOConfig.rpo_alpha.

    Returns:
        "" when :func:`clip_step` covers the configuration (the module docstring lists what it
        covers), else the first reason it does not, in words.
    """
    if type(policy) is not BNNPolicy:
        return f"the policy is a {type(policy).__name__}, not a BNNPolicy"
    head = policy.head
    if type(head) is not ActionHead or head.discrete or not isinstance(head.log_std, nn.Parameter):
        return "the action head is not a Box head with a learned log σ"
    q = policy.q
    gaussian = (
        type(q) is Flow
        and type(q.transform) is ElementwiseAffine
        and type(q.base) is StandardNormal
    )
    if type(q) is not PointMass and not gaussian:
        return "the posterior is neither the point mass nor the gaussian flow"
    if objective != "clip" or rpo_alpha > 0:
        return "the objective is not PPO-clip without RPO"
    if type(critic) is not MLP:
        return f"the critic is a {type(critic).__name__}, not an rl.networks MLP"
    # a frozen parameter keeps autograd's zero step, which assigning a gradient would not
    if not all(p.requires_grad for p in [*policy_parameters(policy), *critic.parameters()]):
        return "a parameter of the policy or the critic is frozen (requires_grad=False)"
    return ""


def policy_parameters(policy: BNNPolicy) -> list[Tensor]:
    """The parameters :func:`clip_step` differentiates, in its gradients' order: μ (and ρ) of q,
    then the head's log σ."""
    q = policy.q
    if isinstance(q, PointMass):
        return [q.loc, policy.head.log_std]
    return [q.transform.loc, q.transform.raw_scale, policy.head.log_std]


@torch.no_grad()
def clip_step(
    policy: BNNPolicy,
    critic: MLP,
    mb: Batch,
    alpha: float,
    clip: float,
    with_critic: bool = True,
    critic_params: Sequence[Tensor] | None = None,
) -> ClipStep:
    """The gradients of the PPO-clip policy loss and the critic's MSE on one minibatch, at the
    current parameters (module docstring).

    Call only where :func:`unsupported` says "" and on one process (under several ranks each
    rank's loss is its share of the global one: rl.algorithms.base, autograd).

    Args:
        policy: the policy (its q, head and network).
        critic: V(s).
        mb: the minibatch (``Batch.minibatches``; its ``session`` indexes its ``xi``).
        alpha: the temperature α > 0 (the point mass has no KL term and ignores it).
        clip: PPO's clip ε.
        with_critic: also the critic's errors and MSE gradients (its epochs ride along the
            policy's).
        critic_params: the critic's ``parameters()`` as a list (:func:`critic_step`).

    Returns:
        The gradients (policy: :func:`policy_parameters`' order; critic: its ``parameters()``
        order), log π of the samples and what the logged losses need.
    """
    if distributed.is_distributed():
        raise RuntimeError("clip_step: one process only (several ranks go through autograd)")
    if not isinstance(policy.q, PointMass) and not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    net, head = policy.net, policy.head
    m = mb.obs.shape[0]
    log_std = head.log_std.detach()
    point = isinstance(policy.q, PointMass)
    # θ₀ is added to the d-vector μ, not to the (K, d) table of the sessions' θ_k: one (K, d) pass
    # fewer per step; θ = (θ₀ + μ) + σ ⊙ ξ rounds differently from acting's θ₀ + (μ + σ ⊙ ξ), by
    # one float32 ulp in about a third of the weights
    if point:  # one θ for every sample: no grouping (as BNNPolicy.grouped_distribution)
        theta, padded = (policy.theta0 + policy.q.loc.detach())[None], mb.obs[None]
        rows = pos = None
    else:
        affine = policy.q.transform
        scale = F.softplus(affine.raw_scale.detach())
        theta = torch.addcmul(policy.theta0 + affine.loc.detach(), scale, mb.xi)
        rows = policy.rows(mb)
        pos, largest = group_layout(rows, theta.shape[0])
        padded = to_groups(mb.obs, rows, pos, theta.shape[0], largest)
    layers, hidden = net.layers(theta), []
    out = net.apply(layers, padded, keep=hidden)
    mean = out[0] if point else out[rows, pos]
    logp, z, inv_std, z_sq = log_prob_terms(mb.actions, mean, log_std)
    ratio = torch.exp(logp - mb.logp)
    unclipped = ratio * mb.advantages
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * mb.advantages
    # ∂L/∂log π_i = −(1/M) ∂s_i/∂log π_i: r_i Â_i where the unclipped term is the minimum
    grad_logp = torch.where(unclipped <= clipped, unclipped, 0.0).mul_(-1.0 / m).unsqueeze(-1)
    grad_mean = grad_logp * z * inv_std
    grad_log_std = (grad_logp * (z_sq - 1.0)).sum(0)
    if point:
        delta = grad_mean[None]
    else:
        delta = to_groups(grad_mean, rows, pos, theta.shape[0], largest)
    grad_theta, _ = net.backprop(layers, [padded, *hidden], delta)
    if point:
        grads, kl_term = [grad_theta[0], grad_log_std], None
    else:
        grad_loc = grad_theta.sum(0)
        # in place: the (K, d) table is not needed past its sum
        grad_scale = grad_theta.mul_(mb.xi).sum(0).sub_(alpha / scale)
        # F.softplus's defaults (β = 1, threshold 20), as ElementwiseAffine.scale takes it
        grad_raw = torch.ops.aten.softplus_backward(grad_scale, affine.raw_scale, 1.0, 20.0)
        grads, kl_term = [grad_loc, grad_raw, grad_log_std], (alpha, mb.xi, scale)
    error, critic_grads = (
        critic_step(critic, mb.obs, mb.returns, critic_params) if with_critic else (None, None)
    )
    return ClipStep(grads, critic_grads, logp, error, (unclipped, clipped), kl_term)


@torch.no_grad()
def critic_step(
    critic: MLP, obs: Tensor, returns: Tensor, params: Sequence[Tensor] | None = None
) -> tuple[Tensor, list[Tensor]]:
    """The errors V(s) − R̂ over a minibatch and the gradients of their mean square, written out.

    Args:
        critic: V(s), an rl.networks MLP.
        obs: the minibatch's states (M, obs_dim).
        returns: their value targets R̂ (M,).
        params: the critic's ``parameters()`` as a list, where the caller keeps one (listing
            them costs ~8 µs, and this runs once per minibatch).

    Returns:
        The errors (M,) (their mean square is the MSE) and the MSE's gradients for the critic's
        ``parameters()``, in their order.
    """
    params = list(critic.parameters()) if params is None else params
    hidden: list[Tensor] = []
    value = linear_stack(obs, params, critic.activation, keep=hidden).squeeze(-1)
    error = value - returns
    delta = (2.0 / obs.shape[0]) * error.unsqueeze(-1)
    grads = linear_stack_backprop(params, [obs, *hidden], delta, critic.activation)[1]
    return error, grads
