"""Evaluate a trained run: θ = the posterior mean, and θ drawn from the posterior per episode.

The N episodes run side by side in an N-slot vector env (episode i is reset with seed + i), each
slot stopping at the end of its first episode, so an evaluation costs one batched forward pass per
time step rather than one per episode step.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from rl.envs import RunningMeanStd, make_envs
from rl.policy_api import PolicyFamily
from vi_flows.runfiles import strict_json, write_text

__all__ = ["MAX_EPISODE_STEPS", "evaluate", "evaluate_policy", "run_episodes"]


#: Step cap of an evaluation episode, unless the env registers a longer time limit.
MAX_EPISODE_STEPS = 10_000


def _step_cap(env_id: str) -> int:
    """:data:`MAX_EPISODE_STEPS`, or the env's registered time limit where that is longer."""
    try:
        limit = gym.spec(env_id.rpartition(":")[2]).max_episode_steps
    except gym.error.Error:  # an id make_envs resolves otherwise (it checks ids itself)
        limit = None
    return max(MAX_EPISODE_STEPS, limit or 0)


@torch.no_grad()
def run_episodes(env_id: str, episodes: int, seed: int, act) -> np.ndarray:
    """Returns of ``episodes`` episodes (episode i reset with ``seed + i``), all run at once.

    ``act(obs (N, obs_dim) float array) -> env actions (N, …)`` chooses the actions of every slot.
    Episodes still running after :data:`MAX_EPISODE_STEPS` steps (or the env's registered
    time limit, if longer) are cut there, with a warning: in an env without a time limit a
    policy that never ends an episode would otherwise never return.
    """
    envs = make_envs(env_id, episodes, seed)
    cap = _step_cap(env_id)
    try:
        obs, _ = envs.reset(seed=[seed + i for i in range(episodes)])
        totals = np.zeros(episodes)
        running = np.ones(episodes, dtype=bool)
        for _ in range(cap):
            obs, reward, term, trunc, _ = envs.step(act(obs.reshape(episodes, -1)))
            totals += np.where(running, reward, 0.0)
            running &= ~np.logical_or(term, trunc)
            if not running.any():
                break
        else:
            warnings.warn(
                f"{env_id}: {int(running.sum())} of {episodes} evaluation episodes were still "
                f"running after {cap} steps and were cut there; their returns are partial",
                stacklevel=2,
            )
    finally:
        envs.close()
    return totals


def _summary(returns: np.ndarray) -> dict[str, float]:
    return {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
    }


@torch.no_grad()
def evaluate_policy(
    policy: PolicyFamily,
    env_id: str,
    episodes: int = 10,
    seed: int = 12345,
    normalizer: RunningMeanStd | None = None,
    stochastic_actions: bool = False,
    modes: Sequence[str] = ("mean", "sampled"),
) -> dict[str, dict[str, float]]:
    """Per mode ("mean": posterior-mean θ, "sampled": θ ~ q_φ once per episode) the return stats.

    Actions are the mode of π unless ``stochastic_actions``. Uses (and restores) the torch RNG
    seeded with ``seed`` for the θ draws.
    """
    rng = torch.get_rng_state()
    torch.manual_seed(seed)
    results = {}
    mean_dist = policy.mean_policy()  # the mean θ once, not once per step
    try:
        for mode in modes:
            params = policy.session_params(policy.new_noise(torch.arange(episodes)))

            def act(obs: np.ndarray, mode: str = mode, params=params) -> np.ndarray:
                if normalizer is not None:
                    x = torch.as_tensor(normalizer.normalize(obs))
                else:
                    x = torch.as_tensor(obs, dtype=torch.float32)
                if mode == "mean":
                    dist = mean_dist(x)
                else:
                    dist = policy.act_distribution(params, x)
                action = dist.sample() if stochastic_actions else policy.head.mode(dist)
                return policy.head.to_env(action)

            results[mode] = _summary(run_episodes(env_id, episodes, seed, act))
    finally:
        torch.set_rng_state(rng)
    return results


def evaluate(
    out: str | Path, episodes: int = 10, stochastic_actions: bool = False, seed: int = 12345
) -> dict[str, dict[str, float]]:
    """Returns per mode ("mean", "sampled") the mean/std/min/max return over ``episodes``.

    "mean" acts with the posterior-mean θ (μ_φ(s) for §3.1/3.2), "sampled" draws θ ~ q_φ once per
    episode; actions are the mode of π unless ``stochastic_actions``. Writes ``eval.json``.
    """
    from rl.run import load_run

    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"--episodes must be an integer >= 1, got {episodes!r}")
    out = Path(out)
    run = load_run(out, restore_envs=False)
    run.envs.close()
    results = evaluate_policy(
        run.policy, run.cfg.env_id, episodes, seed, run.normalizer, stochastic_actions
    )
    write_text(out / "eval.json", strict_json(results, indent=2) + "\n")
    return results
