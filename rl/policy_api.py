"""The interface every policy family implements, declared once (:class:`PolicyFamily`).

A policy family is π(a|s, θ) with θ drawn from a posterior q_φ once per *session* (one episode in
one env slot). The collector uses the acting half (``new_noise``, ``session_params``,
``actor``, ``head``); the diagnostics and the σ* calibration evaluate K sessions at B states in
one pass (``sessions_distribution``); the algorithms use the fitting half on a
:class:`~rl.buffer.Batch`:

* ``variational(batch) -> (q, ξ, rows)``: a posterior with ``q(ξ) -> (θ, log q)`` over a table of
  K rows of θ, and for each of the M samples the row ``rows[i]`` of θ it was collected under;
* ``log_prob(batch, θ)``: log π_{θ[rows_i]}(a_i|s_i) of every sample, (M,), evaluated grouped by
  θ row (one network pass per distinct θ, not one per sample);
* ``grouped_distribution(batch, θ)``: the same π_{θ[rows_i]}(·|s_i) as a distribution (TRPO's KL).

Every log π an algorithm needs goes through ``log_prob``, so the grouping lives in the family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor, nn
from torch.distributions import Distribution

if TYPE_CHECKING:  # the head's type only
    from rl.action_head import ActionHead
    from rl.buffer import Batch

__all__ = ["PolicyFamily"]


class PolicyFamily(Protocol):
    """What the collector, the algorithms, the trainer and evaluation use of a policy family."""

    head: ActionHead
    """Turns network outputs into π(·|s) and actions into env actions."""
    noise_dim: int
    """Width of the base noise ξ of a session (0 for the point mass)."""
    has_kl_term: bool
    """True when the update minimises α·KL(q‖p) (a density q with a log-det); False for the plain
    algorithms' point mass and SVPG's particles, which follow the surrogate alone."""
    random_theta: bool
    """True when sessions draw different θ (so θ ~ q differs from the posterior mean)."""

    def new_noise(self, slots: Tensor) -> Tensor:
        """Base noise ξ (len(slots), noise_dim) for new sessions in the env slots ``slots``."""
        ...

    def session_params(self, xi: Tensor) -> Tensor:
        """What acting needs for a whole session, computed once per session."""
        ...

    def act_distribution(self, params: Tensor, obs: Tensor) -> Distribution:
        """π(·|s) while acting, one row of ``params`` per row of ``obs``."""
        ...

    def sessions_distribution(self, params: Tensor, obs: Tensor) -> Distribution:
        """π(·|s) under each of K sessions' ``params`` (K rows of :meth:`session_params`) at each
        of the states ``obs`` (B, n_obs), in one pass: batch shape (K, B), row k equal to
        :meth:`act_distribution` of ``params[k]`` repeated B times."""
        ...

    def actor(self, params: Tensor) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        """obs ↦ (a ~ π(·|s), log π(a|s)) for :meth:`act_distribution` with ``params``, for one
        rollout without gradients: valid while ``params`` is only rewritten in place and the
        head's log σ is unchanged (the same draws and values as sampling the distribution)."""
        ...

    def mean_policy(self) -> Callable[[Tensor], Distribution]:
        """π(·|s) under the posterior-mean θ (the mean is computed once, not once per call)."""
        ...

    def variational(self, batch: Batch) -> tuple[nn.Module, Tensor, Tensor]:
        """``(q, ξ, rows)``: ``q(ξ)[0]`` is the θ table (K, d), ``rows`` (M,) indexes it."""
        ...

    def grouped_distribution(self, batch: Batch, theta: Tensor) -> Distribution:
        """π_{θ[rows_i]}(·|s_i) for every sample of ``batch``; θ is the table of ``variational``."""
        ...

    def log_prob(self, batch: Batch, theta: Tensor) -> Tensor:
        """log π_{θ[rows_i]}(a_i|s_i), shape (M,)."""
        ...

    def posterior_std(self) -> float:
        """Mean marginal σ of the posterior (0 for a point mass)."""
        ...

    # The nn.Module half the algorithms and the trainer use.
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> Any: ...
