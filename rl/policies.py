"""Policy families: π(a|s) with parameters drawn from a posterior q_φ, one draw per session.

All families share one small interface used by the collector and the algorithms:

* ``new_noise(slots)`` — base noise ξ for new sessions in those env slots (a session is one
  episode in one env slot);
* ``session_params(ξ)`` — what acting needs for the whole session (computed once per session);
* ``act_distribution(params, obs)`` — π(·|s) while acting;
* ``variational(obs, ξ_table, session)`` — ``(q, ξ, rows)``: a posterior with ``q(ξ) -> (θ, log q)``
  and, for each sample, the row of θ it was collected under;
* ``distribution(θ_rows, obs)`` — π_θ(·|s) for one θ row per sample (what the adapter
  differentiates).

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

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution

from rl.distributions import DiagGaussian
from rl.networks import FlatMLP, mlp
from rl.posteriors import Particles, PointMass, StateGaussian, flow_std
from vi_flows.flows import build

__all__ = [
    "ActionHead",
    "check_action_space",
    "BNNPolicy",
    "ParticlePolicy",
    "ActionMeanPolicy",
    "AuxiliaryPolicy",
    "make_policy",
]


def check_action_space(space: gym.Space) -> None:
    """Raise ``ValueError`` unless :class:`ActionHead` represents ``space`` exactly.

    Representable: ``Discrete(n, start)`` with n >= 1, and a 1-D floating ``Box`` (shape (n,)).
    """
    if isinstance(space, gym.spaces.Discrete):
        if int(space.n) < 1:
            raise ValueError(f"action space {space} has no actions")
        return
    if isinstance(space, gym.spaces.Box):
        if (
            len(space.shape) == 1
            and space.shape[0] >= 1
            and np.issubdtype(space.dtype, np.floating)
        ):
            return
        raise ValueError(
            f"action space {space} cannot be represented exactly: vi-rl needs a 1-D float Box "
            "(shape (n,)) or a Discrete space; flatten or wrap the env's actions"
        )
    raise ValueError(
        f"unsupported action space {type(space).__name__}; vi-rl supports Box (continuous, 1-D) "
        "and Discrete actions"
    )


class ActionHead(nn.Module):
    """Turns network outputs into π(·|s): Categorical(logits) or N(mean, exp(log_std)²).

    A Discrete(n, start) action is the categorical index i ∈ [0, n) (what the buffer stores and
    log π is taken of); the env receives start + i.
    """

    def __init__(self, space: gym.Space, init_log_std: float = 0.0, learn_log_std: bool = True):
        super().__init__()
        check_action_space(space)
        self.discrete = isinstance(space, gym.spaces.Discrete)
        if self.discrete:
            self.num_outputs, self.shape = int(space.n), ()
            self.start = int(space.start)
        else:
            self.num_outputs, self.shape = int(np.prod(space.shape)), tuple(space.shape)
            self.low, self.high = space.low, space.high
            log_std = torch.full((self.num_outputs,), float(init_log_std))
            if learn_log_std:
                self.log_std = nn.Parameter(log_std)
            else:
                self.register_buffer("log_std", log_std)
        self.mean_noise = 0.0

    @contextmanager
    def perturbed(self, rho: float) -> Iterator[None]:
        """Inside, Box action means get U(−ρ, ρ) noise (RPO, Rahman & Xue 2022); ρ = 0: none."""
        previous, self.mean_noise = self.mean_noise, float(rho)
        try:
            yield
        finally:
            self.mean_noise = previous

    def forward(self, out: Tensor) -> Distribution:
        if self.discrete:
            return Categorical(logits=out, validate_args=False)
        if self.mean_noise > 0:
            out = out + torch.empty_like(out).uniform_(-self.mean_noise, self.mean_noise)
        # No argument validation: the inputs are network outputs, and the checks showed up in
        # the trainer's profile; a non-finite output still fails loudly in the loss.
        return DiagGaussian(out, self.log_std)

    def mode(self, dist: Distribution) -> Tensor:
        """The most likely action."""
        return dist.probs.argmax(-1) if self.discrete else dist.mean

    def to_env(self, action: Tensor) -> np.ndarray:
        """The action the env receives (Box actions clipped to the bounds)."""
        a = action.numpy()
        if self.discrete:
            return a.astype(np.int64) + self.start
        return np.clip(a, self.low, self.high)


class BNNPolicy(nn.Module):
    """§2: an MLP policy whose flat weight vector θ is drawn from q_φ once per session.

    Args:
        obs_dim: observation size.
        action_space: Box or Discrete.
        hidden: hidden widths of the policy MLP.
        posterior: a vi_flows family (``gaussian``, ``lowrank-gaussian``, ``planar``, …) or
            ``point``.
        posterior_options: passed to :func:`vi_flows.flows.build` (e.g. ``init_scale``, ``rank``).
        init_log_std, learn_log_std: the Gaussian action noise ζ (Box actions only).
        activation: hidden activation.
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
    ) -> None:
        super().__init__()
        self.head = ActionHead(action_space, init_log_std, learn_log_std)
        self.net = FlatMLP([obs_dim, *hidden, self.head.num_outputs], activation)
        self.register_buffer("theta0", self.net.init_flat())
        dim = self.net.num_params
        self.point_mass = posterior == "point"
        self.q = (
            PointMass(dim)
            if self.point_mass
            else build(posterior, dim, **(posterior_options or {}))
        )
        self.noise_dim = 0 if self.point_mass else dim

    def new_noise(self, slots: Tensor) -> Tensor:
        """ξ ~ N(0, I) for new sessions in the env slots ``slots``."""
        return torch.randn(len(slots), self.noise_dim)

    def session_params(self, xi: Tensor) -> Tensor:
        return self.q(xi)[0]

    def evaluate(self, theta: Tensor, obs: Tensor) -> Distribution:
        """π for K weight vectors at once: θ (K, d) offsets from θ₀, obs (K, B, n_obs) → (K, B)."""
        return self.head(self.net(self.theta0 + theta, obs))

    def distribution(self, theta: Tensor, obs: Tensor) -> Distribution:
        return self.head(self.net(self.theta0 + theta, obs.unsqueeze(-2)).squeeze(-2))

    def act_distribution(self, params: Tensor, obs: Tensor) -> Distribution:
        return self.distribution(params, obs)

    def grouped_distribution(self, theta: Tensor, rows: Tensor, obs: Tensor) -> Distribution:
        """π_{θ_rows[i]}(·|s_i) for M samples, equal to ``distribution(θ[rows], obs)``.

        The samples are grouped by their θ row and padded to (K, B_max, n_obs), so each layer is
        one batched matmul over the K distinct weight vectors instead of M per-sample
        matrix-vector products over M gathered copies of θ (which dominated the update's time).
        A point mass has one θ for all rows.
        """
        if isinstance(self.q, PointMass):
            return self.head(self.net(self.theta0 + theta[:1], obs[None])[0])
        k, m = theta.shape[0], rows.shape[0]
        order = torch.argsort(rows, stable=True)
        sorted_rows = rows[order]
        counts = torch.bincount(rows, minlength=k)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(m) - starts[sorted_rows]
        padded = obs.new_zeros(k, int(counts.max()), obs.shape[-1])
        padded[sorted_rows, pos] = obs[order]
        out = self.net(self.theta0 + theta, padded)[sorted_rows, pos]
        return self.head(torch.empty_like(out).index_copy(0, order, out))

    def log_prob_grouped(self, theta: Tensor, rows: Tensor, obs: Tensor, actions: Tensor) -> Tensor:
        """log π_{θ_rows[i]}(a_i|s_i) (M,) through :meth:`grouped_distribution`."""
        return self.grouped_distribution(theta, rows, obs).log_prob(actions)

    def variational(
        self, obs: Tensor, xi: Tensor, session: Tensor
    ) -> tuple[nn.Module, Tensor, Tensor]:
        return self.q, xi, session

    @torch.no_grad()
    def mean_params(self, num: int = 1024) -> Tensor:
        """The posterior mean of θ (Monte Carlo for flows), shape (1, d)."""
        if self.point_mass:
            return self.q.loc[None].clone()
        return self.q(torch.randn(num, self.noise_dim))[0].mean(0, keepdim=True)

    def mean_act_distribution(self, obs: Tensor) -> Distribution:
        return self.distribution(self.mean_params().expand(obs.shape[0], -1), obs)

    def posterior_std(self) -> float:
        """Mean marginal σ of the weight posterior."""
        return flow_std(self.q, self.noise_dim)


