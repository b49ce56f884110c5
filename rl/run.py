"""A training run's state: everything it holds, built from a config, and its restoration from
a run directory (:func:`load_run`). :mod:`rl.trainer` steps it.

Under several ranks (torchrun) every rank builds the same networks (seeded with ``seed``) and
its own environments and ξ draws (seeded with :func:`vi_flows.distributed.rank_seed`); rank 0's
checkpoint holds every rank's own part (:meth:`Run.state_dict`).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rl import config as config_io
from rl.algorithms import ALGORITHMS, check_config
from rl.buffer import Batch
from rl.calibration import calibrate_std, initial_states
from rl.checkpoint import env_state, from_plain, load_env_state, to_plain
from rl.envs import RewardScaler, RunningMeanStd, make_envs
from rl.networks import mlp
from rl.policies import make_policy
from rl.rollout import Collector
from rl.temperature import AutoTemperature
from vi_flows import distributed, runfiles

__all__ = [
    "FIXED_STD_TARGET",
    "Run",
    "build_policy",
    "check_action_settings",
    "check_world_size",
    "load_run",
    "resolve_std_target",
    "saved_config",
]

#: σ* of auto α for the policies whose posterior is not over network weights (action-mean,
#: auxiliary), when ``posterior_std_target`` is unset.
FIXED_STD_TARGET = 0.01


def build_policy(cfg: Any, obs_dim: int, action_space) -> torch.nn.Module:
    """The policy family the config asks for (see :mod:`rl.policies`); an unset
    ``posterior_std_target`` is resolved first (:func:`resolve_std_target`)."""
    check_config(cfg)
    if cfg.alpha_schedule == "auto" and cfg.posterior_std_target is None:
        cfg, _ = resolve_std_target(cfg, obs_dim, action_space)
    common = {
        "hidden": cfg.hidden,
        "activation": cfg.activation,
        "init_log_std": cfg.init_log_std,
        "learn_log_std": cfg.learn_log_std,
        "action_rescale": cfg.action_rescale,
    }
    if cfg.policy == "bnn":
        options = json.loads(cfg.posterior_options)
        if cfg.posterior != "point":
            # auto α starts the posterior at its target width σ*, so h starts at h* and the dual
            # step has nothing to undo (a wider start is slack: nothing would narrow it).
            auto = cfg.alpha_schedule == "auto"
            options.setdefault(
                "init_scale", cfg.posterior_std_target if auto else cfg.posterior_init_scale
            )
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


def check_action_settings(cfg: Any, action_space: gym.Space) -> None:
    """Refuse, for a new run, settings of the Box head on a discrete action space (they would be
    ignored). Saved runs are not checked: older ones may hold such settings, unused."""
    if not isinstance(action_space, gym.spaces.Discrete):
        return
    box_only = {
        "init_log_std": 0.0,
        "learn_log_std": True,
        "rpo_alpha": 0.0,
        "action_rescale": "auto",
    }
    fields = {f.name for f in dataclasses.fields(cfg)}
    for name, default in box_only.items():
        if name in fields and getattr(cfg, name) != default:
            raise ValueError(
                f"{name} is for Box actions; {cfg.env_id} has discrete actions (leave it at "
                f"{default})"
            )


def resolve_std_target(cfg: Any, obs_dim: int, action_space) -> tuple[Any, bool]:
    """``cfg`` with ``posterior_std_target`` set, and whether it was calibrated.

    Only auto α reads σ*. Unset (None), it is calibrated for a bnn posterior whose initial width
    it sets (:mod:`rl.calibration`; the same on every rank: the states and draws depend on
    ``seed`` alone), the ``init_scale`` of ``posterior_options`` when that fixes the width, and
    :data:`FIXED_STD_TARGET` for the other policies (θ(s) of action-mean / auxiliary policies is
    in action units, not weights). The calibration measures the network θ₀ that
    :func:`build_policy` draws from the torch RNG as it is now (and leaves the RNG as it was), so
    call it where the run builds its policy.
    """
    if cfg.alpha_schedule != "auto" or cfg.posterior_std_target is not None:
        return cfg, False
    options = json.loads(cfg.posterior_options)
    if cfg.policy != "bnn" or cfg.posterior == "point":
        return dataclasses.replace(cfg, posterior_std_target=FIXED_STD_TARGET), False
    if "init_scale" in options:
        scale = options["init_scale"]
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale < np.inf:
            raise ValueError(
                f"posterior_options: init_scale must be a number > 0 and finite, got {scale!r}"
            )
        return dataclasses.replace(cfg, posterior_std_target=float(scale)), False
    obs = initial_states(cfg.env_id, obs_dim, cfg.normalize_obs, cfg.seed)
    sigma = calibrate_std(
        lambda s: build_policy(
            dataclasses.replace(cfg, posterior_std_target=s), obs_dim, action_space
        ),
        obs,
        cfg.policy_spread_target,
    )
    return dataclasses.replace(cfg, posterior_std_target=sigma), True


class Run:
    """Everything a run holds, built from a config, and its two steps: :meth:`collect` and
    :meth:`learn` (:func:`rl.trainer.train` loops over them, logs and checkpoints;
    :func:`load_run` restores a run from a run directory).

    Args:
        cfg: a resolved algorithm config (:func:`rl.algorithms.default_config` and its fields);
            an unset ``posterior_std_target`` is calibrated here (:func:`resolve_std_target`).

    Attributes:
        cfg: the config as resolved (the calibrated σ* filled in).
        calibrated: whether σ* was calibrated.
        envs: the vector env (this rank's slots).
        policy, critic: the policy family and V(s).
        algo: the algorithm's update (:data:`rl.algorithms.ALGORITHMS`).
        normalizer: running observation statistics (None without ``normalize_obs``).
        collector: steps ``envs`` and fills the rollout buffer.
        temperature: the α schedule (an :class:`rl.temperature.AutoTemperature` under auto α).
        update, elapsed: updates done and training seconds so far.
    """

    def __init__(self, cfg: Any) -> None:
        torch.manual_seed(cfg.seed)
        seed = distributed.rank_seed(cfg.seed)  # env seeds and ξ draws: per rank (rank 0: seed)
        self.envs = make_envs(cfg.env_id, cfg.num_envs, seed, cfg.env_backend)
        obs_dim = int(np.prod(self.envs.single_observation_space.shape))
        try:
            check_config(cfg)
            cfg, self.calibrated = resolve_std_target(cfg, obs_dim, self.envs.single_action_space)
            self.cfg = cfg
            self.policy = build_policy(cfg, obs_dim, self.envs.single_action_space)
        except BaseException:
            self.envs.close()
            raise
        self.critic = mlp(obs_dim, 1, cfg.hidden, cfg.activation, out_gain=1.0)
        if distributed.rank() > 0:  # same networks on every rank, then this rank's own stream
            torch.manual_seed(seed)
        self.algo = ALGORITHMS.get(cfg.algo).algorithm(cfg, self.policy, self.critic)
        self.normalizer = RunningMeanStd((obs_dim,)) if cfg.normalize_obs else None
        scaler = RewardScaler(cfg.num_envs, cfg.gamma) if cfg.normalize_reward else None
        self.collector = Collector(
            self.envs,
            self.policy,
            self.critic,
            cfg.rollout_steps,
            seed,
            self.normalizer,
            scaler,
        )
        self.update, self.elapsed = 0, 0.0
        self.temperature = config_io.alpha_schedule(cfg)  # auto α: stepped by learn

    def collect(self) -> tuple[Batch, list[float]]:
        """One rollout and its GAE batch; also the returns of the episodes that ended in it."""
        cfg = self.cfg
        xi, returns, _ = self.collector.collect()
        batch = self.collector.buffer.batch(xi, cfg.gamma, cfg.gae_lambda, cfg.normalize_advantages)
        return batch, returns

    def learn(self, batch: Batch) -> tuple[float, dict[str, float]]:
        """One update on ``batch`` at this update's α, counted in :attr:`update`; returns α and
        the algorithm's statistics. Under auto α the algorithm takes a dual step after each of
        its optimizer steps."""
        schedule = self.temperature
        alpha = schedule(self.update)
        auto = schedule if isinstance(schedule, AutoTemperature) else None
        stats = self.algo.update(batch, alpha, auto)
        self.update += 1
        return alpha, stats

    def state_dict(self) -> dict | None:
        """Tensors and plain data only (numpy tagged by :func:`rl.checkpoint.to_plain`).

        Under several ranks this is a collective: every rank's own part (collector, envs, torch
        RNG) is gathered into ``ranks`` (on rank 0; the others get None).
        """
        own = {
            "collector": self.collector.state_dict(),
            "envs": env_state(self.envs),
            "torch_rng": torch.get_rng_state(),
        }
        state = {
            "update": self.update,
            "elapsed": self.elapsed,
            "policy": self.policy.state_dict(),
            "critic": self.critic.state_dict(),
            "algo": self.algo.state_dict(),
            "normalizer": self.normalizer.state_dict() if self.normalizer else None,
            # the same on every rank (the dual step uses the all-reduced entropy)
            "temperature": self.temperature.state_dict()
            if isinstance(self.temperature, AutoTemperature)
            else None,
            **own,
        }
        if distributed.is_distributed():
            parts = _gather_to_main(to_plain(own))
            if not distributed.is_main():
                return None
            state = {**state, "world_size": distributed.world_size(), "ranks": parts}
        return to_plain(state)

    def load_state_dict(self, state: dict, restore_envs: bool = True) -> None:
        """Restore :meth:`state_dict`; in-flight episodes of opaque envs restart (warned).

        ``restore_envs=False`` skips the environments (evaluation runs its own).
        """
        if restore_envs and "ranks" in state:  # several ranks: this rank's own part
            state = {**state, **state["ranks"][distributed.rank()]}
        state = from_plain(state)
        self.update, self.elapsed = int(state["update"]), float(state["elapsed"])
        self.policy.load_state_dict(state["policy"])
        self.critic.load_state_dict(state["critic"])
        self.algo.load_state_dict(state["algo"])
        self.collector.load_state_dict(state["collector"])
        if self.normalizer is not None:
            self.normalizer.load_state_dict(state["normalizer"])
        opaque = load_env_state(self.envs, state["envs"]) if restore_envs else []
        torch.set_rng_state(state["torch_rng"])
        if isinstance(self.temperature, AutoTemperature):
            self.temperature.load_state_dict(state["temperature"])
        if opaque:
            self._restart_episodes(opaque)

    def _restart_episodes(self, opaque: list[str]) -> None:
        # The env state in these attributes was not saved: continuing mid-episode would mix the
        # saved observation with a fresh simulator, so every slot starts a new episode instead.
        warnings.warn(
            f"{self.cfg.env_id}: env state in {', '.join(opaque)} is not plain data and was not "
            "checkpointed; the resumed run restarts the in-flight episodes (not bit-for-bit)",
            stacklevel=3,
        )
        c = self.collector
        seed = distributed.rank_seed(self.cfg.seed + 100_003 * (self.update + 1))
        c.obs, _ = self.envs.reset(seed=seed)
        c.ep_return[:], c.ep_length[:] = 0.0, 0
        c.slot_xi = self.policy.new_noise(torch.arange(c.num_envs))


def _gather_to_main(obj: Any) -> list | None:
    """``obj`` of every rank in rank order on rank 0 (None elsewhere); a collective."""
    import torch.distributed as dist

    parts = [None] * distributed.world_size() if distributed.is_main() else None
    dist.gather_object(obj, parts, dst=0)
    return parts


def check_world_size(state: dict, path: Path) -> None:
    """Refuse to resume a checkpoint written by another number of ranks (one-line ValueError)."""
    saved, now = int(state.get("world_size", 1)), distributed.world_size()
    if saved != now:
        how = f"torchrun --nproc_per_node {saved}" if saved > 1 else "one plain process"
        raise ValueError(
            f"{path} was written by {saved} rank(s) but this job has {now}; resume it with the "
            f"same number of ranks ({how}) or start a new --out"
        )


def saved_config(out: Path) -> Any:
    """The config of the run in ``out`` (``config.json``)."""
    path = out / "config.json"
    data = config_io.load_dict(path)
    algo = data.get("algo")
    # a run saved before action_rescale existed acted in the env's own units
    data.setdefault("action_rescale", "off")
    if algo not in ALGORITHMS:
        raise ValueError(f"{path}: field 'algo' = {algo!r} is not one of {', '.join(ALGORITHMS)}")
    try:
        return config_io.with_overrides(ALGORITHMS.get(algo).config(), data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def load_run(out: Path, restore_envs: bool = True, **overrides: Any) -> Run:
    """Rebuild a run from ``out/config.json`` and ``out/checkpoint.pt`` (no code is loaded).

    ``overrides`` replace config fields; ``restore_envs=False`` leaves the environments fresh.
    """
    out = Path(out)
    if not (out / "checkpoint.pt").exists():
        raise FileNotFoundError(f"{out} has no checkpoint.pt (not a vi-rl run, or not resumable)")
    cfg = config_io.with_overrides(saved_config(out), overrides)
    state = runfiles.load(out / "checkpoint.pt")
    if restore_envs:
        check_world_size(state, out / "checkpoint.pt")
    run = Run(cfg)
    try:
        run.load_state_dict(state, restore_envs)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        run.envs.close()
        raise runfiles.RunFileError(
            f"{out / 'checkpoint.pt'}: does not match {out / 'config.json'} ({type(err).__name__}: "
            f"{err})"
        ) from None
    return run
