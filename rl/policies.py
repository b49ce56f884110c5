"""Policy families: π(a|s) with parameters drawn from a posterior q_φ, one draw per session.

Every family implements :class:`rl.policy_api.PolicyFamily` (acting: ``new_noise``,
``session_params``, ``act_distribution``, ``actor``; diagnostics: ``sessions_distribution``;
fitting: ``variational``, ``log_prob``, ``grouped_distribution``). Families are registered by
name in :data:`POLICIES`.

Families (the paper's sections):

* :class:`BNNPolicy` (§2, Example 1): all weights θ of an MLP ~ q_φ, any vi_flows flow (the flow
  models θ − θ₀ for a fixed orthogonal initialisation θ₀; a known shift changes no log-det).
  ``posterior="point"`` is the plain algorithms' point mass; :class:`ParticlePolicy` is SVPG's.
* :class:`ActionMeanPolicy` (§3.1): θ = μ_φ(s) + ξ σ_φ(s) is the action mean (or the logits),
  a = θ + ζ.
* :class:`AuxiliaryPolicy` (§3.2): a = MLP_Ψ(θ(s, ξ), s) + ζ with Ψ learned by the policy gradient.

ζ is the action head: a Gaussian with learned or fixed log-std for Box actions, a categorical for
Discrete ones (a = argmax(logits + Gumbel ζ)).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from rl.action_head import Action, ActionHead, check_action_space
from rl.buffer import Batch
from rl.networks import FlatMLP, group_layout, mlp, to_groups
from rl.policy_api import PolicyFamily
from rl.posteriors import (
    Particles,
    PointMass,
    StateGaussian,
    affine_mean,
    base_noise,
    flow_std,
    probe_draws,
)
from vi_flows.bases import StudentT
from vi_flows.flows import Flow, build
from vi_flows.registry import Registry, UnknownNameError

__all__ = [
    "ActionHead",
    "check_action_space",
    "BNNPolicy",
    "ParticlePolicy",
    "ActionMeanPolicy",
    "AuxiliaryPolicy",
    "POLICIES",
    "SEQUENTIAL_MAX_DIM",
    "check_posterior_speed",
    "make_policy",
]


class BNNPolicy(nn.Module):
    """§2: an MLP policy whose flat weight vector θ is drawn from q_φ once per session.

    Implements :class:`rl.policy_api.PolicyFamily`; the θ table of :meth:`variational` has one row
    per session and ``rows`` is the batch's session index.

    Args:
        obs_dim: observation size.
        action_space: Box or Discrete.
        hidden: hidden widths of the policy MLP.
        posterior: a vi_flows family (``gaussian``, ``lowrank-gaussian``, ``planar``, …) or
            ``point``.
        posterior_options: passed to :func:`vi_flows.flows.build` (e.g. ``init_scale``, ``rank``;
            ``lowrank-gaussian`` defaults ``factor_scale`` to 1/√d here, see
            :class:`vi_flows.transforms.LowRankAffine`).
        init_log_std, learn_log_std: the Gaussian action noise ζ (Box actions only).
        activation: hidden activation.
        action_rescale: Box actions mapped from [−1, 1] (:func:`rl.action_head.box_rescale`).
    """

    def __init__(
        self,
        obs_dim: int,
        action_space: gym.Space,
        hidden: Sequence[int] = (64, 64),
        posterior: str = "gaussian",
        posterior_options: dict[str, Any] | None = None,
        init_log_std: float = 0.0,
        learn_log_std: bool = True,
        activation: str = "tanh",
        action_rescale: str = "auto",
    ) -> None:
        super().__init__()
        self.head = ActionHead(action_space, init_log_std, learn_log_std, action_rescale)
        self.net = FlatMLP([obs_dim, *hidden, self.head.num_outputs], activation)
        self.register_buffer("theta0", self.net.init_flat())
        dim = self.net.num_params
        point = posterior == "point"
        options = dict(posterior_options or {})
        if posterior == "lowrank-gaussian":
            # V's step in units of |v_j| ~ lr, as D's log-scales step (LowRankAffine: at s = 1 its
            # columns grew √d times faster and multiplied the weight noise along them ~19-fold)
            options.setdefault("factor_scale", dim**-0.5)
        if point:
            self.q = PointMass(dim)
        else:
            self.q = _build_posterior(posterior, dim, options)
            check_posterior_speed(self.q)  # before any θ is drawn (σ*'s calibration draws)
        if isinstance(self.q, Flow) and isinstance(self.q.base, StudentT) and self.q.base.learn_df:
            raise ValueError(
                "posterior_options: learn_df=True is not supported for a policy posterior (each "
                "session's ξ is kept as data, so ν would get no gradient through it); fix df"
            )
        self.noise_dim = 0 if point else dim
        self.has_kl_term = self.random_theta = not point

    def new_noise(self, slots: Tensor) -> Tensor:
        """ξ ~ q's base (N(0, I) unless the flow has a Student-t base) for new sessions in the env
        slots ``slots``."""
        return base_noise(self.q, len(slots), self.noise_dim)

    def session_params(self, xi: Tensor) -> Tensor:
        """The sessions' absolute weights θ₀ + θ (K, d): acting adds θ₀ once per session, not
        once per step."""
        return self.theta0 + self.q(xi)[0]

    def evaluate(self, theta: Tensor, obs: Tensor) -> Distribution:
        """π for K weight vectors at once: θ (K, d) offsets from θ₀, obs (K, B, n_obs) → (K, B)."""
        return self.head(self.net(self.theta0 + theta, obs))

    def distribution(self, theta: Tensor, obs: Tensor) -> Distribution:
        """π_{θ_i}(·|s_i) with one θ row per observation row."""
        return self.head(self.net(self.theta0 + theta, obs.unsqueeze(-2)).squeeze(-2))

    def act_distribution(self, params: Tensor, obs: Tensor) -> Distribution:
        """π_{θ_i}(·|s_i) for the absolute weights of :meth:`session_params`."""
        return self.head(self.net(params, obs.unsqueeze(-2)).squeeze(-2))

    def sessions_distribution(self, params: Tensor, obs: Tensor) -> Distribution:
        """π for the K absolute weight vectors ``params`` (K, d) at each of the states ``obs``
        (B, n_obs): one batched pass, batch (K, B)."""
        return self.head(self.net(params, obs.expand(params.shape[0], *obs.shape)))

    def actor(self, params: Tensor) -> Action:
        """obs ↦ (a, log π(a|s)) as sampled from :meth:`act_distribution`; θ is split into its
        layers once (views: rows of ``params`` rewritten in place stay current)."""
        layers, draw = self.net.layers(params), self.head.sampler(params.shape[0])
        return lambda obs: draw(self.net.apply(layers, obs.unsqueeze(-2)).squeeze(-2))

    def rows(self, batch: Batch) -> Tensor:
        """The θ-table row of every sample: its session."""
        return batch.session

    def variational(self, batch: Batch) -> tuple[nn.Module, Tensor, Tensor]:
        if not self.random_theta:
            # A point mass has one θ for every sample: a one-row table (a K-row table of copies
            # cost a zero-filled (K, d) gradient per backward, the slice back to one row).
            return self.q, batch.xi[:1], torch.zeros_like(batch.session)
        return self.q, batch.xi, self.rows(batch)

    def grouped_distribution(self, batch: Batch, theta: Tensor) -> Distribution:
        """π_{θ[rows_i]}(·|s_i), equal to ``distribution(θ[rows], obs)``.

        The samples are grouped by their θ row and padded to (K, B_max, n_obs), so each layer is
        one batched matmul over the K distinct weight vectors instead of M per-sample
        matrix-vector products over M gathered copies of θ (which dominated the update's time).
        A point mass has one θ for all rows.
        """
        obs = batch.obs
        if not self.random_theta:
            return self.head(self.net(self.theta0 + theta[:1], obs[None])[0])
        rows = self.rows(batch)
        pos, largest = group_layout(rows, theta.shape[0])
        padded = to_groups(obs, rows, pos, theta.shape[0], largest)
        return self.head(self.net(self.theta0 + theta, padded)[rows, pos])

    def log_prob(self, batch: Batch, theta: Tensor) -> Tensor:
        return self.grouped_distribution(batch, theta).log_prob(batch.actions)

    @torch.no_grad()
    def mean_params(self, num: int = 1024) -> Tensor:
        """The posterior mean of θ, shape (1, d): exact for a point mass and affine flows (μ), a
        Monte Carlo mean of ``num`` draws (:func:`rl.posteriors.probe_draws`) for other flows."""
        if isinstance(self.q, PointMass):
            return self.q.loc[None].clone()
        exact = affine_mean(self.q)
        if exact is not None:
            return exact
        draws = probe_draws(lambda: base_noise(self.q, num, self.noise_dim))
        return self.q(draws)[0].mean(0, keepdim=True)

    def mean_policy(self) -> Callable[[Tensor], Distribution]:
        mean = self.mean_params()
        return lambda obs: self.distribution(mean.expand(obs.shape[0], -1), obs)

    def posterior_std(self) -> float:
        """Mean marginal σ of the weight posterior (exact for affine flows,
        :func:`rl.posteriors.flow_std`)."""
        return flow_std(self.q, self.noise_dim)


class ParticlePolicy(BNNPolicy):
    """SVPG: n deterministic weight vectors; env slot j always runs particle j mod n.

    The θ table of :meth:`variational` is the n particles and ``rows`` each sample's particle
    (:class:`rl.posteriors.Particles` encodes the index in ξ).
    """

    def __init__(
        self,
        obs_dim: int,
        action_space: gym.Space,
        num_particles: int = 4,
        init_std: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(obs_dim, action_space, posterior="point", **kwargs)
        self.num_particles = num_particles
        self.q = Particles(num_particles, self.net.num_params, init_std)
        self.noise_dim = Particles.noise_dim
        self.has_kl_term, self.random_theta = False, True

    def new_noise(self, slots: Tensor) -> Tensor:
        """The particle index of each slot, as the particles' ξ."""
        return self.q.noise(slots % self.num_particles)

    def rows(self, batch: Batch) -> Tensor:
        return self.q.index(batch.xi)[batch.session]

    def variational(self, batch: Batch) -> tuple[nn.Module, Tensor, Tensor]:
        return self.q, self.q.noise(torch.arange(self.num_particles)), self.rows(batch)

    @torch.no_grad()
    def mean_params(self, num: int = 1024) -> Tensor:
        return self.q.theta.mean(0, keepdim=True)


class ActionMeanPolicy(nn.Module):
    """§3.1: θ = μ_φ(s) + ξ ⊙ σ_φ(s) (ξ drawn per session), π(a|s, θ) = head(θ).

    For Box actions a = θ + ζ, ζ ~ N(0, diag exp(log_std)²); for Discrete actions θ are the logits.
    The KL gradient is Eq. 8: (1/α) ∂R/∂θ ∂h_φ/∂φ + Σ_i ∂ log σ_φ^i(s)/∂φ. The θ table of
    :meth:`variational` has one row per sample (θ depends on the state).
    """

    has_kl_term = True
    random_theta = True

    def __init__(
        self,
        obs_dim: int,
        action_space: gym.Space,
        hidden: Sequence[int] = (64, 64),
        init_log_std: float = 0.0,
        learn_log_std: bool = True,
        activation: str = "tanh",
        log_std_bounds: tuple[float, float] = (-5.0, 1.0),
        latent_dim: int | None = None,
        action_rescale: str = "auto",
    ):
        super().__init__()
        self.head = ActionHead(action_space, init_log_std, learn_log_std, action_rescale)
        self.noise_dim = latent_dim or self.head.num_outputs
        self.posterior_net = mlp(obs_dim, 2 * self.noise_dim, hidden, activation, out_gain=0.01)
        self.bounds = tuple(log_std_bounds)

    def new_noise(self, slots: Tensor) -> Tensor:
        """ξ ~ N(0, I) for new sessions in the env slots ``slots``."""
        return torch.randn(len(slots), self.noise_dim)

    def session_params(self, xi: Tensor) -> Tensor:
        return xi

    def q_at(self, obs: Tensor) -> StateGaussian:
        """The state-dependent posterior bound to the states ``obs``."""
        return StateGaussian(self.posterior_net, obs, self.bounds)

    def distribution(self, theta: Tensor, obs: Tensor) -> Distribution:
        """π(·|s_i, θ_i) with one θ row per observation row."""
        return self.head(theta)

    def act_distribution(self, params: Tensor, obs: Tensor) -> Distribution:
        return self.distribution(self.q_at(obs)(params)[0], obs)

    def sessions_distribution(self, params: Tensor, obs: Tensor) -> Distribution:
        """π for the K sessions' ξ ``params`` (K, m) at each of the states ``obs`` (B, n_obs):
        θ = μ_φ(s) + ξ_k ⊙ σ_φ(s) broadcast to (K, B, m), batch (K, B)."""
        theta = self.q_at(obs)(params[:, None])[0]
        return self.distribution(theta, obs.expand(params.shape[0], *obs.shape))

    def actor(self, params: Tensor) -> Action:
        """obs ↦ (a, log π(a|s)) as sampled from :meth:`act_distribution`."""

        def act(obs: Tensor) -> tuple[Tensor, Tensor]:
            dist = self.act_distribution(params, obs)
            action = dist.sample()
            return action, dist.log_prob(action)

        return act

    def variational(self, batch: Batch) -> tuple[nn.Module, Tensor, Tensor]:
        rows = torch.arange(batch.obs.shape[0])
        return self.q_at(batch.obs), batch.xi[batch.session], rows

    def grouped_distribution(self, batch: Batch, theta: Tensor) -> Distribution:
        return self.distribution(theta, batch.obs)

    def log_prob(self, batch: Batch, theta: Tensor) -> Tensor:
        return self.grouped_distribution(batch, theta).log_prob(batch.actions)

    def mean_policy(self) -> Callable[[Tensor], Distribution]:
        """π at θ = μ_φ(s)."""
        return lambda obs: self.distribution(self.q_at(obs).moments()[0], obs)

    @torch.no_grad()
    def mean_params(self, num: int = 1) -> Tensor:
        return torch.zeros(1, self.noise_dim)

    def posterior_std(self, obs: Tensor | None = None) -> float:
        """Mean σ_φ(s) over ``obs`` (or at s = 0)."""
        obs = torch.zeros(1, self.posterior_net[0].in_features) if obs is None else obs
        with torch.no_grad():
            return float(self.q_at(obs).moments()[1].exp().mean())


class AuxiliaryPolicy(ActionMeanPolicy):
    """§3.2: latent θ(s, ξ) = μ_φ(s) + ξ σ_φ(s) ∈ ℝ^m, a = MLP_Ψ([θ, s]) + ζ.

    φ follows the KL gradient (Eq. 4) and Ψ the policy gradient ∂R_Ψ/∂Ψ; both come out of the same
    loss because Ψ appears only inside log π (its gradient is −(1/α) ∂R_Ψ/∂Ψ, and Adam's step is
    invariant to that constant factor).
    """

    def __init__(
        self,
        obs_dim: int,
        action_space: gym.Space,
        hidden: Sequence[int] = (64, 64),
        latent_dim: int = 4,
        activation: str = "tanh",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            obs_dim, action_space, hidden, activation=activation, latent_dim=latent_dim, **kwargs
        )
        self.aux = mlp(latent_dim + obs_dim, self.head.num_outputs, hidden, activation, 0.01)

    def distribution(self, theta: Tensor, obs: Tensor) -> Distribution:
        return self.head(self.aux(torch.cat([theta, obs], dim=-1)))


def _build_posterior(posterior: str, dim: int, options: dict[str, Any]) -> Flow:
    """``vi_flows.flows.build(posterior, dim, **options)``, with a bad option said in one line
    that names ``posterior_options`` (build names an unknown key and the family's options)."""
    try:
        return build(posterior, dim, **options)
    except UnknownNameError:
        raise
    except (TypeError, ValueError) as err:
        raise ValueError(f"posterior_options {options}: {err}") from None


#: Policy weights up to which a posterior that samples one weight at a time is accepted (MAF:
#: 130 weights train at ~40 env steps/s on CartPole; 4,600 did not finish one update in 5 min).
SEQUENTIAL_MAX_DIM = 256


def check_posterior_speed(q: Flow | PointMass) -> None:
    """Refuse a weight posterior whose sampling pass is sequential over the weights (a MAF layer,
    or a mixture, whose log q runs an IAF's inverse) for more than :data:`SEQUENTIAL_MAX_DIM`
    weights: every session's θ would take d network passes per layer. Saved runs with one are
    refused too: drawing their θ is as slow."""
    if not isinstance(q, Flow) or not q.transform.sequential_forward:
        return
    if q.dim > SEQUENTIAL_MAX_DIM:
        name = q.config.get("name", type(q.transform).__name__)
        raise ValueError(
            f"posterior {name!r} samples θ sequentially: {q.dim} network passes per layer "
            f"for this policy's {q.dim} weights (accepted up to {SEQUENTIAL_MAX_DIM}); use a "
            "family that samples in one pass (gaussian, lowrank-gaussian, realnvp, iaf, nsf)"
        )


#: The policy families by name (:class:`vi_flows.registry.Registry`).
POLICIES: Registry[type[nn.Module]] = Registry("policy family")
POLICIES.register("bnn", BNNPolicy)
POLICIES.register("particles", ParticlePolicy)
POLICIES.register("action-mean", ActionMeanPolicy)
POLICIES.register("auxiliary", AuxiliaryPolicy)


def make_policy(kind: str, obs_dim: int, action_space: gym.Space, **options: Any) -> PolicyFamily:
    """Build a registered policy family by name (:data:`POLICIES`).

    Raises:
        UnknownNameError: for an unknown name (the message lists the known ones).
    """
    return POLICIES.get(kind)(obs_dim, action_space, **options)
