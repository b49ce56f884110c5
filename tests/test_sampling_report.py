"""The sampling benchmark's table (benchmarks/sampling_report.py): no training."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

from benchmarks import sampling
from benchmarks.sampling_report import chosen_estimate, verdicts

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "sampling"


def test_chosen_estimate_takes_the_smaller_standard_error_not_the_smaller_error():
    row = {"method": "kl", "is_se": "0.01", "is_abs_err": "0.5", "ais_se": "0.1"}
    row["ais_abs_err"] = "0.001"
    assert chosen_estimate(row) == (0.5, "is")
    row["is_se"] = "nan"  # no se: the other estimate wins
    assert chosen_estimate(row) == (0.001, "ais")
    ais_only = {"method": "ais", "is_se": "0.0", "is_abs_err": "0.1", "ais_se": "1"}
    ais_only["ais_abs_err"] = "0.7"
    assert chosen_estimate(ais_only) == (0.7, "ais")  # the AIS method's "is" is its start
    assert math.isnan(chosen_estimate({"method": "kl"})[0])


def _row(target: str, method: str, err: float, **extra: object) -> dict[str, object]:
    row = {"target": target, "method": method, "seed": 0, "is_se": 0.001, "is_abs_err": err}
    row.update({"seconds": 10.0, "eval_seconds": 1.0, **extra})
    return row


def test_verdicts_say_met_or_by_how_much_missed():
    rows = [_row("funnel-10", "kl", 0.004), _row("manywell-32", "fab", 0.05)]
    rows.append(_row("manywell-32", "ais", 9.0, ais_se=0.002, ais_abs_err=0.01, seconds=1500.0))
    rows[-1]["cpu_seconds"] = 1400.0
    text = verdicts(rows)
    assert "- funnel-10: |Δlog Z| ≤ 0.005: best `kl` 0.004" in text and "— met." in text
    manywell = next(line for line in text.splitlines() if line.startswith("- manywell-32"))
    assert "best `ais` 0.01" in manywell and "took 1501 s wall" in manywell
    assert "Best flow method: `fab` 0.05 (1 seed(s)), misses it by 0.02." in manywell
    assert "- mog40: no scored run." in text


def test_the_committed_table_is_what_its_runs_csv_gives(tmp_path, monkeypatch, capsys):
    shutil.copy(RESULTS / "runs.csv", tmp_path / "runs.csv")
    monkeypatch.setattr(sys, "argv", ["sampling", "--report", "--out", str(tmp_path)])
    sampling.main()
    capsys.readouterr()
    assert (tmp_path / "table.md").read_text() == (RESULTS / "table.md").read_text()
