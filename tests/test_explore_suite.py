"""Issue 14's exploration suite: its definition (no training, no SB3, no MuJoCo) and the
rliable-style statistics of its report (IQM, stratified bootstrap) on hand-computed cases."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from benchmarks.rl.reports import write_aggregate
from benchmarks.rl.runners import cell_dir, run_cell, run_suite
from benchmarks.rl.stats import iqm, normalise, stratified_bootstrap_ci
from benchmarks.rl.suites import (
    EXPLORE_POSTERIORS,
    EXPLORE_WIDTHS,
    Task,
    explore,
    ours,
    select,
    suites,
)
from rl.algorithms import default_config
from rl.config import with_overrides

CORE = (
    {"ppo", "trpo", "svpg", "sb3-ppo-default"}
    | {f"{a}-{f}" for a in ("vppo", "vtrpo") for f in EXPLORE_POSTERIORS}
    | {f"{a}-gaussian-sd{w:g}" for a in ("vppo", "vtrpo") for w in EXPLORE_WIDTHS}
)


def test_explore_suite_has_the_issues_tasks_methods_and_solved_thresholds():
    tasks = explore(quick=False)
    deep = [f"vi-flows/DeepSea{n}-v0" for n in (10, 20, 30)]
    mc = "vi-flows/SparseMountainCarContinuous-v0"
    assert list(tasks) == [*deep, mc, "Acrobot-v1", "Swimmer-v5"]
    for env_id, task in tasks.items():
        labels = {m.label for m in task.methods}
        missing = dict(task.not_applicable)
        assert CORE <= labels, env_id
        # every issue method either runs or is listed as not applicable, never both
        wanted = CORE | {"rpo", "sb3-ppo-zoo", "sb3-ppo-zoo-gsde"}
        assert labels | set(missing) == wanted and not labels & set(missing), env_id
        assert task.seeds in (5, 10) and task.score_range is not None
    for env_id, n in zip(deep, (10, 20, 30), strict=True):
        assert tasks[env_id].steps == 10_000 * n  # bsuite's 10k episodes of N steps
        assert tasks[env_id].success == pytest.approx(0.99 * 0.99)
        assert "discrete" in dict(tasks[env_id].not_applicable)["rpo"]
    acrobot = tasks["Acrobot-v1"]
    assert acrobot.success == -100.0
    assert "gSDE" in dict(acrobot.not_applicable)["sb3-ppo-zoo-gsde"]
    zoo = {m.label: m.params for m in tasks[mc].methods}
    assert "use_sde" not in zoo["sb3-ppo-zoo"] and zoo["sb3-ppo-zoo-gsde"]["use_sde"] is True
    assert tasks["Swimmer-v5"].success is None  # no threshold: final return is reported
    assert "vi-flows/DeepSea10-v0" in suites(quick=False)["explore"]


def test_explore_methods_are_valid_configs_with_auto_alpha():
    for task in explore(quick=False).values():
        for m in task.methods:
            if m.kind != "ours":
                continue
            params = dict(m.params)
            cfg = with_overrides(default_config(params.pop("algo")), params)
            if m.label.startswith("v"):
                assert cfg.alpha_schedule == "auto", (task.env_id, m.label)
    for task in explore(quick=False).values():  # the wide rows differ by σ* alone
        params = {m.label: dict(m.params) for m in task.methods}
        for a in ("vppo", "vtrpo"):
            for w in EXPLORE_WIDTHS:
                wide = params[f"{a}-gaussian-sd{w:g}"]
                assert wide.pop("posterior_std_target") == w > 0.01
                assert wide == params[f"{a}-gaussian"], (task.env_id, a, w)


def test_quick_explore_is_a_small_smoke_test_without_mujoco():
    tasks = explore(quick=True)
    assert "Swimmer-v5" not in tasks
    assert all(t.steps <= 4_096 and t.seeds == 1 for t in tasks.values())


def test_only_with_labels_and_envs_keeps_their_intersection():
    picked = select(suites(False), 3, "ppo,vi-flows/DeepSea10-v0")["explore"]
    assert [m.label for m in picked["vi-flows/DeepSea10-v0"].methods] == ["ppo"]
    assert picked["Acrobot-v1"].methods == () and picked["Acrobot-v1"].seeds == 3
    only_env = select(suites(False), None, "Acrobot-v1")["explore"]
    assert len(only_env["Acrobot-v1"].methods) == len(explore(False)["Acrobot-v1"].methods)


def test_iqm_trims_a_quarter_from_each_end():
    assert iqm([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)
    assert iqm([1, 2, 3]) == pytest.approx(2.0)  # n < 4: nothing to trim, the mean
    assert iqm([0, 0, 1, 1, 1, 100, 100, -100]) == pytest.approx(0.75)  # outliers cut
    with pytest.raises(ValueError, match="non-empty"):
        iqm([])


def test_bootstrap_ci_of_two_runs_is_their_span():
    # The mean of a resample of {0, 1} is 0, ½ or 1 with probability ¼, ½, ¼: the 95% percentile
    # interval is [0, 1] and the point estimate is ½.
    point, low, high = stratified_bootstrap_ci([[0.0, 1.0]], statistic=np.mean)
    assert (point, low, high) == (0.5, 0.0, 1.0)


def test_bootstrap_resamples_within_each_task():
    # Task A's runs all score 0, task B's all 1: every stratified resample has two of each, so the
    # CI collapses to the point; an unstratified resample of the four would not.
    assert stratified_bootstrap_ci([[0.0, 0.0], [1.0, 1.0]], statistic=np.mean) == (0.5, 0.5, 0.5)
    wide = stratified_bootstrap_ci([[0.0, 0.0, 1.0, 1.0]], statistic=np.mean)
    assert wide[1] < 0.5 < wide[2]
    # the 95% percentile interval itself: a resample's mean of {0, 0, 0, 1} is k/4 with
    # k ~ Binomial(4, ¼), P(k ≤ 2) = 0.949 < 0.975, so the upper end is ¾ (at 80%: ½)
    quarter = [[0.0, 0.0, 0.0, 1.0]]
    assert stratified_bootstrap_ci(quarter, statistic=np.mean) == (0.25, 0.0, 0.75)
    assert stratified_bootstrap_ci(quarter, statistic=np.mean, confidence=0.8)[2] == 0.5
    # reproducible for a seed, and the seed is used
    data = [[0.1, 0.5, 0.9, 0.3], [2.0, 1.0]]
    assert stratified_bootstrap_ci(data, seed=3) == stratified_bootstrap_ci(data, seed=3)
    spread = [list(np.linspace(0.0, 1.0, 20))]
    assert stratified_bootstrap_ci(spread, seed=3) != stratified_bootstrap_ci(spread, seed=4)
    with pytest.raises(ValueError, match="at least one run"):
        stratified_bootstrap_ci([[1.0], []])


def test_normalise_maps_the_range_to_unit_interval():
    assert normalise(np.array([-500.0, -100.0, -300.0]), -500, -100) == pytest.approx([0, 1, 0.5])
    with pytest.raises(ValueError, match="low != high"):
        normalise(np.zeros(2), 1.0, 1.0)


def test_aggregate_table_counts_solved_runs_over_tasks(tmp_path):
    def run(final):
        return {"evals": [(10, final, float("nan"), 1.0)]}

    a = Task("A", 10, 2, (ours("ppo", "ppo"),), success=0.9, score_range=(0.0, 1.0))
    b = Task("B", 10, 2, (ours("ppo", "ppo"),), success=-100, score_range=(-500, -100))
    results = {"A": {"ppo": [run(1.0), run(0.0)]}, "B": {"ppo": [run(-100.0), run(-100.0)]}}
    md = write_aggregate("explore", [a, b], results, tmp_path)
    with (tmp_path / "explore-aggregate.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    # normalised scores 1, 0, 1, 1: IQM of 4 cuts one from each end → mean(1, 1) = 1
    assert row["solved"] == "3/4" and float(row["iqm"]) == pytest.approx(1.0)
    assert "| ppo | A B | 4 |" in md


def test_report_only_reads_finished_cells_and_trains_nothing(tmp_path):
    tasks = explore(quick=True)
    assert run_suite("explore", tasks, tmp_path, cached_only=True) == []
    # seeds below --first-seed are never run either (here: every seed)
    assert run_suite("explore", tasks, tmp_path, first_seed=99) == []
    task = tasks["vi-flows/DeepSea10-v0"]
    ppo = next(m for m in task.methods if m.label == "ppo")
    cell = cell_dir("explore", task, ppo, 0, tmp_path)
    cell.mkdir(parents=True)
    result = {"evals": [[2048, 0.0, float("nan"), 1.0], [4096, 0.99, float("nan"), 2.0]]}
    result.update(train_seconds=2.0, hyperparameters={"algo": "ppo"})
    (cell / "result.json").write_text(json.dumps(result))
    rows = run_suite("explore", tasks, tmp_path, cached_only=True)
    ran = [r for r in rows if not r["note"]]
    assert [(r["env"], r["label"], r["success_rate"]) for r in ran] == [
        ("vi-flows/DeepSea10-v0", "ppo", "1/1")
    ]
    assert {r["label"] for r in rows if r["note"]} == {"rpo", "sb3-ppo-zoo", "sb3-ppo-zoo-gsde"}
    assert (
        "| ppo | DeepSea10-v0 | 1 | 1.000 [1.000, 1.000] | 1/1 |"
        in (tmp_path / "explore-aggregate.md").read_text()
    )
    assert (tmp_path / "explore-vi-flows-DeepSea10-v0.png").exists()
    # ... but finished ones below it are reported
    assert run_suite("explore", tasks, tmp_path, first_seed=99) == rows
    # a cell finished for other settings (a --quick run's 4,096 steps under the full task's
    # --out) is refused, not reported as the full task's
    full = dataclasses.replace(task, steps=100_000)
    with pytest.raises(ValueError, match=r"run with other settings \(steps: 4096 there, 100000"):
        (cell / "result.json").write_text(json.dumps({**result, "steps": 4096}))
        run_cell("explore", full, ppo, 0, tmp_path)
    (cell / "result.json").write_text(json.dumps({**result, "work": {"steps": 100_000}}))
    loaded = run_cell("explore", full, ppo, 0, tmp_path)["evals"]
    assert [e[:2] for e in loaded] == [e[:2] for e in result["evals"]]
