"""Files a run writes: atomic writes and loads that never execute code.

Every file is written to ``NAME.tmp`` in the same folder, flushed and fsynced, then moved over
``NAME`` with :func:`os.replace` (atomic on POSIX and Windows), and the folder is fsynced: a crash
at any instant leaves either the old file or the new one, never a torn one. Tensors are read back
with ``torch.load(weights_only=True)``, whose unpickler admits tensors and plain containers only,
so a crafted file cannot run code, and the archive's CRC-32s are checked first, so a truncated
or bit-flipped file is refused rather than loaded; each failure is one clear
:class:`RunFileError`.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "state.pt"
>>> save({"step": 3, "w": torch.zeros(2)}, path)
>>> load(path)["step"]
3
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "RunFileError",
    "atomic_write",
    "check_writable",
    "load",
    "save",
    "save_figure",
    "strict_json",
    "write_text",
]


class RunFileError(ValueError):
    """A run file is missing, truncated, corrupt, or holds more than tensors and plain data."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on ``PATH.tmp``, fsync it, then ``os.replace`` it onto ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if not path.parent.is_dir():  # say so for the path asked for, not for its temp file
        raise FileNotFoundError(2, "no such folder (create it first)", str(path.parent))
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> None:
    """``fig.savefig`` (a matplotlib figure) atomically; the format is the path's suffix
    (``.png`` without one)."""
    path = Path(path)
    fmt = path.suffix.removeprefix(".") or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, **kwargs))


def check_writable(folder: str | Path, argument: str, *, create: bool = False) -> None:
    """Fail now, not after a long run, when ``folder`` cannot take a new file.

    Probes with a temporary file (deleted at once). With ``create`` the folder (and parents) is
    made first. Raises a one-line ``ValueError`` naming ``argument`` otherwise.
    """
    folder = Path(folder)
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(
                f"{argument}: cannot create folder {str(folder)!r} ({err.strerror})"
            ) from None
    if not folder.is_dir():
        raise ValueError(f"{argument}: folder {str(folder)!r} does not exist (create it first)")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
    except OSError as err:
        raise ValueError(
            f"{argument}: folder {str(folder)!r} is not writable ({err.strerror})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` atomically (``obj``: tensors and plain data, see :func:`load`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def load(path: str | Path, map_location: str | torch.device | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` with one clear error for a bad file.

    Raises:
        RunFileError: the file is missing, truncated or corrupt, or it holds Python objects other
            than tensors and plain data (such a file is refused, nothing in it is executed).
    """
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        # torch does not verify the archive's CRC-32s: a flipped bit in a tensor would load.
        damaged = zipfile.ZipFile(io.BytesIO(data)).testzip()
    except Exception as err:  # noqa: BLE001 - zipfile raises many types on damaged headers
        raise RunFileError(f"{path}: truncated or corrupt (not a whole archive: {err})") from None
    if damaged is not None:
        raise RunFileError(f"{path}: corrupt (CRC-32 mismatch in record {damaged!r})")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message advises weights_only=False, i.e. running the file's code: never do.
        first = str(err).strip().splitlines()
        detail = next((line for line in first if "GLOBAL" in line or "global" in line), "")
        why = f" [{detail.strip()}]" if detail else ""
        raise RunFileError(
            f"{path}: refused, it holds Python objects other than tensors and plain data "
            f"(written by another program or an older vi-flows, or tampered with; nothing in it "
            f"was run){why}"
        ) from None
    except Exception as err:  # noqa: BLE001 - whatever a damaged archive raises, it is damaged
        text = str(err).strip()
        reason = text.splitlines()[0].split(". ")[0] if text else type(err).__name__
        raise RunFileError(f"{path}: truncated or corrupt ({reason})") from None


def strict_json(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` with NaN and ±inf written as ``null``: Python's own JSON writes ``NaN`` and
    ``Infinity``, which strict parsers (``jq``, JavaScript) refuse.

    >>> strict_json({"return_mean": float("nan"), "steps": 3, "x": [1.5, float("inf")]})
    '{"return_mean": null, "steps": 3, "x": [1.5, null]}'
    """

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), allow_nan=False, **kwargs)
