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
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from rl import config as config_io
from rl.logger import ProgressLog
from rl.run import Run, check_action_settings, load_run, saved_config
from vi_flows import distributed, runfiles

__all__ = ["train", "RESUMABLE", "RUN_FILES"]

#: Config fields a resumed run may change (none of them alters the updates already made);
#: ``total_steps`` not when a schedule is timed by it (``TrainConfig.timed_by_total_steps``).
RESUMABLE = ("total_steps", "checkpoint_every", "target_return", "tensorboard")
#: What a run directory holds (``--overwrite`` removes exactly these).
RUN_FILES = ("config.json", "progress.csv", "checkpoint.pt", "eval.json", "tb")


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
        try:
            check_action_settings(run.cfg, run.envs.single_action_space)
        except ValueError:
            run.envs.close()
            raise
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
    bar = tqdm(total=cfg.num_updates, initial=run.update, disable=not progress, desc=cfg.algo)
    row: dict[str, float] = {}
    start = time.perf_counter() - run.elapsed
    try:
        while run.update < cfg.num_updates:
            batch, returns = run.collect()
            alpha, stats = run.learn(batch)
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
