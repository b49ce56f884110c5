"""Running one cell (suite, env, method, seed) of the RL benchmark: rl/ or Stable-Baselines3, with
the same periodic deterministic evaluation on both sides."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import rl.explore_envs  # noqa: F401  (registers vi-flows/* ids for SB3's make_vec_env)
from benchmarks.files import write_rows, write_text
from benchmarks.rl.reports import plot_task, summarise, write_aggregate, write_verdicts
from benchmarks.rl.suites import Method, Task
from rl.presets import LINEAR_PREFIX

__all__ = [
    "EVAL_SEED",
    "cell_dir",
    "finished_cell",
    "linear_schedule",
    "run_cell",
    "run_suite",
    "sb3_translate",
]

EVAL_SEED = 12345


def linear_schedule(initial: float) -> Callable[[float], float]:
    """The zoo's ``lin_X``: SB3 calls it with progress_remaining, 1 → 0 over training."""
    return lambda progress_remaining: progress_remaining * initial


def sb3_translate(params: dict[str, Any]) -> dict[str, Any]:
    """SB3 kwargs written as in rl-baselines3-zoo's files (rl/presets/*.yaml) for SB3's API:
    ``lin_X`` becomes SB3's linear schedule (X · progress_remaining), ``activation_fn`` a
    torch.nn class."""

    def translate(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(LINEAR_PREFIX):
            return linear_schedule(float(value[len(LINEAR_PREFIX) :]))
        return value

    kw = {k: translate(v) for k, v in params.items()}
    if "activation_fn" in kw.get("policy_kwargs", {}):
        policy = dict(kw["policy_kwargs"])
        policy["activation_fn"] = getattr(torch.nn, policy["activation_fn"])
        kw["policy_kwargs"] = policy
    return kw


def _eval_points(task: Task) -> list[int]:
    return [round(task.steps * (i + 1) / task.evals) for i in range(task.evals)]


class _EvalLog:
    """Writes ``evals.csv`` rows at the fixed checkpoints (first update past each point)."""

    def __init__(self, out: Path, points: list[int]) -> None:
        self.path, self.points = out / "evals.csv", list(points)
        self.rows: list[tuple[int, float, float, float]] = []
        self._write()

    def due(self, steps: int) -> bool:
        return bool(self.points) and steps >= self.points[0]

    def add(self, steps: int, mean: float, sampled: float, seconds: float) -> None:
        while self.points and steps >= self.points[0]:
            self.points.pop(0)
        self.rows.append((steps, mean, sampled, seconds))
        self._write()

    def _write(self) -> None:  # the whole file, atomically (a run is resumed from what it wrote)
        header = ("env_steps", "eval_mean", "eval_sampled", "train_seconds")
        rows = [(s, m, q, round(t, 3)) for s, m, q, t in self.rows]
        write_rows(self.path, [dict(zip(header, row, strict=True)) for row in rows], header)


def run_ours(task: Task, method: Method, seed: int, out: Path) -> dict[str, Any]:
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
            # "sampled": θ ~ q per episode (SVPG: a random particle); none for a point mass.
            sampled = res["sampled"]["return_mean"] if run.policy.random_theta else math.nan
            log.add(row["env_steps"], res["mean"]["return_mean"], sampled, row["wall_time"])

    start = time.perf_counter()
    train(cfg, out, progress=False, callback=callback, overwrite=True)
    total = time.perf_counter() - start
    # The run's own config.json: the config as trained, with what the trainer resolved (the
    # calibrated posterior_std_target) in place of the unset defaults.
    saved = json.loads((out / "config.json").read_text())
    return {
        "evals": log.rows,
        "train_seconds": total - eval_seconds[0],
        "hyperparameters": {k: v for k, v in saved.items() if k != "seed"},
    }


def _sb3_kwargs(method: Method) -> tuple[dict[str, Any], int, bool]:
    kw = dict(method.params)  # as in the presets: method.params stays JSON-friendly
    n_envs = kw.pop("n_envs", 1)
    normalize = kw.pop("normalize", False)
    return kw, n_envs, normalize


def run_sb3(task: Task, method: Method, seed: int, out: Path) -> dict[str, Any]:
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
    model = Algo("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **sb3_translate(kw))
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
        """Evaluates at the start of a rollout, after the previous update (SB3 counts a step
        and calls ``_on_step`` inside the rollout, before the update that uses it: evaluating
        there would judge SB3 one update behind; ours are evaluated after their updates)."""

        def _on_step(self) -> bool:
            return True

        def _on_rollout_start(self) -> None:
            if log.due(self.num_timesteps):
                evaluate(self.num_timesteps)

    model.learn(total_timesteps=task.steps, callback=Periodic())
    if not log.rows or log.rows[-1][0] < model.num_timesteps:
        evaluate(model.num_timesteps)
    total = time.perf_counter() - clock["start"]
    venv.close()
    hyper = {"algo": method.kind, "n_envs": n_envs, "normalize": normalize, **kw}
    hyper["policy_kwargs"] = kw.get("policy_kwargs", {"net_arch": "64-64 tanh (SB3 default)"})
    return {"evals": log.rows, "train_seconds": total - clock["eval"], "hyperparameters": hyper}


def cell_dir(suite: str, task: Task, method: Method, seed: int, root: Path) -> Path:
    """Where one (suite, env, label, seed) cell writes (``result.json`` once finished)."""
    return root / "runs" / suite / task.env_id / method.label / f"seed{seed}"


def _work(task: Task, method: Method) -> dict[str, Any]:
    """What a cell's result depends on besides its seed, as JSON reads it back."""
    work = {
        "kind": method.kind,
        "params": method.params,
        "steps": task.steps,
        "episodes": task.episodes,
        "evals": task.evals,
    }
    return json.loads(json.dumps(work, default=str))


def finished_cell(
    suite: str, task: Task, method: Method, seed: int, root: Path
) -> dict[str, Any] | None:
    """The cell's result when it finished before, else None.

    Raises:
        ValueError: when the finished cell was run for other settings (its steps, evaluations or
            the method's parameters differ, e.g. a ``--quick`` run under the same ``--out``):
            a cache keyed by name alone would report it for this task.
    """
    done = cell_dir(suite, task, method, seed, root) / "result.json"
    if not done.exists():
        return None
    result = json.loads(done.read_text())
    want = _work(task, method)
    # cells written before the fingerprint hold their steps only
    have = result.get("work") or ({"steps": result["steps"]} if "steps" in result else {})
    diff = sorted(k for k in have if have[k] != want.get(k))
    if diff:
        raise ValueError(
            f"{done} was run with other settings ({', '.join(diff)}: {have[diff[0]]!r} there, "
            f"{want[diff[0]]!r} now); use another --out, or delete that cell to rerun it"
        )
    return result


def run_cell(suite: str, task: Task, method: Method, seed: int, root: Path) -> dict[str, Any]:
    """Run (or load, when finished before with the same settings) one (suite, env, label, seed)
    cell (:func:`finished_cell`)."""
    out = cell_dir(suite, task, method, seed, root)
    done = out / "result.json"
    finished = finished_cell(suite, task, method, seed, root)
    if finished is not None:
        return finished
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.manual_seed(seed)
    runner = run_ours if method.kind == "ours" else run_sb3
    start = time.perf_counter()
    result = runner(task, method, seed, out)
    result.update(
        suite=suite,
        env_id=task.env_id,
        label=method.label,
        seed=seed,
        steps=task.steps,
        work=_work(task, method),
        wall_seconds=time.perf_counter() - start,
    )
    write_text(out / "config.json", json.dumps(result["hyperparameters"], indent=1, default=str))
    write_text(done, json.dumps(result, default=str) + "\n")
    final = result["evals"][-1]
    print(
        f"[{suite}] {task.env_id} {method.label} seed {seed}: eval {final[1]:.1f} "
        f"({result['train_seconds']:.0f} s train)",
        flush=True,
    )
    return result


def run_suite(
    name: str,
    tasks: dict[str, Task],
    root: Path,
    cached_only: bool = False,
    first_seed: int = 0,
) -> list[dict[str, Any]]:
    """Run every cell of a suite (``cached_only``: only load the finished ones; seeds below
    ``first_seed`` are loaded where finished and never run) and write its figures (and, for suites
    with score ranges, the aggregate table); returns the summary rows."""
    rows = []
    ran: dict[str, dict[str, list[dict]]] = {}
    for task in tasks.values():
        if not task.methods:  # everything filtered out by --only
            continue
        results: dict[str, list[dict]] = defaultdict(list)
        # Seed-major order: every method has a result for seed 0 before any has seed 1.
        for seed in range(task.seeds):
            for method in task.methods:
                if (cached_only or seed < first_seed) and not (
                    cell_dir(name, task, method, seed, root) / "result.json"
                ).exists():
                    continue
                results[method.label].append(run_cell(name, task, method, seed, root))
        if not results:
            continue
        rows += summarise(name, task, results)
        plot_task(name, task, results, root)
        ran[task.env_id] = results
    if any(t.score_range is not None for t in tasks.values()) and ran:
        print(write_aggregate(name, list(tasks.values()), ran, root), flush=True)
    if name == "explore" and ran:
        print(write_verdicts(name, list(tasks.values()), ran, root), flush=True)
    return rows
