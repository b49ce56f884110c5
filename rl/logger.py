"""Per-update progress: ``progress.csv`` (one row per update) and optional TensorBoard scalars."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from vi_flows import runfiles

__all__ = ["COLUMNS", "ProgressLog"]

COLUMNS = [
    "update",
    "env_steps",
    "wall_time",
    "return_mean",
    "return_min",
    "return_max",
    "episodes",
    "alpha",
    "posterior_std",
    "policy_spread",
    "policy_spread_kl",
    "action_std",
    "kl",
    "entropy",
    "posterior_entropy",
    "entropy_per_param",
    "entropy_target",
    "entropy_std",
    "explained_variance",
    "clipfrac",
    "lr",
    "sps",
    "policy_loss",
    "value_loss",
    "kl_coef",
    "step_frac",  # TRPO: the accepted line-search fraction; PPO: the share of Adam steps taken
    "grad_norm",
]


def _complete(row: dict, header: list[str]) -> bool:
    """A row with every column of its file's header and an integer update (a crash can tear the
    last one; a file written before a column was added lacks that column and stays whole)."""
    if None in row or any(row.get(c) is None for c in header):
        return False
    try:
        int(row["update"])
    except ValueError:
        return False
    return True


class ProgressLog:
    """Appends rows to ``DIR/progress.csv``; on resume drops rows after the checkpoint's update.

    The file is only ever replaced atomically (header of a fresh run; the rows up to the
    checkpoint on resume, which also drops a row torn by a crash) or appended to, so a crash at
    any point loses at most the rows after the last checkpoint, which the resumed run rewrites.

    Args:
        out: the run directory.
        resume_update: the update the run resumes after (None: a fresh run, file overwritten).
        tensorboard: also write scalars with ``torch.utils.tensorboard`` when importable.
    """

    def __init__(self, out: Path, resume_update: int | None, tensorboard: bool) -> None:
        self.path = out / "progress.csv"
        rows = []
        if resume_update is not None and self.path.exists():
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                rows = [r for r in reader if _complete(r, reader.fieldnames or [])]
            rows = [r for r in rows if int(r["update"]) <= resume_update]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        runfiles.write_text(self.path, text.getvalue())
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out / "tb"))
            except ImportError:  # pragma: no cover - depends on the installation
                self.writer = None

    def log(self, row: dict[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, COLUMNS, extrasaction="ignore").writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key not in {"update", "env_steps"} and not math.isnan(float(value)):
                    self.writer.add_scalar(key, float(value), int(row["env_steps"]))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
