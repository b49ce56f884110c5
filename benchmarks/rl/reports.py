"""Tables and figures of the RL benchmark from cell results (``result.json`` dicts)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.files import save_figure, write_rows, write_text
from benchmarks.rl.stats import normalise, stratified_bootstrap_ci
from benchmarks.rl.suites import Task

__all__ = [
    "BASELINES",
    "compare",
    "finals",
    "plot_task",
    "summarise",
    "write_aggregate",
    "merge_rows",
    "write_tables",
    "write_verdicts",
]


def finals(runs: list[dict]) -> np.ndarray:
    """The final deterministic-eval return of each run."""
    return np.array([r["evals"][-1][1] for r in runs], dtype=float)


def _fmt(x: float) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def summarise(suite: str, task: Task, results: dict[str, list[dict]]) -> list[dict[str, Any]]:
    rows = []
    for method in task.methods:
        runs = results.get(method.label, [])
        if not runs:
            continue
        final = finals(runs)
        point, low, high = stratified_bootstrap_ci([final])
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
            "iqm": point,
            "iqm_ci_low": low,
            "iqm_ci_high": high,
            "eval_sampled_mean": float(np.nanmean(sampled)) if np.isfinite(sampled).any() else "",
            "train_steps_per_s": steps / max(seconds, 1e-9),
            "success_rate": "",
            "median_steps_to_success": "",
            "final_returns": json.dumps([round(float(x), 4) for x in final]),
            "note": "",
            "hyperparameters": json.dumps(runs[0]["hyperparameters"], default=str),
        }
        if task.success is not None:
            ok = final >= task.success
            row["success_rate"] = f"{int(ok.sum())}/{len(runs)}"
            firsts = [next((e[0] for e in r["evals"] if e[1] >= task.success), None) for r in runs]
            firsts = [f for f in firsts if f is not None]
            row["median_steps_to_success"] = float(np.median(firsts)) if firsts else ""
        rows.append(row)
    for label, reason in task.not_applicable:
        rows.append({"suite": suite, "env": task.env_id, "label": label, "note": f"n/a: {reason}"})
    return rows


def _num(x: Any) -> Any:
    try:
        return float(x)
    except (TypeError, ValueError):
        return x


def _g(x: Any) -> str:
    """Compact: 3 significant digits (DeepSea returns are ≤ 1, Acrobot's ≈ −100)."""
    if x in ("", None) or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{0.0 if abs(x) < 1e-12 else x:.3g}"  # no 1e-16 std of equal runs


#: The ``from`` column of a summary row this invocation did not measure.
EARLIER = "an earlier run under this --out"


def merge_rows(old: list[dict[str, Any]], fresh: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summary's rows: ``fresh`` (measured now) replace the ``old`` rows (read back from
    ``summary.csv``) of the same suite, env and method; the other old rows stay, marked as not
    measured by this run (``from`` = :data:`EARLIER`), in their order, and new rows follow.

    >>> old = [{"suite": "s", "env": "e", "label": "a"}, {"suite": "s", "env": "e", "label": "b"}]
    >>> [(r["label"], r.get("from", "")) for r in merge_rows(old, [{**old[1], "x": 1}])]
    [('a', 'an earlier run under this --out'), ('b', '')]
    """

    def key(r: dict[str, Any]) -> tuple[str, str, str]:
        return r["suite"], r["env"], r["label"]

    new = {key(r): r for r in fresh}
    merged = [new.pop(key(r)) if key(r) in new else {**r, "from": EARLIER} for r in old]
    return merged + list(new.values())


def write_tables(rows: list[dict[str, Any]], root: Path) -> None:
    if not rows:
        return
    keys = ("eval_mean", "eval_std", "eval_median", "eval_sampled_mean", "train_steps_per_s")
    keys += ("iqm", "iqm_ci_low", "iqm_ci_high")
    rows = [{**r, **{k: _num(r[k]) for k in keys if k in r}} for r in rows]
    fields = list(dict.fromkeys(k for r in rows for k in r))  # old rows may lack new columns
    write_rows(root / "summary.csv", rows, fields)
    lines = [
        "| suite | env | method | seeds | steps | eval (mean ± std) | IQM [95% CI] | eval θ~q | "
        "solved | median steps to solve | train steps/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        label = f"{r['label']} †" if r.get("from") else r["label"]
        if r.get("note"):
            lines.append(f"| {r['suite']} | {r['env']} | {label} | {r['note']} ||||||||")
            continue
        sampled = r["eval_sampled_mean"]
        ci = (
            f"{_g(r['iqm'])} [{_g(r['iqm_ci_low'])}, {_g(r['iqm_ci_high'])}]"
            if r.get("iqm", "") != ""
            else "—"
        )
        lines.append(
            f"| {r['suite']} | {r['env']} | {label} | {r['seeds']} | {r['steps']} | "
            f"{_g(r['eval_mean'])} ± {_g(r['eval_std'])} | {ci} | "
            f"{_g(sampled)} | {r['success_rate'] or '—'} | "
            f"{r['median_steps_to_success'] or '—'} | {r['train_steps_per_s']:.0f} |"
        )
    if any(r.get("from") for r in rows):
        lines += ["", f"† not measured by the run that wrote this table: from {EARLIER}."]
    lines += ["", "Hyperparameters (all fields of each method's config):", ""]
    for r in rows:
        if not r.get("note"):
            lines.append(
                f"- **{r['suite']} / {r['env']} / {r['label']}**: `{r['hyperparameters']}`"
            )
    write_text(root / "summary.md", "\n".join(lines) + "\n")


def write_aggregate(
    suite: str, tasks: list[Task], results: dict[str, dict[str, list[dict]]], root: Path
) -> str:
    """Per method: IQM of the normalised final return over all its runs on the tasks that have
    a ``score_range`` (low → 0, high → 1), with a 95% stratified-bootstrap CI (runs resampled
    within each task); and the fraction of runs solved where ``success`` is defined. Writes
    ``<suite>-aggregate.{md,csv}`` and returns the markdown."""
    scored = [t for t in tasks if t.score_range is not None]
    labels = list(dict.fromkeys(m.label for t in scored for m in t.methods))
    rows = []
    for label in labels:
        strata, names, solved, total = [], [], 0, 0
        for t in scored:
            runs = results.get(t.env_id, {}).get(label, [])
            if not runs:
                continue
            final = finals(runs)
            strata.append(normalise(final, *t.score_range))
            names.append(t.env_id.removeprefix("vi-flows/"))
            if t.success is not None:
                solved += int((final >= t.success).sum())
                total += len(runs)
        if not strata:
            continue
        point, low, high = stratified_bootstrap_ci(strata)
        rows.append(
            {
                "method": label,
                "tasks": " ".join(names),
                "runs": sum(len(s) for s in strata),
                "iqm": point,
                "ci_low": low,
                "ci_high": high,
                "solved": f"{solved}/{total}" if total else "",
            }
        )
    if rows:
        write_rows(root / f"{suite}-aggregate.csv", rows)
    ranges = ", ".join(
        f"{t.env_id.removeprefix('vi-flows/')} {t.score_range[0]:g}→{t.score_range[1]:g}"
        for t in scored
        if t.env_id in results
    )
    lines = [
        f"Aggregate over tasks ({suite}): IQM of the normalised final eval return, 95% "
        "stratified-bootstrap CI (2000 replicates); normalisation (return → 0, → 1): " + ranges,
        "",
        "| method | tasks | runs | IQM [95% CI] | runs solved |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['tasks']} | {r['runs']} | {r['iqm']:.3f} "
            f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['solved'] or '—'} |"
        )
    text = "\n".join(lines) + "\n"
    write_text(root / f"{suite}-aggregate.md", text)
    return text


#: The baselines a variational method must beat (issue 14: our PPO, SB3 PPO zoo and zoo+gSDE),
#: then the other controls, in the verdict table's column order.
BASELINES = ("ppo", "sb3-ppo-zoo", "sb3-ppo-zoo-gsde", "sb3-ppo-default", "trpo", "rpo", "svpg")
#: Of those, the ones "beats the baselines" is judged against where they apply; SB3 PPO with
#: default settings stands in for the zoo's where the zoo has no entry for the task (DeepSea).
REQUIRED = BASELINES[:3]
ZOO_STAND_IN = "sb3-ppo-default"
#: Fewest runs whose bootstrap CI a verdict compares: one run's "interval" is a point.
MIN_RUNS = 2


def compare(a: tuple[float, float], b: tuple[float, float]) -> str:
    """``beats`` when CI ``a`` lies wholly above CI ``b``, ``worse`` when wholly below, else
    ``overlap`` (the intervals share a point: no difference is shown).

    >>> compare((0.5, 0.9), (0.0, 0.4)), compare((0.0, 0.4), (0.4, 0.9))
    ('beats', 'overlap')
    """
    if a[0] > b[1]:
        return "beats"
    if a[1] < b[0]:
        return "worse"
    return "overlap"


def write_verdicts(
    suite: str, tasks: list[Task], results: dict[str, dict[str, list[dict]]], root: Path
) -> str:
    """For every task and variational method (V-PPO / V-TRPO), its final-return IQM CI against
    each baseline's: beats / worse / overlap (:func:`compare`; 95% bootstrap CIs of the IQM over
    seeds). A task counts as a benefit only where the method beats every one of
    :data:`REQUIRED` that applies to the task (:data:`ZOO_STAND_IN` replacing the zoo rows the
    task has no entry for); where one of them has not run, the benefit is "incomplete". Writes
    ``<suite>-verdict.md``. A comparison needs :data:`MIN_RUNS` runs on both sides; with fewer it
    counts as not run."""
    lines = [
        f"Verdicts ({suite}): final-return IQM with 95% bootstrap CI over seeds; a cell says "
        "whether the row's CI lies wholly above (beats) or below (worse) the column's, or they "
        f"overlap. Benefit = beats every one of {', '.join(REQUIRED)} that applies "
        f"({ZOO_STAND_IN} where the zoo has no entry); incomplete = one of them has not run "
        f"or has fewer than {MIN_RUNS} runs.",
        "",
        "| task | method | IQM [95% CI] | " + " | ".join(BASELINES) + " | benefit |",
        "|---|---|---|" + "---|" * len(BASELINES) + "---|",
    ]
    benefit, none, incomplete = [], [], []
    for task in tasks:
        by_label = results.get(task.env_id, {})
        cis = {}
        for label, runs in by_label.items():
            point, low, high = stratified_bootstrap_ci([finals(runs)])
            cis[label] = (point, low, high, len(runs))
        missing = dict(task.not_applicable)
        required = [b for b in REQUIRED if b not in missing]
        if not any(b.startswith("sb3") for b in required):
            required.append(ZOO_STAND_IN)
        name = task.env_id.removeprefix("vi-flows/")
        for label in by_label:
            if not label.startswith(("vppo", "vtrpo")):
                continue
            point, low, high, n = cis[label]
            cells, verdicts = [], {}
            for base in BASELINES:
                if base in missing:
                    cells.append("n/a")
                elif base not in cis:
                    cells.append("not run")
                elif min(n, cis[base][3]) < MIN_RUNS:  # no interval to compare: not a verdict
                    cells.append(f"too few runs (n={n} vs {cis[base][3]})")
                else:
                    verdicts[base] = compare((low, high), cis[base][1:3])
                    cells.append(f"{verdicts[base]} (n={cis[base][3]})")
            if any(verdicts.get(b) not in (None, "beats") for b in required):
                outcome, bucket = "no", none
            elif all(b in verdicts for b in required):
                outcome, bucket = "**yes**", benefit
            else:
                outcome, bucket = "incomplete", incomplete
            bucket.append(f"{name} {label}")
            lines.append(
                f"| {name} | {label} (n={n}) | {_g(point)} [{_g(low)}, {_g(high)}] | "
                + " | ".join(cells)
                + f" | {outcome} |"
            )
    lines += [
        "",
        "Benefit shown: " + (", ".join(benefit) or "none") + ".",
        "",
        "No benefit shown: " + (", ".join(none) or "none") + ".",
        "",
        "Incomplete (a required baseline has not run): " + (", ".join(incomplete) or "none") + ".",
    ]
    text = "\n".join(lines) + "\n"
    write_text(root / f"{suite}-verdict.md", text)
    return text


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
    path = root / f"{suite}-{task.env_id.replace('/', '-')}.png"
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
