"""Fault injection for tests/test_faults.py: SIGKILL this process at a chosen file write.

Usage: ``python tests/fault_shim.py MODULE ARG...`` runs ``MODULE.main([ARG...])`` (or, for
MODULE ``-c``, the code in the first ARG) with these environment variables:

* ``FAULT_FILE``: a file name such as ``checkpoint.pt``; a file whose name starts with it (the
  file itself or its ``.tmp``) is a fault point.
* ``FAULT_AT``: ``write`` — at the first write to such a file, write the first half of that chunk,
  flush it and SIGKILL (a torn file, as a crash mid-write leaves); ``replace`` — SIGKILL just
  before an ``os.replace`` onto such a file (temp file complete, target untouched).
* ``FAULT_SKIP``: let this many matching writes (or replaces) through first (default 0).

Pure Python (no strace): ``open``/``io.open`` return a file whose ``write`` is watched;
``torch.save`` to a path (which torch writes from C++) is serialized here and written the same
way; ``os.replace`` is wrapped.
"""

from __future__ import annotations

import builtins
import importlib
import io
import os
import signal
import sys
from pathlib import Path

NAME = os.environ.get("FAULT_FILE", "")
AT = os.environ.get("FAULT_AT", "write")
_skip = [int(os.environ.get("FAULT_SKIP", "0"))]
_real_open = builtins.open
_real_replace = os.replace


def _matches(path) -> bool:
    try:
        return bool(NAME) and Path(os.fsdecode(path)).name.startswith(NAME)
    except TypeError:  # a file descriptor
        return False


def _due() -> bool:
    if _skip[0] > 0:
        _skip[0] -= 1
        return False
    return True


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _Watched:
    """A file object whose first write is torn: half of it lands, then the process dies."""

    def __init__(self, f) -> None:
        self._f, self._armed = f, True

    def write(self, data):
        if self._armed:
            self._armed = False
            if _due():
                self._f.write(data[: max(1, len(data) // 2)])
                self._f.flush()
                os.fsync(self._f.fileno())
                _die()
        return self._f.write(data)

    def __enter__(self):
        self._f.__enter__()
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)

    def __iter__(self):
        return iter(self._f)

    def __getattr__(self, name):
        return getattr(self._f, name)


def _open(file, mode="r", *args, **kwargs):
    f = _real_open(file, mode, *args, **kwargs)
    if AT == "write" and _matches(file) and any(c in mode for c in "wax+"):
        return _Watched(f)
    return f


def _replace(src, dst, *args, **kwargs):
    if AT == "replace" and _matches(dst) and _due():
        _die()
    return _real_replace(src, dst, *args, **kwargs)


def install() -> None:
    builtins.open = io.open = _open
    os.replace = _replace
    import torch

    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, str | os.PathLike) and AT == "write" and _matches(f):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            with _open(f, "wb") as out:
                out.write(buffer.getvalue())
            return None
        return real_save(obj, f, *args, **kwargs)

    torch.save = save


if __name__ == "__main__":
    install()
    module, args = sys.argv[1], sys.argv[2:]
    if module == "-c":
        exec(compile(args[0], "<fault_shim -c>", "exec"), {"__name__": "__main__"})
        sys.exit(0)
    sys.exit(importlib.import_module(module).main(args))
