"""Training throughput of rl/'s algorithms against SB3 PPO and the env's random-action ceiling."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.files import write_rows, write_text
from benchmarks.rl.suites import has_envpool, has_mujoco
from benchmarks.rl.throughput_one import N_ENVS, N_STEPS, SB3_EPOCHS, SB3_MINIBATCH
from rl.config import TrainConfig

__all__ = ["throughput"]


def _run_one(env_id: str, method: str, steps: int, seed: int) -> dict[str, Any]:
    """One :mod:`benchmarks.rl.throughput_one` measurement in a fresh Python process."""
    cmd = [sys.executable, "-m", "benchmarks.rl.throughput_one", "--env", env_id]
    cmd += ["--method", method, "--steps", str(steps), "--seed", str(seed)]
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=repo).stdout
    return json.loads(out.strip().splitlines()[-1])


def throughput(root: Path, quick: bool, repeats: int | None = None) -> list[dict[str, Any]]:
    """Training env-steps/s, each (method, repeat) in its own fresh process
    (:mod:`benchmarks.rl.throughput_one`), alternating between methods, each repeat in a rotated
    order (no method always runs last or always next to SB3's run), median of the repeats:
    rl/ algorithms, SB3 PPO with the same network / n_envs / n_steps / minibatch / epochs (the
    critic's included), and the random-action stepping rate of the same vector env (the ceiling).
    Pendulum-v1 with every rl/ algorithm; DeepSea10 (10-step episodes) and HalfCheetah-v5 (when
    mujoco is installed) with PPO and V-PPO."""
    steps, default_repeats = (10_240, 3) if quick else (20_480, 5)
    repeats = repeats or default_repeats
    # "+envpool": the same run on rl/'s EnvPool backend (rl.envpool_env), when it is installed.
    pool = ["random+envpool", "ppo+envpool", "vppo+envpool"] if has_envpool() else []
    if not pool:
        print("EnvPool rows skipped: the envpool package is not installed")
    envs_algos = [
        ("Pendulum-v1", ["ppo", "vppo", "trpo", "vtrpo", "reinforce", "vreinforce", "svpg", *pool])
    ]
    # Short episodes: ~200 sessions per rollout, so a minibatch holds many distinct θ.
    envs_algos.append(("vi-flows/DeepSea10-v0", ["ppo", "vppo"]))
    if has_mujoco():
        envs_algos.append(("HalfCheetah-v5", ["ppo", "vppo", *pool]))
    else:
        print("HalfCheetah-v5 throughput skipped: the mujoco package is not installed")
    timings: dict[tuple[str, str], list[float]] = defaultdict(list)
    for rep in range(repeats):
        for env_id, algos in envs_algos:
            methods = ["random", *algos, "sb3-ppo"]
            turn = rep % len(methods)
            for method in methods[turn:] + methods[:turn]:
                result = _run_one(env_id, method, steps, rep)
                name = method.replace("random", "random actions (ceiling)")
                timings[env_id, name].append(result["steps_per_s"])
                print(
                    f"{env_id} {name} repeat {rep}: {result['steps_per_s']:.0f} steps/s", flush=True
                )
    rows = []
    for (env_id, name), v in timings.items():
        sb3 = timings[env_id, "sb3-ppo"]
        # The machine's speed drifts between repeats (a shared host), so each repeat's ratio
        # to the SB3 run of the same repeat, minutes apart at most, is the sturdier statistic.
        paired = np.asarray(v) / np.asarray(sb3)
        rows.append(
            {
                "env": env_id,
                "method": name,
                "median_steps_per_s": float(np.median(v)),
                "ratio_to_sb3_ppo": float(np.median(v)) / float(np.median(sb3)),
                "median_paired_ratio": float(np.median(paired)),
                "paired_ratio_min": float(paired.min()),
                "paired_ratio_max": float(paired.max()),
                "repeats": len(v),
            }
        )
    write_rows(root / "throughput.csv", rows)
    lines = [
        f"Training env steps/s, n_envs {N_ENVS}, n_steps {N_STEPS}, {steps} steps per run, "
        f"median of {repeats} repeats, each method and repeat a fresh process, methods "
        "alternating in an order rotated every repeat (1 torch thread; the clock runs from "
        "building the envs and the learner to the end of training, imports off the clock). "
        f"PPO-style methods: {SB3_EPOCHS} epochs, "
        f"minibatch {SB3_MINIBATCH}, 64-64 tanh networks; every rl/ row fits its critic for "
        f"{SB3_EPOCHS} epochs of minibatch {SB3_MINIBATCH} (`value_epochs`, "
        "`value_minibatch_size`), the steps SB3's joint loss gives its value network, and the "
        "PPO-style rows take them on the policy's minibatches with one backward for both "
        "losses, as SB3 does (rl/ defaults otherwise: its default `value_epochs` is "
        f"{TrainConfig.value_epochs}). "
        "ppo and vppo on Box actions (Pendulum, HalfCheetah) take each minibatch's gradients by "
        "the written-out chain rule (rl.written_out, their default there); every other row, "
        "DeepSea10's discrete ppo and vppo included, goes through autograd. `+envpool`: rl/'s "
        "EnvPool backend (one thread); every other rl/ row steps gymnasium's SyncVectorEnv "
        "(rl.envs.SameStepSyncVectorEnv, its same-step subclass), SB3 PPO its DummyVecEnv."
        " Paired ratio: each repeat's steps/s over the same repeat's SB3 PPO run; the median over "
        "repeats and its range.",
        "",
        "| env | method | env steps/s | ratio of medians to SB3 PPO | paired ratio: median "
        "(min–max) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['env']} | {r['method']} | {r['median_steps_per_s']:.0f} | "
        f"{r['ratio_to_sb3_ppo']:.2f} | {r['median_paired_ratio']:.2f} "
        f"({r['paired_ratio_min']:.2f}–{r['paired_ratio_max']:.2f}) |"
        for r in rows
    ]
    write_text(root / "throughput.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows
