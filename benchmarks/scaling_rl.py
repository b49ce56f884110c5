"""V-PPO under torchrun: env-steps/s with 1 and 2 gloo ranks, scaling efficiency, traffic.

Each configuration is a real ``vi-rl train`` launched by ``python -m torch.distributed.run
--standalone --nproc_per_node R`` (the ranks run this module's ``--worker`` mode, which counts the
bytes and time of every collective and then calls the CLI unchanged). ``num_envs`` is per rank, so
R ranks collect R times the data per update (weak scaling, as DD-PPO):

* env-steps/s = Δ env_steps / Δ wall_time of ``progress.csv`` from the first to the last update
  (the first update is warm-up);
* speed-up = sps(R) / sps(1), scaling efficiency = speed-up / R;
* bytes all-reduced / all-gathered per update and per rank (payload bytes of the tensors handed to
  the collectives; checkpoint gathers excluded by checkpointing only at the end), and the
  seconds per update spent inside collectives, which includes waiting for the slower rank.

Run under the shared lock, single-threaded::

    flock /tmp/bench.lock python -m benchmarks.scaling_rl

Writes ``benchmarks/results/scaling/rl.json`` and ``rl.md``.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.files import check_names, write_text

OUT = Path(__file__).resolve().parent / "results" / "scaling"
ROOT = Path(__file__).resolve().parents[1]

#: Per-rank settings of each environment (the presets' shapes and minibatch sizes, fewer updates).
ENVS = {
    "Pendulum-v1": {"num_envs": 4, "rollout_steps": 1024, "updates": 4, "minibatch": 64},
    "HalfCheetah-v5": {"num_envs": 1, "rollout_steps": 2048, "updates": 3, "minibatch": 64},
}


def _worker(stats_path: str, argv: list[str]) -> int:
    """One rank: count the collectives' payload and time, then run ``vi-rl`` unchanged."""
    import torch
    import torch.distributed as dist

    counts = {"all_reduce_bytes": 0, "all_gather_bytes": 0, "calls": 0, "seconds": 0.0}

    def wrap(name: str, key: str, size):
        original = getattr(dist, name)

        def counted(*args, **kwargs):
            counts[key] += size(*args)
            counts["calls"] += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                counts["seconds"] += time.perf_counter() - start

        setattr(dist, name, counted)

    def nbytes(t: torch.Tensor) -> int:
        return t.numel() * t.element_size()

    wrap("all_reduce", "all_reduce_bytes", lambda t, *a: nbytes(t))
    wrap("all_gather", "all_gather_bytes", lambda out, t, *a: nbytes(t))
    from rl.cli import main

    code = main(argv)
    rank = int(os.environ.get("RANK", "0"))
    write_text(f"{stats_path}.{rank}", json.dumps(counts))
    return code


