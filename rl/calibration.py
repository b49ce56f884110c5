r"""The default width of the weight posterior, calibrated on the policy it perturbs.

A per-weight standard deviation σ means very different things in different networks: the noise
it puts on a unit's pre-activation is σ‖x‖, which grows with the size of the layer's input (the
observation's dimension and scale, the hidden activations), and what matters to the agent is how
far that moves the policy *compared with the policy's own per-step noise*.

Measured on the initial policies at σ = 0.01 (``benchmarks/results/rl-dense/``):

=========================  ==========================  ===========
task                       network, action noise       ρ(σ = 0.01)
=========================  ==========================  ===========
Pendulum-v1                64-64 tanh, σ_a = 1         0.024
CartPole-v1                64-64 tanh, categorical     0.005
HalfCheetah-v5             256-256 ReLU, σ_a = e^-2    0.82
=========================  ==========================  ===========

so one σ is 34× larger a perturbation on HalfCheetah than on Pendulum, and V-PPO at σ = 0.01
trailed PPO there by 22% from the first evaluation, while σ = 0.001 (ρ ≈ 0.07) matched it.

**The spread.** For a posterior q = h_φ # N(0, I) over θ, the policy spread is

.. math::

    ρ(q) = \sqrt{2\, E_{s}\, E_{ξ ∼ N(0, I)}\, \mathrm{KL}\big(π_{h_φ(ξ)}(·|s)\,\big\|\,
            π_{h_φ(0)}(·|s)\big)},

the root-mean-square distance, in KL units, of a session's policy from the policy at the base's
mode. For a Gaussian action head with noise σ_a it is the rms shift of the action mean measured
in σ_a (over all action dimensions together); for a categorical head, to second order, the std
under π of the logits' shift. Both are "how much of the per-step noise the per-episode draw
adds", in one unit.

**The calibration.** With ``posterior_std_target`` unset (the default), the trainer picks the
σ* at which the *initial* posterior N(θ₀, σ*² I) has ρ = ``policy_spread_target`` (default
0.025, the spread of Pendulum's validated σ* = 0.01), on states a run will meet early: N(0, I)
under observation normalisation (what the normaliser outputs), else the environment's reset
states. ρ is close to proportional to σ here, so the fixed-point step σ ← σ ρ*/ρ(σ) on fixed
draws ξ converges in two or three steps (:func:`calibrate_std`). Auto α then keeps the
posterior's entropy per weight at least that of N(0, σ*²), as before; ``config.json`` records
the calibrated σ*, so a resumed run does not calibrate again.

>>> import gymnasium as gym
>>> from rl.policies import BNNPolicy
>>> space = gym.spaces.Box(-1.0, 1.0, (1,))
>>> def build(s):
...     return BNNPolicy(3, space, (16, 16), "gaussian", {"init_scale": s})
>>> obs = torch.randn(32, 3)
>>> sigma = calibrate_std(build, obs, target=0.05)
>>> abs(policy_spread(build(sigma), obs, torch.randn(32, build(sigma).noise_dim)) / 0.05 - 1) < 0.2
True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence

from rl.envs import make_envs
from rl.policy_api import PolicyFamily

__all__ = [
    "policy_spread",
    "session_kls",
    "calibrate_std",
    "initial_states",
    "CALIBRATION_DRAWS",
    "CALIBRATION_STATES",
]

#: States and ξ draws the calibration averages over.
CALIBRATION_STATES, CALIBRATION_DRAWS = 64, 32


@torch.no_grad()
def session_kls(
    policy: PolicyFamily, obs: Tensor, xi: Tensor, dist: Distribution | None = None
) -> Tensor:
    """KL(π_θ(ξ_k)(·|s) ‖ π_θ(0)(·|s)) averaged over the states, one entry per draw: the terms of
    :func:`policy_spread`.

    Args:
        policy: the policy family.
        obs: the states (B, n_obs).
        xi: the draws (K, d).
        dist: ``policy.sessions_distribution(policy.session_params(xi), obs)`` (batch (K, B)),
            where the caller already has it (it must be of these ``xi`` and ``obs``).

    Returns:
        The K mean KLs.
    """
    center = policy.session_params(xi.new_zeros(1, xi.shape[1]))
    reference = policy.act_distribution(center.expand(obs.shape[0], -1), obs)
    if dist is None:
        dist = policy.sessions_distribution(policy.session_params(xi), obs)
    return kl_divergence(dist, reference).mean(-1)


def policy_spread(policy: PolicyFamily, obs: Tensor, xi: Tensor) -> float:
    """ρ of the module docstring: √(2 · mean KL(π_θ(ξ_k)(·|s) ‖ π_θ(0)(·|s))) over the draws
    ``xi`` (K, d) and the states ``obs`` (B, n_obs)."""
    return math.sqrt(2.0 * max(float(session_kls(policy, obs, xi).mean()), 0.0))


def calibrate_std(
    build: Callable[[float], PolicyFamily],
    obs: Tensor,
    target: float,
    start: float = 0.01,
    draws: int = CALIBRATION_DRAWS,
    steps: int = 6,
    tol: float = 0.02,
) -> float:
    """The initial width σ at which the posterior ``build(σ)`` has spread ``target`` on ``obs``.

    Every ``build(σ)`` runs from the same torch RNG state, so θ₀ is the same network each time;
    the draws ξ are fixed too, which makes ρ(σ) a smooth function of σ alone. The torch RNG is
    left as it was found.

    Args:
        build: σ ↦ the policy whose posterior starts at width σ.
        obs: states (B, n_obs) to average over.
        target: ρ* > 0.
        start: the first σ tried.
        draws: ξ draws K.
        steps: fixed-point steps σ ← σ ρ*/ρ(σ) at most.
        tol: stop once |ρ/ρ* − 1| is below this (else warn after ``steps`` steps and return
            the last σ).

    Raises:
        ValueError: when the posterior does not move the policy at all (ρ = 0 at ``start``; e.g.
            a posterior the policy does not read).
    """
    if not target > 0:
        raise ValueError(f"policy_spread_target must be > 0, got {target!r}")
    sigma = start
    with torch.random.fork_rng(devices=[]):
        state = torch.get_rng_state()
        xi = None
        for _ in range(steps):
            torch.set_rng_state(state)
            policy = build(sigma)
            if xi is None:
                xi = torch.randn(draws, policy.noise_dim)
            rho = policy_spread(policy, obs, xi)
            if not rho > 0:
                raise ValueError(
                    f"cannot calibrate posterior_std_target: the posterior at σ = {sigma:g} does "
                    "not move the policy (an action space with one action, or a posterior the "
                    "policy does not read); set posterior_std_target explicitly"
                )
            if abs(rho / target - 1.0) < tol:
                return float(sigma)
            sigma *= target / rho
    warnings.warn(
        f"posterior_std_target calibration did not converge: spread {rho:.3g} at σ = "
        f"{sigma * rho / target:.3g} against policy_spread_target {target:g}; using σ = "
        f"{sigma:.3g} (set posterior_std_target to fix it)",
        stacklevel=2,
    )
    return float(sigma)


def initial_states(
    env_id: str, obs_dim: int, normalized: bool, seed: int, n: int = CALIBRATION_STATES
) -> Tensor:
    """States (n, obs_dim) a run meets early: N(0, I) when observations are normalised (the
    normaliser's output), else the reset states of ``env_id`` for seeds seed, seed + 1, …
    (a separate gymnasium env, so the run's own environments are untouched)."""
    if normalized:
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(n, obs_dim, generator=generator)
    envs = make_envs(env_id, 1, seed)
    try:
        rows = [envs.reset(seed=seed + i)[0].reshape(-1) for i in range(n)]
    finally:
        envs.close()
    return torch.as_tensor(np.stack(rows), dtype=torch.float32)
