"""Random crashes: SIGKILL / SIGINT ``vi-rl train --resume`` and ``vi-flows fit`` at random times.

Complements tests/test_faults.py (a kill at the first write of each file): here the kill lands at
a uniformly random instant of a run that checkpoints after every update, then the run is checked
(every file loads) and resumed to the end, and compared bit for bit with an uninterrupted run.

    python -m benchmarks.reliability [--kills 30] [--interrupts 15] [--fit-kills 15]

Writes benchmarks/results/reliability/summary.md and prints it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.files import write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "reliability"
RL = "--env CartPole-v1 --no-preset --quiet --set num_envs=2 --set rollout_steps=16".split()
RL += ["--set", "hidden=16", "--set", "tensorboard=false", "--set", "checkpoint_every=1"]
STEPS = 32 * 40  # 40 updates
FIT = ["u1", "--flow", "gaussian", "--steps", "400", "--samples", "64", "--eval-samples", "2000"]
FIT += ["--quiet"]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def _state(out: Path) -> dict:
    from rl.checkpoint import from_plain
    from vi_flows import runfiles

    return from_plain(runfiles.load(out / "checkpoint.pt"))


def _rows(out: Path) -> list[dict]:
    with (out / "progress.csv").open(newline="") as f:
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]


def _same(a: Path, b: Path) -> bool:
    sa, sb = _state(a), _state(b)
    nets = all(torch.equal(sa[p][k], sb[p][k]) for p in ("policy", "critic") for k in sa[p])
    return nets and sa["update"] == sb["update"] and _rows(a) == _rows(b)


def _intact(out: Path) -> bool:
    try:
        json.loads((out / "config.json").read_text())
        _state(out)
        rows = _rows(out)
        return [int(r["update"]) for r in rows] == list(range(1, len(rows) + 1))
    except Exception:  # noqa: BLE001 - any failure to load is what we count
        return False


def _crash(cmd: list[str], sig: int, lo: float, hi: float, rng: random.Random) -> int:
    # A shell's background job ignores SIGINT and Python keeps an ignored SIGINT ignored:
    # restore the default so that Ctrl-C raises KeyboardInterrupt as in a terminal.
    proc = subprocess.Popen(
        cmd,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(rng.uniform(lo, hi))
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc.returncode


def rl_trials(n: int, sig: int, rng: random.Random, tmp: Path) -> dict[str, int]:
    from rl.cli import main

    ref, start = tmp / "ref", tmp / "start"
    if not ref.exists():
        assert main(["train", *RL, "--steps", str(STEPS), "--out", str(ref)]) == 0
        assert main(["train", *RL, "--steps", "128", "--out", str(start)]) == 0
    cmd = [sys.executable, "-m", "rl.cli", "train", *RL, "--steps", str(STEPS), "--resume"]
    t0 = time.perf_counter()
    timing = tmp / f"timing-{sig}"
    shutil.copytree(start, timing)
    subprocess.run([*cmd, "--out", str(timing)], env=_env(), check=True)
    full = time.perf_counter() - t0
    counts = {"trials": n, "mid_training": 0, "intact": 0, "resumed_equal": 0}
    for i in range(n):
        out = tmp / f"{sig}-{i}"
        shutil.copytree(start, out)
        _crash([*cmd, "--out", str(out)], sig, 0.3 * full, 0.9 * full, rng)
        intact = _intact(out)
        counts["mid_training"] += intact and 4 < _state(out)["update"] < 40
        if intact:
            counts["intact"] += 1
            resumed = main(["train", *RL, "--steps", str(STEPS), "--out", str(out), "--resume"])
            done = _state(out)["update"] == 40
            counts["resumed_equal"] += (resumed == 0 or done) and _same(out, ref)
    return counts


def fit_trials(n: int, rng: random.Random, tmp: Path) -> dict[str, int]:
    from vi_flows import flows

    cmd = [sys.executable, "-m", "vi_flows.cli", "fit", *FIT]
    t0 = time.perf_counter()
    subprocess.run(
        [*cmd, "--out", str(tmp / "fit-timing")], env=_env(), check=True, stdout=subprocess.DEVNULL
    )
    full = time.perf_counter() - t0
    counts = {"trials": n, "flow_written": 0, "intact": 0}
    for i in range(n):
        out = tmp / f"fit-{i}"
        _crash([*cmd, "--out", str(out)], signal.SIGKILL, 0.5 * full, full, rng)
        ok = True
        if (out / "flow.pt").exists():
            counts["flow_written"] += 1
            try:
                flows.load(out / "flow.pt")
            except Exception:  # noqa: BLE001
                ok = False
        counts["intact"] += ok
    return counts


def corruption_trials(flips: int, rng: random.Random, tmp: Path) -> dict[str, int]:
    """Every truncation of a saved flow, and random single-bit flips: refused or identical."""
    from vi_flows import flows, runfiles

    q = flows.build("realnvp", 2, layers=2, hidden=(8,))
    flows.save(q, tmp / "flow.pt")
    data, ref = (tmp / "flow.pt").read_bytes(), q.state_dict()
    counts = {"bytes": len(data), "cut_refused": 0, "flips": flips, "flip_refused": 0}
    counts.update(flip_identical=0, flip_different=0)
    bad = tmp / "bad.pt"
    for cut in range(len(data)):
        bad.write_bytes(data[:cut])
        try:
            flows.load(bad)
        except runfiles.RunFileError:
            counts["cut_refused"] += 1
    for _ in range(flips):
        damaged = bytearray(data)
        damaged[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        bad.write_bytes(bytes(damaged))
        try:
            got = flows.load(bad).state_dict()
        except runfiles.RunFileError:
            counts["flip_refused"] += 1
            continue
        same = all(torch.equal(got[k], ref[k]) for k in ref)
        counts["flip_identical" if same else "flip_different"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--interrupts", type=int, default=15)
    parser.add_argument("--fit-kills", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        kill = rl_trials(args.kills, signal.SIGKILL, rng, tmp)
        intr = rl_trials(args.interrupts, signal.SIGINT, rng, tmp)
        fit = fit_trials(args.fit_kills, rng, tmp)
        bits = corruption_trials(1000, rng, tmp)
    lines = [
        "| fault (random instant) | trials | landed mid-training (update 5–39) | files intact | "
        "resumed = uninterrupted |",
        "|---|---|---|---|---|",
        f"| SIGKILL `vi-rl train --resume` (checkpoint every update) | {kill['trials']} | "
        f"{kill['mid_training']} | {kill['intact']} | {kill['resumed_equal']} |",
        f"| SIGINT (Ctrl-C) `vi-rl train --resume` | {intr['trials']} | {intr['mid_training']} | "
        f"{intr['intact']} | {intr['resumed_equal']} |",
        f"| SIGKILL `vi-flows fit` (last half of the run) | {fit['trials']} | "
        f"{fit['flow_written']} wrote flow.pt | {fit['intact']} | (re-run) |",
    ]
    lines += [
        "",
        f"Damaged flow.pt ({bits['bytes']} bytes): {bits['cut_refused']} of {bits['bytes']} "
        f"truncations refused; of {bits['flips']} single-bit flips {bits['flip_refused']} refused, "
        f"{bits['flip_identical']} loaded identical parameters, {bits['flip_different']} loaded "
        "different ones.",
    ]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(
        RESULTS / "summary.md",
        f"Command: python -m benchmarks.reliability --kills {args.kills} --interrupts "
        f"{args.interrupts} --fit-kills {args.fit_kills} --seed {args.seed}\n\n{text}",
    )
    print(text)


if __name__ == "__main__":
    main()
