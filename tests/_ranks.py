"""Start N ranks of a worker script on localhost with torchrun's environment variables (a test
helper, not collected: tests import it as ``from _ranks import run_ranks``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(
    worker: Path, *args: str, world: int = 2, timeout: float = 150.0, collective_timeout: float = 30
) -> list[tuple[int, str, str]]:
    """Run ``python WORKER ARGS`` as ``world`` ranks and wait; their (exit code, stdout, stderr).

    Collectives time out after ``collective_timeout`` seconds (``VI_FLOWS_DIST_TIMEOUT``), and
    the whole job after ``timeout``: a hang fails the test instead of stalling the suite.
    """
    port, procs = free_port(), []
    for r in range(world):
        env = {
            **os.environ,
            "RANK": str(r),
            "LOCAL_RANK": str(r),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
            "VI_FLOWS_DIST_TIMEOUT": str(collective_timeout),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(worker), *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError(f"rank timed out after {timeout} s (a hang)") from None
        results.append((p.returncode, stdout, stderr))
    return results
