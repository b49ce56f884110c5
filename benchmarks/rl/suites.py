"""What the RL benchmark runs: suites of tasks (env, steps, seeds), each a list of methods."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from rl.presets import env_preset, sb3_zoo

__all__ = ["AUTO_FROM", "FAMILIES", "Method", "Task", "ours", "select", "suites"]


@dataclass(frozen=True)
class Method:
    """One line of a suite: ``kind`` is ours (rl/ algo), sb3-ppo or sb3-trpo."""

    label: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    env_id: str
    steps: int
    seeds: int
    methods: tuple[Method, ...]
    episodes: int = 10
    evals: int = 10
    success: float | None = None
    """A final eval mean at or above this counts as solved (MountainCar: 90)."""


def ours(label: str, algo: str, **params: Any) -> Method:
    return Method(label, "ours", {"algo": algo, **params})


# Per-env settings of rl/ (rl/presets/*.yaml); every field is stated in the summary table.
PEND = env_preset("Pendulum-v1", "ppo")
PEND_TRPO = {**env_preset("Pendulum-v1", "trpo"), "value_lr": 1e-3, "max_kl": 0.01}
PEND_PG = env_preset("Pendulum-v1", "vreinforce")
MC = {"num_envs": 8, "rollout_steps": 256, **env_preset("MountainCarContinuous-v0", "ppo")}
CARTPOLE = {**env_preset("CartPole-v1", "ppo"), "clip_coef": 0.2}

FAMILIES = ("gaussian", "lowrank-gaussian", "planar")
#: Initial α of the autoalpha suite: 10× the constant α that failed on Pendulum, and 1e-6.
AUTO_FROM = (1e-2, 1e-6)


def suites(quick: bool) -> dict[str, dict[str, Task]]:
    def size(full_steps: int, full_seeds: int, quick_steps: int, quick_seeds: int = 2):
        return (quick_steps, quick_seeds) if quick else (full_steps, full_seeds)

    episodes = 5 if quick else 10
    steps, seeds = size(50_000, 10, 12_288)
    exploration = Task(
        "MountainCarContinuous-v0",
        steps,
        seeds,
        (
            Method("sb3-ppo-default", "sb3-ppo", {"n_envs": 1}),
            Method("sb3-ppo-zoo", "sb3-ppo", sb3_zoo("MountainCarContinuous-v0", "ppo")),
            ours("ppo", "ppo", **MC),
            *(ours(f"vppo-{f}", "vppo", posterior=f, **MC) for f in FAMILIES),
            ours("svpg", "svpg", **MC),
            ours("rpo", "ppo", rpo_alpha=0.5, **MC),
        ),
        episodes,
        success=90.0,
    )
    steps, seeds = size(100_000, 5, 16_384)
    pendulum = Task(
        "Pendulum-v1",
        steps,
        seeds,
        (
            Method("sb3-ppo-zoo", "sb3-ppo", sb3_zoo("Pendulum-v1", "ppo")),
            ours("ppo", "ppo", **PEND),
            ours("vppo-gaussian", "vppo", posterior="gaussian", **PEND),
            Method("sb3-trpo-zoo", "sb3-trpo", sb3_zoo("Pendulum-v1", "trpo")),
            ours("trpo", "trpo", **PEND_TRPO),
            ours("vtrpo-gaussian", "vtrpo", posterior="gaussian", **PEND_TRPO),
            ours("vreinforce-gaussian", "vreinforce", posterior="gaussian", **PEND_PG),
        ),
        episodes,
    )
    steps, seeds = size(100_000, 5, 8_192)
    cartpole = Task(
        "CartPole-v1",
        steps,
        seeds,
        (
            Method("sb3-ppo-zoo", "sb3-ppo", sb3_zoo("CartPole-v1", "ppo")),
            ours("ppo", "ppo", **CARTPOLE),
            ours("vppo-gaussian", "vppo", posterior="gaussian", **CARTPOLE),
        ),
        episodes,
    )
    mujoco = {}
    if not quick:
        for env_id in ("HalfCheetah-v5", "Hopper-v5"):
            mujoco[env_id] = Task(
                env_id,
                300_000,
                3,
                (
                    Method("sb3-ppo-zoo", "sb3-ppo", sb3_zoo(env_id, "ppo")),
                    ours("ppo", "ppo", **env_preset(env_id, "ppo")),
                    ours(
                        "vppo-gaussian", "vppo", posterior="gaussian", **env_preset(env_id, "vppo")
                    ),
                ),
            )
    ablation = {}
    envs = [("Pendulum-v1", PEND, 100_000)]
    envs.append(("MountainCarContinuous-v0", MC, 50_000))
    for env_id, preset, full in envs:
        steps, seeds = size(full, 3, 8_192, 1)
        default_alpha = preset.get("alpha", 1e-3)  # the env's default α scale
        updates = max(1, steps // (preset["num_envs"] * preset["rollout_steps"]))
        methods = []
        for family in FAMILIES if not quick else ("gaussian",):
            base = {**preset, "posterior": family}
            for factor in (0.01, 0.1, 1.0, 10.0):
                alpha = default_alpha * factor
                constant = {"alpha": alpha, "alpha_schedule": "constant"}
                methods.append(ours(f"vppo-{family}-a{alpha:g}", "vppo", **{**base, **constant}))
            anneal = {
                "alpha": 10 * default_alpha,
                "alpha_schedule": "linear",
                "alpha_end": 0.1 * default_alpha,
                "alpha_updates": updates,
            }
            methods.append(ours(f"vppo-{family}-anneal", "vppo", **{**base, **anneal}))
        ablation[env_id] = Task(env_id, steps, seeds, tuple(methods), episodes, 5)
        if quick:
            break
    # Issue 14's auto-α check: V-PPO from α₀ = 1e-2 and 1e-6 within 15% of PPO's final return.
    steps, seeds = size(100_000, 3, 16_384, 1)
    auto = {"alpha_schedule": "auto"}
    autoalpha = Task(
        "Pendulum-v1",
        steps,
        seeds,
        (
            ours("ppo", "ppo", **PEND),
            *(
                ours(f"vppo-gaussian-auto-from-{a:g}", "vppo", **{**PEND, **auto, "alpha": a})
                for a in AUTO_FROM
            ),
            ours(
                "vppo-lowrank-auto-from-0.01",
                "vppo",
                **{**PEND, **auto, "alpha": 1e-2},
                posterior="lowrank-gaussian",
            ),
            ours("trpo", "trpo", **PEND_TRPO),
            ours("vtrpo-gaussian-auto-from-0.01", "vtrpo", **{**PEND_TRPO, **auto, "alpha": 1e-2}),
        ),
        episodes,
    )
    return {
        "autoalpha": {autoalpha.env_id: autoalpha},
        "exploration": {exploration.env_id: exploration},
        "pendulum": {pendulum.env_id: pendulum},
        "cartpole": {cartpole.env_id: cartpole},
        "mujoco": mujoco,
        "ablation": ablation,
    }


def select(
    all_suites: dict[str, dict[str, Task]], seeds: int | None, only: str | None
) -> dict[str, dict[str, Task]]:
    """Run seeds 0 … ``seeds`` − 1 of every task (fewer or more than its own count) and, with
    ``only`` ("a,b"), only the methods (labels) or environments named."""
    if seeds is not None:
        all_suites = {
            name: {k: dataclasses.replace(t, seeds=seeds) for k, t in tasks.items()}
            for name, tasks in all_suites.items()
        }
    if only:
        keep = set(only.split(","))
        all_suites = {
            name: {
                k: dataclasses.replace(
                    t, methods=tuple(m for m in t.methods if m.label in keep or k in keep)
                )
                for k, t in tasks.items()
            }
            for name, tasks in all_suites.items()
        }
    return all_suites
