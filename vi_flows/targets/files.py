"""A log-density written as a function in a Python file, named ``path/to/file.py:function``.

This is how ``vi-flows fit model.py:log_density --dim 12`` reads a user's model. Loading it
imports the file: it is the user's own code, named by the user. (Loading a fitted *run* never
imports anything; :mod:`vi_flows.runfiles`.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from vi_flows.targets.base import Target, as_target

__all__ = ["from_file", "is_file_spec"]


def is_file_spec(spec: str) -> bool:
    """Whether ``spec`` names a function in a Python file (``FILE.py:FUNCTION``).

    >>> is_file_spec("model.py:log_density"), is_file_spec("posteriordb:arK-arK")
    (True, False)
    """
    head, sep, _ = spec.rpartition(":")
    return bool(sep) and head.endswith(".py")


def from_file(spec: str, dim: int | None) -> Target:
    """``path/to/file.py:function`` → that function as a target of dimension ``dim``.

    Raises:
        ValueError: one line for a missing ``dim`` or file, a file that fails to import (its
            error named) or that has no such function (its functions listed).
    """
    path_text, _, name = spec.rpartition(":")
    path = Path(path_text)
    if dim is None:
        raise ValueError(f"dim is required for a target given as FILE.py:FUNCTION ({spec})")
    if not path.is_file():
        raise ValueError(f"target file {str(path)!r} not found")
    module_spec = importlib.util.spec_from_file_location(f"_vi_flows_target_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"cannot import {str(path)!r} as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - any failure of the user's file is reported as one line
        raise ValueError(f"importing {path} failed: {type(err).__name__}: {err}") from err
    fn = getattr(module, name, None)
    if not callable(fn):
        found = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")]
        raise ValueError(
            f"{path} has no function {name!r} (functions there: {', '.join(found) or 'none'})"
        )
    return as_target(fn, dim=dim)
