"""The RL benchmark's report writers on a tiny synthetic result (no training)."""

from __future__ import annotations

import csv
import math

import pytest

from benchmarks.rl.reports import plot_task, summarise, write_tables
from benchmarks.rl.runners import sb3_translate
from benchmarks.rl.suites import Method, Task, ours


def _result(evals, seconds):
    return {"evals": evals, "train_seconds": seconds, "hyperparameters": {"lr": 1e-3}}


TASK = Task(
    "MountainCarContinuous-v0",
    steps=200,
    seeds=2,
    methods=(ours("ppo", "ppo"), Method("sb3-ppo-zoo", "sb3-ppo")),
    success=90.0,
)
RESULTS = {
    "ppo": [
        _result([(100, 10.0, 12.0, 1.0), (200, 95.0, 80.0, 2.0)], 2.0),
        _result([(100, 91.0, 50.0, 1.0), (200, 90.0, 70.0, 2.0)], 2.0),  # exactly at 90: solved
    ],
    "sb3-ppo-zoo": [
        _result([(100, 0.0, math.nan, 1.0), (200, 20.0, math.nan, 4.0)], 4.0),
        _result([(100, 0.0, math.nan, 1.0), (200, 40.0, math.nan, 4.0)], 4.0),
    ],
}


def test_summary_rows_are_the_statistics_of_the_final_evaluations():
    rows = {r["label"]: r for r in summarise("exploration", TASK, RESULTS)}
    ppo, sb3 = rows["ppo"], rows["sb3-ppo-zoo"]
    assert ppo["eval_mean"] == pytest.approx(92.5) and ppo["eval_std"] == pytest.approx(2.5)
    assert ppo["eval_sampled_mean"] == pytest.approx(75.0)
    assert ppo["success_rate"] == "2/2" and ppo["median_steps_to_success"] == pytest.approx(150.0)
    assert ppo["train_steps_per_s"] == pytest.approx(400 / 4.0)
    assert sb3["eval_mean"] == pytest.approx(30.0) and sb3["eval_sampled_mean"] == ""
    assert sb3["success_rate"] == "0/2" and sb3["median_steps_to_success"] == ""


def test_tables_and_figure_are_written(tmp_path):
    rows = summarise("exploration", TASK, RESULTS)
    write_tables(rows, tmp_path)
    with (tmp_path / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["label"] for r in table] == ["ppo", "sb3-ppo-zoo"]
    assert float(table[0]["eval_mean"]) == pytest.approx(92.5)
    md = (tmp_path / "summary.md").read_text()
    # IQM of 2 runs is their mean; the bootstrap CI of two values spans them.
    assert (
        "| MountainCarContinuous-v0 | ppo | 2 | 200 | 92.5 ± 2.5 | 92.5 [90, 95] | 75 | 2/2 |" in md
    )
    assert "| sb3-ppo-zoo | 2 | 200 | 30 ± 10 | 30 [20, 40] | — | 0/2 | — | 50 |" in md
    path = plot_task("exploration", TASK, RESULTS, tmp_path)
    assert path.exists() and path.stat().st_size > 0


def test_zoo_notation_is_translated_for_sb3():
    kw = sb3_translate(
        {
            "learning_rate": "lin_0.001",
            "clip_range": 0.2,
            "policy_kwargs": {"activation_fn": "ReLU"},
        }
    )
    assert kw["learning_rate"](1.0) == pytest.approx(1e-3)
    assert kw["learning_rate"](0.25) == pytest.approx(2.5e-4)
    assert kw["clip_range"] == 0.2 and kw["policy_kwargs"]["activation_fn"].__name__ == "ReLU"


def test_result_files_are_replaced_whole_or_not_at_all(tmp_path):
    """benchmarks.files: CSVs get the union header; a write that fails midway leaves the old
    file and no temp file (a resumed benchmark never reads a torn table or cache)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.files import save_figure, write_rows

    path = tmp_path / "t.csv"
    write_rows(path, [{"a": 1}, {"b": 2, "a": 3}])
    assert list(csv.reader(path.open())) == [["a", "b"], ["1", ""], ["3", "2"]]

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("fails while the second row is written")

    table = path.read_bytes()
    with pytest.raises(RuntimeError, match="second row"):
        write_rows(path, [{"a": 1}, {"a": Unprintable()}], fields=["a"])
    assert path.read_bytes() == table  # the old table, whole

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    save_figure(fig, tmp_path / "f.png", dpi=20)
    old = (tmp_path / "f.png").read_bytes()
    assert old[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(AttributeError):  # fails inside savefig, after the temp file was opened
        save_figure(fig, tmp_path / "f.png", bbox_inches="not a box")
    plt.close(fig)
    assert (tmp_path / "f.png").read_bytes() == old  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "t.csv"]  # no temp file


def test_verdicts_need_every_required_baseline_beaten_beyond_ci_overlap(tmp_path):
    from benchmarks.rl.reports import write_verdicts

    def runs(*finals):
        return [_result([(100, f, f, 1.0)], 1.0) for f in finals]

    with_zoo = Task("A-v0", 100, 5, (), success=None, not_applicable=(("rpo", "discrete actions"),))
    no_zoo = Task(
        "B-v0",
        100,
        5,
        (),
        not_applicable=(("sb3-ppo-zoo", "no entry"), ("sb3-ppo-zoo-gsde", "no entry")),
    )
    results = {
        "A-v0": {
            "vppo-gaussian": runs(9, 9, 9, 9, 9),
            "vtrpo-gaussian": runs(9, 9, 9, 9, 9),
            "ppo": runs(1, 1, 1, 1, 1),
            "sb3-ppo-zoo": runs(1, 2, 1, 2, 1),
            "sb3-ppo-zoo-gsde": runs(0, 9, 9, 9, 9),  # overlaps: no benefit for either
        },
        "B-v0": {
            "vppo-gaussian": runs(9, 9, 9, 9, 9),  # beats ppo and the stand-in: a benefit
            "vtrpo-gaussian": runs(0, 0, 0, 0, 0),  # worse than the stand-in
            "ppo": runs(1, 1, 1, 1, 1),
            "sb3-ppo-default": runs(2, 2, 2, 2, 2),
        },
    }
    text = write_verdicts("explore", [with_zoo, no_zoo], results, tmp_path)
    assert (tmp_path / "explore-verdict.md").read_text() == text
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in text.splitlines()}
    a_vppo = rows["A-v0", "vppo-gaussian (n=5)"]
    assert "beats (n=5) | beats (n=5) | overlap (n=5) | not run" in a_vppo
    assert a_vppo.endswith("| no |")
    assert rows["B-v0", "vppo-gaussian (n=5)"].endswith("| **yes** |")
    assert "worse (n=5)" in rows["B-v0", "vtrpo-gaussian (n=5)"]
    assert "Benefit shown: B-v0 vppo-gaussian." in text
    # One run has no interval: no verdict against it, so the benefit is incomplete, not shown.
    results["A-v0"]["sb3-ppo-zoo-gsde"] = runs(0)
    text = write_verdicts("explore", [with_zoo], results, tmp_path)
    assert "too few runs (n=5 vs 1)" in text and "Benefit shown: none." in text
    assert "Incomplete (a required baseline has not run): A-v0 vppo-gaussian" in text
    # Without the gSDE row the zoo baselines are incomplete, not beaten.
    del results["A-v0"]["sb3-ppo-zoo-gsde"]
    text = write_verdicts("explore", [with_zoo], results, tmp_path)
    assert (
        "Incomplete (a required baseline has not run): A-v0 vppo-gaussian, A-v0 vtrpo-gaussian."
        in text
    )
