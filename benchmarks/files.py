"""Result files of the benchmarks, written atomically (vi_flows.runfiles).

A benchmark runs for minutes to hours and is resumed from what it wrote (benchmarks/rl caches
each finished cell as ``result.json``): a table, CSV, figure or cache file torn by a crash or a
full disk would be read back as a result. Every file goes to ``NAME.tmp`` in the same folder and
is moved onto ``NAME`` with ``os.replace``, so a reader sees the old file or the new one.

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = pathlib.Path(tmp) / "t.csv"
...     write_rows(path, [{"a": 1, "b": 2}, {"a": 3}])
...     path.read_text().splitlines()
['a,b', '1,2', '3,']
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from vi_flows.runfiles import save_figure, write_text

__all__ = ["check_names", "out_folder", "save_figure", "write_rows", "write_text"]


def write_rows(
    path: str | Path,
    rows: Iterable[dict[str, Any]],
    fields: Sequence[str] | None = None,
    restval: Any = "",
) -> None:
    """Write dict rows as CSV with a header atomically; ``fields`` defaults to the union of the
    rows' keys in first-seen order (a missing key is written as ``restval``)."""
    rows = list(rows)
    if fields is None:
        fields = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, list(fields), restval=restval)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def out_folder(parser: argparse.ArgumentParser, path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a folder, made if missing; a file there is the caller's error (exit 2)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        parser.error(f"{flag} {path} is a file, not a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_names(
    parser: argparse.ArgumentParser, flag: str, given: Iterable[str], known: Iterable[str]
) -> None:
    """Exit 2 with one line when a name in ``given`` is not in ``known`` (listing those)."""
    known = list(known)
    unknown = [g for g in given if g not in known]
    if unknown:
        parser.error(f"{flag}: unknown {unknown[0]!r}; known: {', '.join(known)}")
