"""Variational policy gradient (rl/) against Stable-Baselines3 (issue #5).

One command runs a named suite and writes under ``--out``::

    OUT/runs/<suite>/<env>/<label>/seed<k>/   progress.csv (ours: rl.trainer's; SB3: its csv
                                              logger), evals.csv, result.json, config.json
    OUT/summary.csv, OUT/summary.md           one row per (suite, env, label), every hyperparameter
    OUT/<suite>-<env>.png                     deterministic-eval return vs env steps, mean ± std
    OUT/throughput.csv, OUT/throughput.md     (suite ``throughput``)

Usage::

    PYTHONPATH=. python benchmarks/rl.py --suite all --quick --out /tmp/bench/rl-quick
    PYTHONPATH=. python benchmarks/rl.py --suite pendulum --out /tmp/bench/rl
    PYTHONPATH=. python benchmarks/rl.py --suite throughput --out /tmp/bench/rl

Suites: exploration, pendulum, cartpole, mujoco, ablation, throughput, all (everything but
throughput). ``--quick`` shrinks steps and seeds: ``--suite all --quick`` took 3 min 10 s and
``--suite throughput`` 1 min on one core. ``--seeds N`` keeps only the first N seeds of every task;
``--only a,b`` runs only the methods (labels) or environments named (e.g. two processes on two
cores, then one plain rerun, which finds every cell cached, writes the tables and figures).
The full sizes are the issue's. Measured wall time, one process per core on a 2-core machine:
exploration 26 min (most of it the SB3 zoo runs at ≈ 550 steps/s), pendulum 16 min, cartpole
9 min, ablation 53 min, mujoco 1 h 45 min (SB3 43 min + ours 60 min; only with ``mujoco``
installed, skipped with a message otherwise), throughput 1 min.

Runs are resumable: a cell (suite, env, label, seed) with a ``result.json`` is skipped; a cell
without one is started again from scratch.

Fairness: both sides use 64-64 tanh actor and critic networks (MuJoCo: the zoo's 256-256 ReLU,
observation normalisation and reward scaling on both sides), the same n_envs and steps per update
within a suite (stated in the table), the same seeds, and the same evaluation: every
``eval_every`` env steps, N episodes (episode i reset with seed 12345 + i) acting with the mode of
π — for the variational methods at the posterior-mean θ ("eval") and with θ ~ q drawn per episode
("eval θ~q"). SB3 is used through its public API (a callback runs the evaluation). Differences
that remain are listed in each row's ``hyperparameters`` (e.g. SB3 zoo settings use gSDE, which rl/
does not have; SB3 fits V jointly with the policy, rl/ in separate epochs).

Each process runs with ``torch.set_num_threads(1)``; run one benchmark process at a time.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# This file is named rl.py: drop its folder from the import path so ``import rl`` finds the
# package at the repository root (added in case PYTHONPATH does not name it).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rl.config import env_preset  # noqa: E402

EVAL_SEED = 12345


# --------------------------------------------------------------------------------------------
# What runs: cells of (suite, env, label, seed)
# --------------------------------------------------------------------------------------------


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


# Per-env settings of rl/ (rl.config.ENV_PRESETS); every field is stated in the summary table.
PEND = env_preset("Pendulum-v1", "ppo")
PEND_TRPO = {**env_preset("Pendulum-v1", "trpo"), "value_lr": 1e-3, "max_kl": 0.01}
PEND_PG = env_preset("Pendulum-v1", "vreinforce")
MC = {"num_envs": 8, "rollout_steps": 256, **env_preset("MountainCarContinuous-v0", "ppo")}
CARTPOLE = {**env_preset("CartPole-v1", "ppo"), "clip_coef": 0.2}

SB3_PPO_PEND_ZOO = {
    "n_envs": 4,
    "n_steps": 1024,
    "gae_lambda": 0.95,
    "gamma": 0.9,
    "n_epochs": 10,
    "ent_coef": 0.0,
    "learning_rate": 1e-3,
    "clip_range": 0.2,
    "use_sde": True,
    "sde_sample_freq": 4,
}
SB3_TRPO_PEND_ZOO = {
    "n_envs": 2,
    "n_steps": 1024,
    "gamma": 0.9,
    "gae_lambda": 0.95,
    "n_critic_updates": 20,
    "learning_rate": 1e-3,
    "use_sde": True,
    "sde_sample_freq": 4,
}
SB3_PPO_MC_ZOO = {
    "normalize": True,
    "n_envs": 1,
    "batch_size": 256,
    "n_steps": 8,
    "gamma": 0.9999,
    "learning_rate": 7.77e-05,
    "ent_coef": 0.00429,
    "clip_range": 0.1,
    "n_epochs": 10,
    "gae_lambda": 0.9,
    "max_grad_norm": 5,
    "vf_coef": 0.19,
    "use_sde": True,
    "policy_kwargs": {"log_std_init": -3.29, "ortho_init": False, "net_arch": [64, 64]},
}
SB3_PPO_CARTPOLE_ZOO = {
    "n_envs": 8,
    "n_steps": 32,
    "batch_size": 256,
    "gae_lambda": 0.8,
    "gamma": 0.98,
    "n_epochs": 20,
    "ent_coef": 0.0,
    "learning_rate": 1e-3,
    "clip_range": 0.2,
}

# rl-baselines3-zoo hyperparams/ppo.yml (HalfCheetah-v3 / Hopper-v3 entries, used for v5); rl/'s
# presets for these envs (rl.config.ENV_PRESETS) repeat them field for field.
_ZOO_MUJOCO_POLICY = {
    "log_std_init": -2,
    "ortho_init": False,
    "activation_fn": torch.nn.ReLU,
    "net_arch": {"pi": [256, 256], "vf": [256, 256]},
}
SB3_PPO_MUJOCO_ZOO = {
    "HalfCheetah-v5": {
        "normalize": True,
        "n_envs": 1,
        "batch_size": 64,
        "n_steps": 512,
        "gamma": 0.98,
        "learning_rate": 2.0633e-05,
        "ent_coef": 0.000401762,
        "clip_range": 0.1,
        "n_epochs": 20,
        "gae_lambda": 0.92,
        "max_grad_norm": 0.8,
        "vf_coef": 0.58096,
        "policy_kwargs": _ZOO_MUJOCO_POLICY,
    },
    "Hopper-v5": {
        "normalize": True,
        "n_envs": 1,
        "batch_size": 32,
        "n_steps": 512,
        "gamma": 0.999,
        "learning_rate": 9.80828e-05,
        "ent_coef": 0.00229519,
        "clip_range": 0.2,
        "n_epochs": 5,
        "gae_lambda": 0.99,
        "max_grad_norm": 0.7,
        "vf_coef": 0.835671,
        "policy_kwargs": _ZOO_MUJOCO_POLICY,
    },
}

FAMILIES = ("gaussian", "lowrank-gaussian", "planar")


def _suites(quick: bool) -> dict[str, dict[str, Task]]:
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
            Method("sb3-ppo-zoo", "sb3-ppo", SB3_PPO_MC_ZOO),
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
            Method("sb3-ppo-zoo", "sb3-ppo", SB3_PPO_PEND_ZOO),
            ours("ppo", "ppo", **PEND),
            ours("vppo-gaussian", "vppo", posterior="gaussian", **PEND),
            Method("sb3-trpo-zoo", "sb3-trpo", SB3_TRPO_PEND_ZOO),
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
            Method("sb3-ppo-zoo", "sb3-ppo", SB3_PPO_CARTPOLE_ZOO),
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
                    Method("sb3-ppo-zoo", "sb3-ppo", SB3_PPO_MUJOCO_ZOO[env_id]),
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
                methods.append(
                    ours(f"vppo-{family}-a{alpha:g}", "vppo", **{**base, "alpha": alpha})
                )
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
    return {
        "exploration": {exploration.env_id: exploration},
        "pendulum": {pendulum.env_id: pendulum},
        "cartpole": {cartpole.env_id: cartpole},
        "mujoco": mujoco,
        "ablation": ablation,
    }


# --------------------------------------------------------------------------------------------
# Running one cell
# --------------------------------------------------------------------------------------------


def _eval_points(task: Task) -> list[int]:
    return [round(task.steps * (i + 1) / task.evals) for i in range(task.evals)]


class _EvalLog:
    """Writes ``evals.csv`` rows at the fixed checkpoints (first update past each point)."""

    def __init__(self, out: Path, points: list[int]) -> None:
        self.path, self.points = out / "evals.csv", list(points)
        with self.path.open("w", newline="") as f:
            csv.writer(f).writerow(["env_steps", "eval_mean", "eval_sampled", "train_seconds"])
        self.rows: list[tuple[int, float, float, float]] = []

    def due(self, steps: int) -> bool:
        return bool(self.points) and steps >= self.points[0]

    def add(self, steps: int, mean: float, sampled: float, seconds: float) -> None:
        while self.points and steps >= self.points[0]:
            self.points.pop(0)
        self.rows.append((steps, mean, sampled, seconds))
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([steps, mean, sampled, round(seconds, 3)])


def _run_ours(task: Task, method: Method, seed: int, out: Path) -> dict[str, Any]:
    from rl.algorithms import default_config
    from rl.config import with_overrides
    from rl.evaluate import evaluate_policy
    from rl.trainer import train

    params = dict(method.params)
    algo = params.pop("algo")
    fields = {"env_id": task.env_id, "total_steps": task.steps, "seed": seed}
    fields.update(tensorboard=False, checkpoint_every=10**9, **params)
    cfg = with_overrides(default_config(algo), fields)
    log = _EvalLog(out, _eval_points(task))
    eval_seconds = [0.0]

    def callback(run, row) -> None:
        if log.due(row["env_steps"]) or row["update"] == cfg.num_updates:
            start = time.perf_counter()
            res = evaluate_policy(run.policy, task.env_id, task.episodes, EVAL_SEED, run.normalizer)
            eval_seconds[0] += time.perf_counter() - start
            sampled = res["sampled"]["return_mean"] if not run.policy.point_mass else math.nan
            if algo == "svpg":  # "sampled" = a random particle per episode
                sampled = res["sampled"]["return_mean"]
            log.add(row["env_steps"], res["mean"]["return_mean"], sampled, row["wall_time"])

    start = time.perf_counter()
    train(cfg, out, progress=False, callback=callback, overwrite=True)
    total = time.perf_counter() - start
    return {
        "evals": log.rows,
        "train_seconds": total - eval_seconds[0],
        "hyperparameters": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "seed"},
    }


def _sb3_kwargs(method: Method) -> tuple[dict[str, Any], int, bool]:
    kw = dict(method.params)
    n_envs = kw.pop("n_envs", 1)
    normalize = kw.pop("normalize", False)
    return kw, n_envs, normalize


def _run_sb3(task: Task, method: Method, seed: int, out: Path) -> dict[str, Any]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import VecNormalize

    from rl.evaluate import run_episodes

    kw, n_envs, normalize = _sb3_kwargs(method)
    venv = make_vec_env(task.env_id, n_envs=n_envs, seed=seed)
    if normalize:
        venv = VecNormalize(venv, gamma=kw.get("gamma", 0.99))
    if method.kind == "sb3-trpo":
        from sb3_contrib import TRPO as Algo
    else:
        Algo = PPO
    model = Algo("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **kw)
    model.set_logger(configure(str(out), ["csv"]))
    log = _EvalLog(out, _eval_points(task))
    clock = {"eval": 0.0, "start": time.perf_counter()}

    def evaluate(steps: int) -> None:
        start = time.perf_counter()

        def act(obs: np.ndarray) -> np.ndarray:
            if normalize:
                obs = venv.normalize_obs(obs)
            return model.predict(obs, deterministic=True)[0]

        mean = float(run_episodes(task.env_id, task.episodes, EVAL_SEED, act).mean())
        clock["eval"] += time.perf_counter() - start
        train_s = time.perf_counter() - clock["start"] - clock["eval"]
        log.add(steps, mean, math.nan, train_s)

    class Periodic(BaseCallback):
        def _on_step(self) -> bool:
            if log.due(self.num_timesteps):
                evaluate(self.num_timesteps)
            return True

    model.learn(total_timesteps=task.steps, callback=Periodic())
    if not log.rows or log.rows[-1][0] < model.num_timesteps:
        evaluate(model.num_timesteps)
    total = time.perf_counter() - clock["start"]
    venv.close()
    hyper = {"algo": method.kind, "n_envs": n_envs, "normalize": normalize, **kw}
    hyper["policy_kwargs"] = kw.get("policy_kwargs", {"net_arch": "64-64 tanh (SB3 default)"})
    return {"evals": log.rows, "train_seconds": total - clock["eval"], "hyperparameters": hyper}


def run_cell(suite: str, task: Task, method: Method, seed: int, root: Path) -> dict[str, Any]:
    """Run (or load, when finished before) one (suite, env, label, seed) cell."""
    out = root / "runs" / suite / task.env_id / method.label / f"seed{seed}"
    done = out / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.manual_seed(seed)
    runner = _run_ours if method.kind == "ours" else _run_sb3
    start = time.perf_counter()
    result = runner(task, method, seed, out)
    result.update(
        suite=suite,
        env_id=task.env_id,
        label=method.label,
        seed=seed,
        steps=task.steps,
        wall_seconds=time.perf_counter() - start,
    )
    (out / "config.json").write_text(json.dumps(result["hyperparameters"], indent=1, default=str))
    done.write_text(json.dumps(result, default=str) + "\n")
    final = result["evals"][-1]
    print(
        f"[{suite}] {task.env_id} {method.label} seed {seed}: eval {final[1]:.1f} "
        f"({result['train_seconds']:.0f} s train)",
        flush=True,
    )
    return result


# --------------------------------------------------------------------------------------------
# Summaries and plots
# --------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def summarise(suite: str, task: Task, results: dict[str, list[dict]]) -> list[dict[str, Any]]:
    rows = []
    for method in task.methods:
        runs = results.get(method.label, [])
        if not runs:
            continue
        final = np.array([r["evals"][-1][1] for r in runs])
        sampled = np.array([r["evals"][-1][2] for r in runs], dtype=float)
        steps = sum(r["evals"][-1][0] for r in runs)
        seconds = sum(r["train_seconds"] for r in runs)
        row = {
            "suite": suite,
            "env": task.env_id,
            "label": method.label,
            "seeds": len(runs),
            "steps": task.steps,
            "eval_mean": float(final.mean()),
            "eval_std": float(final.std()),
            "eval_median": float(np.median(final)),
            "eval_sampled_mean": float(np.nanmean(sampled)) if np.isfinite(sampled).any() else "",
            "train_steps_per_s": steps / max(seconds, 1e-9),
            "success_rate": "",
            "median_steps_to_success": "",
            "hyperparameters": json.dumps(runs[0]["hyperparameters"], default=str),
        }
        if task.success is not None:
            ok = final >= task.success
            row["success_rate"] = f"{int(ok.sum())}/{len(runs)}"
            firsts = [next((e[0] for e in r["evals"] if e[1] >= task.success), None) for r in runs]
            firsts = [f for f in firsts if f is not None]
            row["median_steps_to_success"] = float(np.median(firsts)) if firsts else ""
        rows.append(row)
    return rows


def _num(x: Any) -> Any:
    try:
        return float(x)
    except (TypeError, ValueError):
        return x


def write_tables(rows: list[dict[str, Any]], root: Path) -> None:
    if not rows:
        return
    keys = ("eval_mean", "eval_std", "eval_median", "eval_sampled_mean", "train_steps_per_s")
    rows = [{**r, **{k: _num(r[k]) for k in keys}} for r in rows]
    with (root / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| suite | env | method | seeds | steps | eval (mean ± std) | median | eval θ~q | "
        "solved | median steps to solve | train steps/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sampled = r["eval_sampled_mean"]
        lines.append(
            f"| {r['suite']} | {r['env']} | {r['label']} | {r['seeds']} | {r['steps']} | "
            f"{r['eval_mean']:.1f} ± {r['eval_std']:.1f} | {r['eval_median']:.1f} | "
            f"{_fmt(sampled) if sampled != '' else '—'} | {r['success_rate'] or '—'} | "
            f"{r['median_steps_to_success'] or '—'} | {r['train_steps_per_s']:.0f} |"
        )
    lines += ["", "Hyperparameters (all fields of each method's config):", ""]
    for r in rows:
        lines.append(f"- **{r['suite']} / {r['env']} / {r['label']}**: `{r['hyperparameters']}`")
    (root / "summary.md").write_text("\n".join(lines) + "\n")


def plot_task(suite: str, task: Task, results: dict[str, list[dict]], root: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for method in task.methods:
        runs = results.get(method.label, [])
        if not runs:
            continue
        grid = np.array([e[0] for e in runs[0]["evals"]], dtype=float)
        ys = np.stack(
            [np.interp(grid, [e[0] for e in r["evals"]], [e[1] for e in r["evals"]]) for r in runs]
        )
        mean, std = ys.mean(0), ys.std(0)
        style = "--" if method.kind != "ours" else "-"
        ax.plot(grid, mean, style, label=f"{method.label} (n={len(runs)})")
        ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"deterministic eval return ({task.episodes} episodes)")
    ax.set_title(f"{suite}: {task.env_id}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    path = root / f"{suite}-{task.env_id}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_suite(name: str, tasks: dict[str, Task], root: Path) -> list[dict[str, Any]]:
    rows = []
    for task in tasks.values():
        if not task.methods:  # everything filtered out by --only
            continue
        results: dict[str, list[dict]] = defaultdict(list)
        # Seed-major order: every method has a result for seed 0 before any has seed 1.
        for seed in range(task.seeds):
            for method in task.methods:
                results[method.label].append(run_cell(name, task, method, seed, root))
        rows += summarise(name, task, results)
        plot_task(name, task, results, root)
    return rows


# --------------------------------------------------------------------------------------------
# Throughput
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--suite",
        default="all",
        choices=["all", "exploration", "pendulum", "cartpole", "mujoco", "ablation", "throughput"],
    )
    p.add_argument("--quick", action="store_true", help="small steps/seeds (minutes)")
    p.add_argument("--seeds", type=int, default=None, help="use only the first N seeds")
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated method labels or env ids to run (others are skipped, not erased); "
        "e.g. two processes on two cores, then one plain rerun to write the tables",
    )
    p.add_argument("--out", default="/tmp/bench/rl")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    if args.suite == "throughput":
        throughput(root, args.quick)
        return 0
    suites = _suites(args.quick)
    if args.seeds is not None:
        suites = {
            name: {
                k: dataclasses.replace(t, seeds=min(t.seeds, args.seeds)) for k, t in tasks.items()
            }
            for name, tasks in suites.items()
        }
    if args.only:
        keep = set(args.only.split(","))
        suites = {
            name: {
                k: dataclasses.replace(
                    t, methods=tuple(m for m in t.methods if m.label in keep or k in keep)
                )
                for k, t in tasks.items()
            }
            for name, tasks in suites.items()
        }
    names = ["exploration", "pendulum", "cartpole", "ablation"] if args.suite == "all" else []
    names = names or [args.suite]
    if not args.quick and args.suite == "all":
        names.append("mujoco")
    rows = []
    summary = root / "summary.csv"
    old = []
    if summary.exists():
        with summary.open() as f:
            old = [r for r in csv.DictReader(f) if r["suite"] not in names]
    for name in names:
        if name == "mujoco":
            try:
                import mujoco  # noqa: F401
            except ImportError:
                print("mujoco suite skipped: the mujoco package is not installed", flush=True)
                continue
        rows += run_suite(name, suites[name], root)
        write_tables(old + rows, root)
    print((root / "summary.md").read_text() if (root / "summary.md").exists() else "no results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
