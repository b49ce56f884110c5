"""One throughput measurement in a fresh process (run by :mod:`benchmarks.rl.throughput`).

``python -m benchmarks.rl.throughput_one --env Pendulum-v1 --method ppo --steps 20480 --seed 0``
prints one JSON line ``{"env", "method", "steps", "seconds", "steps_per_s"}``. The clock runs from
building the environments and the learner to the end of training, the same span for every
method (rl/'s ``train``; SB3's ``make_vec_env`` + ``PPO(...)`` + ``learn``; the random-action
ceiling's ``make_envs`` + stepping). Imports, and the one-off lazy import that constructing the
first torch optimizer triggers (``torch._dynamo``, about a second), happen before the clock starts
for every method alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time

import torch

from rl.config import TrainConfig

__all__ = ["N_ENVS", "N_STEPS", "SB3_EPOCHS", "SB3_MINIBATCH", "measure", "rl_config"]

#: The shared work: vector-env slots and steps per slot between updates.
N_ENVS, N_STEPS = 8, 256
#: Epochs (SB3 PPO's default n_epochs) and minibatch (rl/'s default; SB3 is given it) of both.
SB3_EPOCHS, SB3_MINIBATCH = 10, 256


def rl_config(
    env_id: str, algo: str, steps: int, seed: int, backend: str = "gymnasium"
) -> TrainConfig:
    """The config of an rl/ row: its defaults with SB3 PPO's shared work (n_envs, n_steps, and for
    the PPO-style rows epochs and minibatch, the critic's included)."""
    from rl.algorithms import default_config

    cfg = default_config(
        algo,
        env_id=env_id,
        num_envs=N_ENVS,
        rollout_steps=N_STEPS,
        total_steps=steps,
        seed=seed,
        env_backend=backend,
    )
    # SB3 fits V in the same loss as π, so its critic gets n_epochs × minibatches steps too:
    # value_epochs = epochs (10) and the same minibatch make the critic's work equal.
    return dataclasses.replace(
        cfg,
        checkpoint_every=10**9,
        tensorboard=False,
        value_epochs=SB3_EPOCHS,
        value_minibatch_size=SB3_MINIBATCH,
    )


def _rl(env_id: str, algo: str, steps: int, seed: int, backend: str) -> float:
    from rl.trainer import train

    cfg = rl_config(env_id, algo, steps, seed, backend)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(cfg, tmp, progress=False, overwrite=True)
        return time.perf_counter() - start


def _sb3(env_id: str, steps: int, seed: int) -> float:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    start = time.perf_counter()
    venv = make_vec_env(env_id, n_envs=N_ENVS, seed=seed)
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=N_STEPS,
        batch_size=SB3_MINIBATCH,
        n_epochs=SB3_EPOCHS,
        seed=seed,
        device="cpu",
    )
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - start
    venv.close()
    return seconds


def _random(env_id: str, steps: int, seed: int, backend: str) -> float:
    from rl.envs import make_envs

    start = time.perf_counter()
    envs = make_envs(env_id, N_ENVS, seed, backend)
    envs.reset(seed=seed)
    for _ in range(steps // N_ENVS):
        envs.step(envs.action_space.sample())
    seconds = time.perf_counter() - start
    envs.close()
    return seconds


def measure(env_id: str, method: str, steps: int, seed: int) -> dict:
    """Seconds and env steps/s of one run of ``method`` (an rl/ algorithm, ``sb3-ppo`` or
    ``random``; ``+envpool`` after the first two selects rl/'s EnvPool backend) on ``env_id``, in
    this process (one torch thread)."""
    torch.set_num_threads(1)
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # the lazy import, off the clock
    name, _, backend = method.partition("+")
    backend = backend or "gymnasium"
    if backend == "envpool":
        import envpool  # noqa: F401  (imports off the clock: about a second)
    if name == "sb3-ppo":
        import stable_baselines3  # noqa: F401  (imports off the clock)

        import rl.explore_envs  # noqa: F401  (registers vi-flows/* ids for make_vec_env)

        seconds = _sb3(env_id, steps, seed)
    elif name == "random":
        seconds = _random(env_id, steps, seed, backend)
    else:
        import rl.trainer  # noqa: F401  (imports off the clock)

        seconds = _rl(env_id, name, steps, seed, backend)
    return {
        "env": env_id,
        "method": method,
        "steps": steps,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", required=True)
    p.add_argument(
        "--method",
        required=True,
        help="an rl/ algorithm, sb3-ppo or random (ALGO+envpool, random+envpool: the EnvPool "
        "backend)",
    )
    p.add_argument("--steps", type=int, default=20_480)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(json.dumps(measure(args.env, args.method, args.steps, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