class ParticlePolicy(BNNPolicy):
    """SVPG: n deterministic weight vectors; env slot j always runs particle j mod n."""

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
        self.noise_dim = 1

    def new_noise(self, slots: Tensor) -> Tensor:
        """The particle index of each slot, as a (len, 1) float "noise"."""
        return (slots % self.num_particles).float()[:, None]

    @torch.no_grad()
    def mean_params(self, num: int = 1024) -> Tensor:
        return self.q.theta.mean(0, keepdim=True)


class ActionMeanPolicy(nn.Module):
    """§3.1: θ = μ_φ(s) + ξ ⊙ σ_φ(s) (ξ drawn per session), π(a|s, θ) = head(θ).

    For Box actions a = θ + ζ, ζ ~ N(0, diag exp(log_std)²); for Discrete actions θ are the logits.
    The KL gradient is Eq. 8: (1/α) ∂R/∂θ ∂h_φ/∂φ + Σ_i ∂ log σ_φ^i(s)/∂φ.
    """

    point_mass = False

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
    ):
        super().__init__()
        self.head = ActionHead(action_space, init_log_std, learn_log_std)
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
        return self.head(theta)

    def act_distribution(self, params: Tensor, obs: Tensor) -> Distribution:
        return self.distribution(self.q_at(obs)(params)[0], obs)

    def variational(
        self, obs: Tensor, xi: Tensor, session: Tensor
    ) -> tuple[nn.Module, Tensor, Tensor]:
        return self.q_at(obs), xi[session], torch.arange(obs.shape[0])

    def mean_act_distribution(self, obs: Tensor) -> Distribution:
        return self.distribution(self.q_at(obs).moments()[0], obs)

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


def make_policy(kind: str, obs_dim: int, action_space: gym.Space, **options: Any) -> nn.Module:
    """Build a policy family by name: ``bnn``, ``particles``, ``action-mean``, ``auxiliary``."""
    families = {
        "bnn": BNNPolicy,
        "particles": ParticlePolicy,
        "action-mean": ActionMeanPolicy,
        "auxiliary": AuxiliaryPolicy,
    }
    if kind not in families:
        raise ValueError(f"unknown policy family {kind!r}; known: {sorted(families)}")
    return families[kind](obs_dim, action_space, **options)
