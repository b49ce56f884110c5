"""What the RL benchmark runs: suites of tasks (env, steps, seeds), each a list of methods."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from dataclasses import dataclass, field
from typing import Any

from rl.presets import env_preset, sb3_zoo

__all__ = [
    "AUTO_FROM",
    "EXPLORE_POSTERIORS",
    "EXPLORE_WIDTHS",
    "FAMILIES",
    "Method",
    "Task",
    "explore",
    "has_envpool",
    "has_mujoco",
    "ours",
    "select",
    "suites",
]


@functools.cache
def has_mujoco() -> bool:
    """Whether the MuJoCo tasks can run here (``gymnasium[mujoco]`` is an optional extra); one
    answer for every suite, the same check everywhere."""
    try:
        import mujoco  # noqa: F401
    except ImportError:
        return False
    return True


def has_envpool() -> bool:
    """Whether rl/'s optional EnvPool backend can run here (``pip install envpool``)."""
    return importlib.util.find_spec("envpool") is not None


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
    score_range: tuple[float, float] | None = None
    """(low, high) returns that map to scores 0 and 1 in the cross-task aggregate (None: the task
    is left out of it)."""
    not_applicable: tuple[tuple[str, str], ...] = ()
    """(label, reason) of suite methods that do not apply to this task (stated in the table)."""


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


#: Posterior families of the exploration suite's V-PPO / V-TRPO (issue 14: gaussian and low-rank).
EXPLORE_POSTERIORS = ("gaussian", "lowrank-gaussian")
#: Wider posterior std targets σ* (``posterior_std_target``) for the gaussian V-PPO / V-TRPO rows
#: ``*-gaussian-sd{σ*}``. At the default σ* = 0.01 a DeepSea10 network's weight noise moves the
#: two action logits apart by 0.014 (std over θ ~ q at init; P(right) 0.49–0.51 across draws):
#: no temporally consistent exploration to speak of. σ* = 0.1 gives 0.22 (P 0.33–0.70), 0.3
#: gives 2.0 (P 0.00–1.00): per-episode committed behaviour, as randomised value functions get.
EXPLORE_WIDTHS = (0.1, 0.3)
_GSDE = ("use_sde", "sde_sample_freq")


def _explore_methods(
    env_id: str, common: dict[str, Any], ppo: dict[str, Any], continuous: bool
) -> tuple[tuple[Method, ...], tuple[tuple[str, str], ...]]:
    """Issue 14's methods on one task: V-PPO / V-TRPO with auto α (the default schedule), our PPO
    and RPO, SVPG, SB3 PPO with the zoo's settings without and with gSDE, SB3 PPO defaults; plus
    our TRPO, V-TRPO's point-estimate control.

    ``common`` are rl/ fields of every algorithm, ``ppo`` the extras of PPO, V-PPO and SVPG.
    Methods that cannot apply (RPO and gSDE perturb Box actions; no zoo entry) are returned as
    (label, reason) instead.
    """
    ppo_like = {**common, **ppo}
    methods = [
        *(ours(f"vppo-{f}", "vppo", posterior=f, **ppo_like) for f in EXPLORE_POSTERIORS),
        *(ours(f"vtrpo-{f}", "vtrpo", posterior=f, **common) for f in EXPLORE_POSTERIORS),
        *(
            ours(f"{a}-gaussian-sd{w:g}", a, posterior="gaussian", posterior_std_target=w, **kw)
            for a, kw in (("vppo", ppo_like), ("vtrpo", common))
            for w in EXPLORE_WIDTHS
        ),
        ours("ppo", "ppo", **ppo_like),
        # Control for V-TRPO: the same trust-region update at a point estimate of θ.
        ours("trpo", "trpo", **common),
    ]
    missing = []
    discrete = "discrete actions"
    if continuous:
        methods.append(ours("rpo", "ppo", rpo_alpha=0.5, **ppo_like))
    else:
        missing.append(("rpo", f"{discrete} (RPO perturbs Box action means)"))
    methods.append(ours("svpg", "svpg", **ppo_like))
    methods.append(Method("sb3-ppo-default", "sb3-ppo", {"n_envs": 1}))
    try:
        zoo = sb3_zoo(env_id.replace("vi-flows/Sparse", ""), "ppo")
    except KeyError:
        missing += [(m, "no rl-baselines3-zoo entry") for m in ("sb3-ppo-zoo", "sb3-ppo-zoo-gsde")]
    else:
        methods.append(
            Method("sb3-ppo-zoo", "sb3-ppo", {k: v for k, v in zoo.items() if k not in _GSDE})
        )
        if continuous:
            methods.append(Method("sb3-ppo-zoo-gsde", "sb3-ppo", {**zoo, "use_sde": True}))
        else:
            missing.append(("sb3-ppo-zoo-gsde", f"{discrete} (gSDE needs a Box action space)"))
    return tuple(methods), tuple(missing)


