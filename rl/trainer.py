"""The training loop shared by every algorithm: collect → GAE → update → log → checkpoint.

A run directory holds ``config.json``, ``progress.csv`` (one row per update), ``checkpoint.pt``
(everything needed to continue bit-for-bit: networks, optimizers, RNG states, the environments'
state as plain data and the slots' session noise; see :mod:`rl.checkpoint`), ``tb/`` TensorBoard
scalars and, after ``vi-rl eval``, ``eval.json``. Every file is written atomically and the
checkpoint is read with ``weights_only=True``: loading a run never executes code.

Under ``torchrun`` (several ranks, no new flags) every rank builds the same networks (seeded with
``seed``) and its own environments and ξ draws (seeded with
:func:`vi_flows.distributed.rank_seed`; rank 0 keeps ``seed``). ``num_envs`` and ``total_steps``
are per rank: N ranks make the same number of updates, each on an N-times larger global batch.
The updates all-reduce (see :mod:`rl.algorithms.base`); rank 0 alone writes the run directory,
and its checkpoint holds every rank's environments, collector and RNG state (gathered to rank 0)
plus ``world_size``: a resume needs the same number of ranks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rl import config as config_io
from rl.algorithms import ALGORITHMS, check_config
from rl.calibration import calibrate_std, initial_states
from rl.checkpoint import env_state, from_plain, load_env_state, to_plain
from rl.envs import RewardScaler, RunningMeanStd, make_envs
from rl.logger import ProgressLog
from rl.networks import mlp
from rl.policies import make_policy
from rl.rollout import Collector
from rl.temperature import AutoTemperature
from vi_flows import distributed, runfiles

__all__ = [
    "train",
    "Run",
    "build_policy",
    "resolve_std_target",
    "load_run",
    "RESUMABLE",
    "RUN_FILES",
]

#: Config fields a resumed run may change (none of them alters the updates already made);
#: ``total_steps`` not when a schedule is timed by it (``TrainConfig.timed_by_total_steps``).
RESUMABLE = ("total_steps", "checkpoint_every", "target_return", "tensorboard")
#: σ* of auto α for the policies whose posterior is not over network weights (action-mean,
#: auxiliary), when ``posterior_std_target`` is unset.
FIXED_STD_TARGET = 0.01
#: What a run directory holds (``--overwrite`` removes exactly these).
RUN_FILES = ("config.json", "progress.csv", "checkpoint.pt", "eval.json", "tb")


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
        return dataclasses.replace(cfg, posterior_std_target=float(options["init_scale"])), False
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
    """Everything a run holds, built from a config (no training logic here: :func:`train` steps
    it; :func:`load_run` restores one from a run directory).

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
        self.temperature = config_io.alpha_schedule(cfg)  # auto α: stepped by _loop

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


def _check_resume(cfg: Any, saved: Any) -> None:
    changed = [
        f"{f.name} ({getattr(saved, f.name)!r} -> {getattr(cfg, f.name, None)!r})"
        for f in dataclasses.fields(saved)
        if f.name not in RESUMABLE
        and getattr(cfg, f.name, None) != getattr(saved, f.name)
        # unset σ* means "calibrate": the saved run already holds its calibrated value
        and not (f.name == "posterior_std_target" and getattr(cfg, f.name, None) is None)
    ]
    if changed:
        raise ValueError(
            "resume keeps the saved config, which these settings would change: "
            f"{', '.join(changed)}; only {', '.join(RESUMABLE)} may change on resume "
            "(use a new --out for the others)"
        )
    if saved.timed_by_total_steps and cfg.total_steps != saved.total_steps:
        # e.g. anneal_lr's lr · (1 − update / num_updates): a new total would re-time every
        # remaining update (at the end of a run lr ≈ 0; doubling --steps would give lr / 2).
        raise ValueError(
            f"total_steps ({saved.total_steps} -> {cfg.total_steps}): this run's schedule is "
            f"timed by its total_steps (anneal_lr decays lr to 0 over them), so a resume keeps "
            f"--steps {saved.total_steps}; train further under a new --out"
        )