def _measure(env: str, ranks: int, settings: dict, minibatch: int, seed: int = 0) -> dict:
    """Launch one ``vi-rl train`` with ``ranks`` ranks and read its progress."""
    per_update = settings["num_envs"] * settings["rollout_steps"]
    with tempfile.TemporaryDirectory() as tmp:
        out, stats = Path(tmp) / "run", Path(tmp) / "stats"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(ranks),
            "-m",
            "benchmarks.scaling_rl",
            "--worker",
            str(stats),
            "train",
            "--env",
            env,
            "--algo",
            "vppo",
            "--preset",
            "--seed",
            str(seed),
            "--steps",
            str(per_update * settings["updates"]),
            "--out",
            str(out),
            "--quiet",
            "--set",
            f"num_envs={settings['num_envs']}",
            "--set",
            f"rollout_steps={settings['rollout_steps']}",
            "--set",
            "tensorboard=false",
            "--set",
            "checkpoint_every=0",
            "--set",
            f"minibatch_size={minibatch}",
            "--set",
            f"value_minibatch_size={minibatch}",
        ]
        env_vars = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env_vars, capture_output=True, text=True, timeout=400)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{env} with {ranks} rank(s) failed:\n{proc.stderr[-3000:]}")
        with (out / "progress.csv").open() as f:
            rows = list(csv.DictReader(f))
        first, last = rows[0], rows[-1]
        steps = float(last["env_steps"]) - float(first["env_steps"])
        sps = steps / (float(last["wall_time"]) - float(first["wall_time"]))
        rank_stats = [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("stats.*"))]
    updates = len(rows)
    traffic = rank_stats[0]
    return {
        "env": env,
        "ranks": ranks,
        "updates": updates,
        "env_steps_per_update": per_update * ranks,
        "minibatch_size": minibatch,
        "sps": sps,
        "job_wall_s": wall,
        "all_reduce_bytes_per_update": traffic["all_reduce_bytes"] / updates if ranks > 1 else 0,
        "all_gather_bytes_per_update": traffic["all_gather_bytes"] / updates if ranks > 1 else 0,
        "collective_calls_per_update": traffic["calls"] / updates if ranks > 1 else 0,
        "collective_s_per_update": traffic["seconds"] / updates if ranks > 1 else 0.0,
        "update_s": per_update * ranks / sps,
    }


def rl_scaling(envs: list[str] | None = None, ranks: int = 2) -> list[dict]:
    """Measure every environment (HalfCheetah only with mujoco installed) at 1 and ``ranks``.

    ``minibatch_size`` is global (the update equals one process's on the concatenated batch), so
    two settings are measured at ``ranks``: the 1-rank minibatch size, which makes ``ranks`` times
    as many optimizer steps per update, and ``ranks`` times it (each rank's share as big as the
    1-rank minibatch: the same number of optimizer steps per update, DD-PPO's setting).
    """
    envs = envs or [
        e for e in ENVS if e != "HalfCheetah-v5" or importlib.util.find_spec("mujoco") is not None
    ]
    results = []
    for env in envs:
        settings = ENVS[env]
        base = None
        for r, mb in [(1, 1), (ranks, 1), (ranks, ranks)]:
            row = _measure(env, r, settings, settings["minibatch"] * mb)
            base = row["sps"] if r == 1 else base
            row["speedup"] = row["sps"] / base
            row["efficiency"] = row["speedup"] / r
            results.append(row)
            print(json.dumps(row), flush=True)
    return results


def _table(results: list[dict], skipped: list[str]) -> str:
    lines = [
        "| env | ranks | env-steps/update | minibatch | env-steps/s | speed-up | efficiency | "
        "all-reduce B/update | all-gather B/update | collectives/update | s in collectives"
        "/update | s/update |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['env']} | {r['ranks']} | {r['env_steps_per_update']} | {r['minibatch_size']} | "
            f"{r['sps']:.0f} | "
            f"{r['speedup']:.2f} | {r['efficiency']:.2f} | {r['all_reduce_bytes_per_update']:.0f}"
            f" | {r['all_gather_bytes_per_update']:.0f} | {r['collective_calls_per_update']:.0f}"
            f" | {r['collective_s_per_update']:.3f} | {r['update_s']:.2f} |"
        )
    for env in skipped:
        lines.append(f"\n{env}: not measured (mujoco is not installed).")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        sys.exit(_worker(sys.argv[2], sys.argv[3:]))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--envs", nargs="*", default=None, help="default: Pendulum-v1 (+HalfCheetah)")
    args = p.parse_args()
    check_names(p, "--envs", args.envs or [], ENVS)
    results = rl_scaling(args.envs)
    skipped = [e for e in ENVS if e not in {r["env"] for r in results}]
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"cpu_count": os.cpu_count(), "load_avg_at_end": os.getloadavg()}
    write_text(OUT / "rl.json", json.dumps({"meta": meta, "results": results}, indent=2))
    table = _table(results, skipped)
    write_text(OUT / "rl.md", table)
    print(table)


if __name__ == "__main__":
    main()
