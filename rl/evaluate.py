"""Evaluate a trained run: θ = the posterior mean, and θ drawn from the posterior per episode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from rl.envs import make_envs
from rl.trainer import load_run

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    out: str | Path, episodes: int = 10, stochastic_actions: bool = False, seed: int = 12345
) -> dict[str, dict[str, float]]:
    """Returns per mode ("mean", "sampled") the mean/std/min/max return over ``episodes``.

    "mean" acts with the posterior-mean θ (μ_φ(s) for §3.1/3.2), "sampled" draws θ ~ q_φ once per
    episode; actions are the mode of π unless ``stochastic_actions``. Writes ``eval.json``.
    """
    out = Path(out)
    run = load_run(out)
    policy, cfg = run.policy, run.cfg
    run.envs.close()
    torch.manual_seed(seed)
    results = {}
    for mode in ("mean", "sampled"):
        envs = make_envs(cfg.env_id, 1, seed)
        returns = []
        for episode in range(episodes):
            obs, _ = envs.reset(seed=seed + episode)
            xi = policy.new_noise(torch.zeros(1, dtype=torch.long))
            params = policy.session_params(xi)
            total, done = 0.0, False
            while not done:
                x = torch.as_tensor(obs.reshape(1, -1), dtype=torch.float32)
                if run.normalizer is not None:
                    x = torch.as_tensor(run.normalizer.normalize(obs.reshape(1, -1)))
                if mode == "mean":
                    dist = policy.mean_act_distribution(x)
                else:
                    dist = policy.act_distribution(params, x)
                action = dist.sample() if stochastic_actions else policy.head.mode(dist)
                obs, reward, term, trunc, _ = envs.step(policy.head.to_env(action))
                total += float(reward[0])
                done = bool(term[0] or trunc[0])
            returns.append(total)
        envs.close()
        r = np.asarray(returns)
        results[mode] = {
            "return_mean": float(r.mean()),
            "return_std": float(r.std()),
            "return_min": float(r.min()),
            "return_max": float(r.max()),
        }
    (out / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