def _remove_run_files(out: Path) -> None:
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def train(
    cfg: Any,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[Run, dict], bool | None] | None = None,
    overwrite: bool = False,
) -> dict:
    """Train (or, with ``resume``, continue) the run in ``out``; returns the last progress row.

    With ``resume`` the saved config is used; ``cfg`` may differ from it only in
    :data:`RESUMABLE` fields (others raise ``ValueError`` naming them). A fresh run refuses an
    ``out`` that already holds a run unless ``overwrite``. If a fresh run fails before its first
    checkpoint, the files it wrote are removed (and ``out``, if it made it), so nothing half-made
    is left behind. ``callback(run, row)`` is called after every update (e.g. periodic
    evaluation, which should leave the torch RNG as it found it); returning True stops training
    after a checkpoint.

    Raises:
        ValueError: a bad config, an existing run without ``resume``/``overwrite``, a resume that
            changes a non-resumable field or asks for no more steps than are done.
        FileNotFoundError / vi_flows.runfiles.RunFileError: a missing or corrupt run to resume.
    """
    out = Path(out)
    if resume:
        saved = saved_config(out) if (out / "config.json").exists() else None
        if saved is None:
            raise FileNotFoundError(f"{out} has no config.json (not a vi-rl run)")
        _check_resume(cfg, saved)
        run = load_run(out, **{name: getattr(cfg, name) for name in RESUMABLE})
        if run.update >= run.cfg.num_updates:
            run.envs.close()
            done = run.collector.global_step
            raise ValueError(
                f"{out} has already done {run.update} updates ({done} env steps) and total_steps="
                f"{cfg.total_steps} asks for no more; pass --steps above {done} to continue"
            )
    else:
        existing = [name for name in RUN_FILES if (out / name).exists()]
        if existing and not overwrite:
            raise ValueError(
                f"--out {out} already holds a run ({', '.join(existing)}); pass --resume to "
                "continue it, --overwrite to replace it, or choose another --out"
            )
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file, not a folder")
        run = Run(cfg)  # bad settings fail here, before anything is written
        distributed.barrier()  # every rank has checked ``out`` before rank 0 changes it
        if existing and distributed.is_main():
            _remove_run_files(out)
    main = distributed.is_main()  # rank 0 alone writes the run directory
    created = not out.exists()
    checkpointed = resume
    try:
        if main:
            out.mkdir(parents=True, exist_ok=True)
            config_io.save(run.cfg, out / "config.json")
        row = _loop(run, out, resume, progress and main, callback)
        checkpointed = True
    except BaseException:
        if main and not checkpointed and not (out / "checkpoint.pt").exists():
            _remove_run_files(out)
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        raise
    finally:
        run.envs.close()
    return row


def _loop(run: Run, out: Path, resume: bool, progress: bool, callback) -> dict:
    cfg = run.cfg
    main, world = distributed.is_main(), distributed.world_size()
    log = ProgressLog(out, run.update if resume else None, cfg.tensorboard) if main else None
    schedule = run.temperature
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
            # auto α: the algorithm takes a dual step after each of its optimizer steps
            auto = schedule if isinstance(schedule, AutoTemperature) else None
            stats = run.algo.update(batch, alpha, auto)
            run.update += 1
            run.elapsed = time.perf_counter() - start
            nan = math.nan
            row = {
                "update": run.update,
                "env_steps": run.collector.global_step * world,  # all ranks step alike
                "wall_time": run.elapsed,
                "episodes": len(returns),
                "return_mean": float(np.mean(returns)) if returns else nan,
                "return_min": float(np.min(returns)) if returns else nan,
                "return_max": float(np.max(returns)) if returns else nan,
                "alpha": alpha,
                "posterior_std": run.policy.posterior_std(),
                "sps": run.collector.global_step * world / max(run.elapsed, 1e-9),
                **stats,
            }
            if log is not None:
                log.log(row)
            recent = run.collector.recent
            bar.set_postfix(ret=f"{np.mean(recent):.1f}" if recent else "-")
            bar.update()
            reached = len(recent) == recent.maxlen and np.mean(recent) >= cfg.target_return
            if callback is not None and callback(run, row):
                reached = True
            every = cfg.checkpoint_every  # 0: only at the end (as vi_flows.fit)
            periodic = every > 0 and run.update % every == 0
            if periodic or run.update == cfg.num_updates or reached:
                state = run.state_dict()  # a collective under several ranks
                if main:
                    runfiles.save(state, out / "checkpoint.pt")
            if reached:
                break
    finally:
        bar.close()
        if log is not None:
            log.close()
    row["recent_return"] = (
        float(np.mean(run.collector.recent)) if run.collector.recent else math.nan
    )
    return row
