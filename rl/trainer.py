"""The training loop shared by every algorithm: collect → GAE → update → log → checkpoint.

A run directory holds ``config.json``, ``progress.csv``, ``checkpoint.pt`` (everything needed to
continue bit-for-bit: networks, optimizers, RNG states, pickled environments and the slots' session
noise) and ``tb/`` TensorBoard scalars.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rl import config as config_io
from rl.algorithms import ALGORITHMS, check_config
from rl.envs import RewardScaler, RunningMeanStd, env_state, load_env_state, make_envs
from rl.logger import ProgressLog
from rl.networks import mlp
from rl.policies import make_policy
from rl.rollout import Collector

__all__ = ["train", "build_policy", "load_run"]


def build_policy(cfg: Any, obs_dim: int, action_space) -> torch.nn.Module:
    """The policy family the config asks for (see :mod:`rl.policies`)."""
    check_config(cfg)
    common = {
        "hidden": cfg.hidden,
        "activation": cfg.activation,
        "init_log_std": cfg.init_log_std,
        "learn_log_std": cfg.learn_log_std,
    }
    if cfg.policy == "bnn":
        options = json.loads(cfg.posterior_options)
        if cfg.posterior != "point":
            options.setdefault("init_scale", cfg.posterior_init_scale)
        return make_policy(
            "bnn",
            obs_dim,
            action_space,
            posterior=cfg.posterior,
            posterior_options=options,
            **common,
        )
    if cfg.policy == "particles":
        return make_policy(
            "particles",
            obs_dim,
            action_space,
            num_particles=cfg.num_particles,
            init_std=cfg.particle_init_std,
            **common,
        )
    if cfg.policy == "auxiliary":
        return make_policy("auxiliary", obs_dim, action_space, latent_dim=cfg.latent_dim, **common)
    return make_policy(cfg.policy, obs_dim, action_space, **common)


class _Run:
    """Everything a run holds, built from a config (no training logic here)."""

    def __init__(self, cfg: Any) -> None:
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.envs = make_envs(cfg.env_id, cfg.num_envs, cfg.seed)
        obs_dim = int(np.prod(self.envs.single_observation_space.shape))
        self.policy = build_policy(cfg, obs_dim, self.envs.single_action_space)
        self.critic = mlp(obs_dim, 1, cfg.hidden, cfg.activation, out_gain=1.0)
        self.algo = ALGORITHMS.get(cfg.algo).algorithm(cfg, self.policy, self.critic)
        self.normalizer = RunningMeanStd((obs_dim,)) if cfg.normalize_obs else None
        scaler = RewardScaler(cfg.num_envs, cfg.gamma) if cfg.normalize_reward else None
        self.collector = Collector(
            self.envs,
            self.policy,
            self.critic,
            cfg.rollout_steps,
            cfg.seed,
            self.normalizer,
            scaler,
        )
        self.update, self.elapsed = 0, 0.0

    def state_dict(self) -> dict:
        return {
            "update": self.update,
            "elapsed": self.elapsed,
            "policy": self.policy.state_dict(),
            "critic": self.critic.state_dict(),
            "algo": self.algo.state_dict(),
            "collector": self.collector.state_dict(),
            "normalizer": self.normalizer.state_dict() if self.normalizer else None,
            "envs": env_state(self.envs),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.update, self.elapsed = int(state["update"]), float(state["elapsed"])
        self.policy.load_state_dict(state["policy"])
        self.critic.load_state_dict(state["critic"])
        self.algo.load_state_dict(state["algo"])
        self.collector.load_state_dict(state["collector"])
        if self.normalizer is not None:
            self.normalizer.load_state_dict(state["normalizer"])
        load_env_state(self.envs, state["envs"])
        torch.set_rng_state(state["torch_rng"])


def load_run(out: Path, **overrides: Any) -> _Run:
    """Rebuild a run from ``out/config.json`` and ``out/checkpoint.pt``."""
    data = config_io.load_dict(out / "config.json")
    algo = data["algo"]
    cfg = config_io.with_overrides(ALGORITHMS.get(algo).config(), {**data, **overrides})
    run = _Run(cfg)
    run.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=False))
    return run


def train(
    cfg: Any,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[_Run, dict], bool | None] | None = None,
) -> dict:
    """Train (or, with ``resume``, continue) the run in ``out``; returns the last progress row.

    With ``resume`` the saved config is used, except ``total_steps`` which comes from ``cfg``.
    ``callback(run, row)`` is called after every update (e.g. periodic evaluation, which should
    leave the torch RNG as it found it); returning True stops training after a checkpoint.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        run = load_run(out, total_steps=cfg.total_steps)
    else:
        run = _Run(cfg)
    cfg = run.cfg
    config_io.save(cfg, out / "config.json")
    log = ProgressLog(out, run.update if resume else None, cfg.tensorboard)
    schedule = config_io.alpha_schedule(cfg)
    bar = tqdm(total=cfg.num_updates, initial=run.update, disable=not progress, desc=cfg.algo)
    row: dict[str, float] = {}
    start = time.perf_counter() - run.elapsed
    try:
        while run.update < cfg.num_updates:
            alpha = schedule(run.update)
            xi, returns, _ = run.collector.collect()
            batch = run.collector.buffer.batch(
                xi, cfg.gamma, cfg.gae_lambda, cfg.normalize_advantages
            )
            stats = run.algo.update(batch, alpha)
            run.update += 1
            run.elapsed = time.perf_counter() - start
            nan = math.nan
            row = {
                "update": run.update,
                "env_steps": run.collector.global_step,
                "wall_time": run.elapsed,
                "episodes": len(returns),
                "return_mean": float(np.mean(returns)) if returns else nan,
                "return_min": float(np.min(returns)) if returns else nan,
                "return_max": float(np.max(returns)) if returns else nan,
                "alpha": alpha,
                "posterior_std": run.policy.posterior_std(),
                "sps": run.collector.global_step / max(run.elapsed, 1e-9),
                **stats,
            }
            log.log(row)
            recent = run.collector.recent
            bar.set_postfix(ret=f"{np.mean(recent):.1f}" if recent else "-")
            bar.update()
            reached = len(recent) == recent.maxlen and np.mean(recent) >= cfg.target_return
            if callback is not None and callback(run, row):
                reached = True
            if run.update % cfg.checkpoint_every == 0 or run.update == cfg.num_updates or reached:
                torch.save(run.state_dict(), out / "checkpoint.pt")
            if reached:
                break
    finally:
        bar.close()
        log.close()
        run.envs.close()
    row["recent_return"] = (
        float(np.mean(run.collector.recent)) if run.collector.recent else math.nan
    )
    return row
