"""One rank of a multi-process RL test (started by ``tests/test_rl_distributed.py`` with torchrun's
environment variables; not collected by pytest).
Usage: ``python _rl_dist_worker.py CASE OUT [ARG…]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from rl import config as config_io
from rl.algorithms import default_config
from rl.envs import RewardScaler, RunningMeanStd
from rl.run import Run
from rl.trainer import train
from vi_flows import distributed

#: A small V-PPO run with every statistic that crosses ranks switched on.
SMALL = {
    "env_id": "Pendulum-v1",
    "num_envs": 2,
    "rollout_steps": 64,
    "hidden": (16,),
    "tensorboard": False,
    "normalize_obs": True,
    "normalize_reward": True,
    "minibatch_size": 48,
    "epochs": 2,
    "value_minibatch_size": 40,
    "value_epochs": 2,
}


#: Settings that only some algorithms have.
PPO_ONLY = ("minibatch_size", "epochs")
EXTRA = {"trpo": {"fisher": "score"}, "svpg": {"epochs": 2, "num_particles": 2}}


def update_config(algo: str = "vppo", **fields):
    small = {k: v for k, v in SMALL.items() if algo.endswith("ppo") or k not in PPO_ONLY}
    return default_config(algo, **{**small, **EXTRA.get(algo, {}), **fields})


def case_update(out: Path, *algos: str) -> None:
    """For each algorithm: one rollout and one update; saves the rollout and the parameters
    before and after in ``OUT/ALGO/u{rank}.pt`` (and the config in ``OUT/ALGO/config.json``)."""
    for algo in algos:
        (out / algo).mkdir(exist_ok=True)
        distributed.barrier()
        _update(out / algo, algo)


def _update(out: Path, case: str) -> None:
    algo, _, setting = case.partition(":")  # e.g. "vppo:minibatch_size=2"
    fields = {k: json.loads(v) for k, v in [setting.split("=")]} if setting else {}
    # CartPole's episodes end within the rollout, so the ranks' θ tables differ in size.
    cfg = update_config(algo, env_id="CartPole-v1", total_steps=10_000, **fields)
    run = Run(cfg)
    r = distributed.rank()
    if distributed.is_main():
        config_io.save(cfg, out / "config.json")
    before = {
        "policy": {k: v.clone() for k, v in run.policy.state_dict().items()},
        "critic": {k: v.clone() for k, v in run.critic.state_dict().items()},
        "algo_generator": run.algo.generator.get_state(),
    }
    xi, _, _ = run.collector.collect()
    buf = run.collector.buffer
    fields = ("obs", "actions", "logp", "rewards", "values", "next_values", "ends", "session")
    rollout = {name: getattr(buf, name).clone() for name in fields}
    batch = buf.batch(xi, cfg.gamma, cfg.gae_lambda, cfg.normalize_advantages)
    stats = run.algo.update(batch, 0.1)
    after = {
        "policy": run.policy.state_dict(),
        "critic": run.critic.state_dict(),
        "stats": {k: float(v) for k, v in stats.items()},
        "normalizer": {k: torch.as_tensor(v) for k, v in run.normalizer.state_dict().items()},
    }
    torch.save({"before": before, "xi": xi, "rollout": rollout, "after": after}, out / f"u{r}.pt")
    run.envs.close()


def case_moments(out: Path) -> None:
    """Merged observation and reward statistics of rank-specific data of unequal sizes."""
    r = distributed.rank()
    rng = np.random.default_rng(10 + r)
    x = rng.normal(3.0 * r, 1.0 + r, size=(5 + 4 * r, 3))
    rms = RunningMeanStd((3,))
    rms.update(x)
    rewards = rng.normal(r, 2.0, size=(7, 3))
    ended = rng.random((7, 3)) < 0.2
    scaler = RewardScaler(3, 0.9)
    scaled = scaler.scale_rollout(rewards, ended)
    torch.save(
        {
            "x": torch.from_numpy(x),
            "rms": {k: torch.as_tensor(v) for k, v in rms.state_dict().items()},
            "rewards": torch.from_numpy(rewards),
            "ended": torch.from_numpy(ended),
            "scaled": torch.from_numpy(scaled),
            "scaler": {k: torch.as_tensor(v) for k, v in scaler.state_dict().items()},
        },
        out / f"m{r}.pt",
    )


def case_train(out: Path, run_dir: str, updates: str, resume: str = "") -> None:
    """``train`` (or resume) a small V-PPO run for ``updates`` updates under this job's ranks."""
    cfg = update_config(total_steps=128 * int(updates), checkpoint_every=1)
    train(cfg, Path(run_dir), resume=bool(resume), progress=False)


def case_fail(out: Path, run_dir: str) -> None:
    """Rank 1 raises after its first update; rank 0 must error out of its next collective."""

    def callback(run, row):
        if distributed.rank() == 1:
            raise RuntimeError("rank 1 fails on purpose")

    train(update_config(total_steps=128 * 3), Path(run_dir), progress=False, callback=callback)


if __name__ == "__main__":
    torch.set_num_threads(1)
    case, out = sys.argv[1], Path(sys.argv[2])
    if case == "cli":  # the CLI initialises the process group itself, as under torchrun
        from rl.cli import main

        sys.exit(main(sys.argv[3:]))
    distributed.init(timeout_s=30.0 if case != "fail" else 10.0)
    globals()[f"case_{case}"](out, *sys.argv[3:])
    distributed.barrier()
    distributed.shutdown()