def explore(quick: bool) -> dict[str, Task]:
    """Issue 14's exploration suite: sparse, deceptive or long-horizon tasks.

    Steps: DeepSea N runs bsuite's 10 000 episodes (N·10⁴ steps); a dithering learner needs
    ~2^N episodes, so N = 10 is within reach of action noise and N = 20, 30 are not. Sparse
    MountainCarContinuous: 100k (5× the zoo's budget for the dense task, whose reward shaping is
    gone). Acrobot: 200k (PPO reaches gymnasium's −100 threshold well within it). Swimmer: the
    zoo's 1M. Seeds: 10 where one run took under 2 minutes on this 2-core machine, else 5.
    """
    tasks: dict[str, Task] = {}
    ev = 20  # evaluations per run: steps-to-solve is resolved to 1/20 of the budget
    for n, seeds in ((10, 10), (20, 5), (30, 5)):
        env_id = f"vi-flows/DeepSea{n}-v0"  # deterministic, bsuite's randomised action map
        methods, missing = _explore_methods(env_id, {}, {}, continuous=False)
        optimal = 0.99  # 1 − unscaled_move_cost (rl.explore_envs.DeepSea.optimal_return)
        steps = 4_096 if quick else 10_000 * n
        tasks[env_id] = Task(
            env_id, steps, seeds, methods, 10, ev, 0.99 * optimal, (0.0, optimal), missing
        )
    mc = "vi-flows/SparseMountainCarContinuous-v0"
    methods, missing = _explore_methods(mc, MC, {}, continuous=True)
    # Reward 1 at the goal only: an eval mean ≥ 0.9 means 9 of 10 eval episodes reach it.
    tasks[mc] = Task(mc, 100_000, 5, methods, 10, ev, 0.9, (0.0, 1.0), missing)
    acrobot = {"num_envs": 16, "rollout_steps": 256, "gae_lambda": 0.94, "normalize_obs": True}
    methods, missing = _explore_methods("Acrobot-v1", acrobot, {"epochs": 4}, continuous=False)
    # gymnasium's reward_threshold for Acrobot-v1 is −100; −500 is a run that never swings up.
    tasks["Acrobot-v1"] = Task(
        "Acrobot-v1", 200_000, 5, methods, 10, ev, -100.0, (-500.0, -100.0), missing
    )
    swimmer = {"gamma": 0.9999, "normalize_obs": True, "normalize_reward": True}
    methods, missing = _explore_methods("Swimmer-v5", swimmer, {}, continuous=True)
    # No "solved": final return; 0 → 1 is a standing swimmer → ARS's ≈ 350 (Mania et al. 2018).
    tasks["Swimmer-v5"] = Task(
        "Swimmer-v5", 1_000_000, 5, methods, 10, ev, None, (0.0, 350.0), missing
    )
    if quick:  # a smoke test: tiny budgets, one seed, no MuJoCo
        del tasks["Swimmer-v5"]
        tasks = {k: dataclasses.replace(t, steps=4_096, seeds=1, evals=2) for k, t in tasks.items()}
    return tasks


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
        "explore": explore(quick),
        "pendulum": {pendulum.env_id: pendulum},
        "cartpole": {cartpole.env_id: cartpole},
        "mujoco": mujoco,
        "ablation": ablation,
    }


def select(
    all_suites: dict[str, dict[str, Task]], seeds: int | None, only: str | None
) -> dict[str, dict[str, Task]]:
    """Run seeds 0 … ``seeds`` − 1 of every task (fewer or more than its own count) and, with
    ``only`` ("a,b"), only the methods (labels) and environments named: naming only labels keeps
    them on every environment, naming only environments keeps all their methods, naming both keeps
    the named methods on the named environments.

    Raises:
        ValueError: for ``seeds`` < 1, or a name in ``only`` that is no environment or label of
            any suite (the message lists the known ones).
    """
    if seeds is not None and seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    if seeds is not None:
        all_suites = {
            name: {k: dataclasses.replace(t, seeds=seeds) for k, t in tasks.items()}
            for name, tasks in all_suites.items()
        }
    if only:
        keep = set(only.split(","))
        known_envs = {k for tasks in all_suites.values() for k in tasks}
        known = known_envs | {
            m.label for ts in all_suites.values() for t in ts.values() for m in t.methods
        }
        unknown = sorted(keep - known)
        if unknown:
            raise ValueError(
                f"--only: {unknown[0]!r} is no environment or method label of any suite; known: "
                f"{', '.join(sorted(known))}"
            )
        envs = known_envs & keep
        labels = keep - envs

        def kept(env_id: str, label: str) -> bool:
            return (not envs or env_id in envs) and (not labels or label in labels)

        all_suites = {
            name: {
                k: dataclasses.replace(t, methods=tuple(m for m in t.methods if kept(k, m.label)))
                for k, t in tasks.items()
            }
            for name, tasks in all_suites.items()
        }
    return all_suites
