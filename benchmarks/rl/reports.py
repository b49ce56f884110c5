"""Tables and figures of the RL benchmark from cell results (``result.json`` dicts)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.rl.suites import Task

__all__ = ["plot_task", "summarise", "write_tables"]


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
