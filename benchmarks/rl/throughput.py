"""Training throughput of rl/'s algorithms against SB3 PPO and the env's random-action ceiling."""

from __future__ import annotations

import csv
import dataclasses
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["throughput"]


def throughput(root: Path, quick: bool) -> list[dict[str, Any]]:
    """Training env-steps/s, in this one process, alternating between methods (median of
    repeats): rl/ algorithms, SB3 PPO with the same network / n_envs / n_steps / minibatch /
    epochs, and the random-action stepping rate of the same vector env (the ceiling). Pendulum-v1
    with every rl/ algorithm; HalfCheetah-v5 (when mujoco is installed) with PPO and V-PPO."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from rl.algorithms import default_config
    from rl.envs import make_envs
    from rl.trainer import train

    n_envs, n_steps = 8, 256
    steps, repeats = (10_240, 3) if quick else (20_480, 3)
    envs_algos = [
        ("Pendulum-v1", ["ppo", "vppo", "trpo", "vtrpo", "reinforce", "vreinforce", "svpg"])
    ]
    try:
        import mujoco  # noqa: F401

        envs_algos.append(("HalfCheetah-v5", ["ppo", "vppo"]))
    except ImportError:
        print("HalfCheetah-v5 throughput skipped: the mujoco package is not installed")
    timings: dict[tuple[str, str], list[float]] = defaultdict(list)
    tmp = root / "throughput-runs"
    for rep in range(repeats):
        for env_id, algos in envs_algos:
            shared = {"env_id": env_id, "num_envs": n_envs, "rollout_steps": n_steps}
            envs = make_envs(env_id, n_envs, rep)
            envs.reset(seed=rep)
            start = time.perf_counter()
            for _ in range(steps // n_envs):
                envs.step(envs.action_space.sample())
            timings[env_id, "random actions (ceiling)"].append(
                steps / (time.perf_counter() - start)
            )
            envs.close()
            for algo in algos:
                cfg = default_config(algo, **shared, total_steps=steps, seed=rep)
                cfg = dataclasses.replace(cfg, checkpoint_every=10**9, tensorboard=False)
                start = time.perf_counter()
                train(cfg, tmp / algo, progress=False, overwrite=True)
                timings[env_id, algo].append(steps / (time.perf_counter() - start))
            venv = make_vec_env(env_id, n_envs=n_envs, seed=rep)
            model = PPO(
                "MlpPolicy",
                venv,
                n_steps=n_steps,
                batch_size=256,
                n_epochs=10,
                seed=rep,
                device="cpu",
            )
            start = time.perf_counter()
            model.learn(total_timesteps=steps)
            timings[env_id, "sb3-ppo"].append(steps / (time.perf_counter() - start))
            venv.close()
    shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for (env_id, name), v in timings.items():
        ref = float(np.median(timings[env_id, "sb3-ppo"]))
        rows.append(
            {
                "env": env_id,
                "method": name,
                "median_steps_per_s": float(np.median(v)),
                "ratio_to_sb3_ppo": float(np.median(v)) / ref,
                "repeats": len(v),
            }
        )
    with (root / "throughput.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"Training env steps/s, n_envs {n_envs}, n_steps {n_steps}, {steps} steps per run, "
        f"median of {repeats} alternating repeats in one process (1 torch thread). PPO-style "
        "methods: 10 epochs, minibatch 256, 64-64 tanh networks (rl/ defaults otherwise).",
        "",
        "| env | method | env steps/s | ratio to SB3 PPO |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['env']} | {r['method']} | {r['median_steps_per_s']:.0f} | "
        f"{r['ratio_to_sb3_ppo']:.2f} |"
        for r in rows
    ]
    (root / "throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows
