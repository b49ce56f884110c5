"""One registry idiom for every kind of named thing: flows, targets, losses, kernels, and rl's
policies and algorithms.

A :class:`Registry` maps names to objects (usually factories). Names are case-insensitive and ``_``
is the same as ``-``. An unknown name raises :class:`UnknownNameError`, whose one-line message names
the kind and lists the known names. Prefix resolvers handle open-ended families such as
``posteriordb:<posterior>``.

>>> colors = Registry("color")
>>> @colors.register("dark-red")
... def dark_red():
...     return (139, 0, 0)
>>> colors.get("Dark_Red")()
(139, 0, 0)
>>> colors.get("blue")
Traceback (most recent call last):
    ...
vi_flows.registry.UnknownNameError: unknown color 'blue'; known: dark-red
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(ValueError, KeyError):
    """An unknown name was looked up in a :class:`Registry`.

    It is both a ``ValueError`` and a ``KeyError`` so code written against either of the older
    idioms keeps working; new code catches ``UnknownNameError``.
    """

    def __str__(self) -> str:  # KeyError would repr() the message; print it as written
        return str(self.args[0]) if self.args else ""


def _normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-")


class Registry(Generic[T]):
    """Names → objects, for one kind of thing.

    Args:
        kind: what is registered, for messages (``"flow"``, ``"target"``, ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._prefixes: dict[str, tuple[Callable[[str], T], Callable[[], list[str]]]] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: Any = None) -> Any:
        """Add ``obj`` under ``name``; without ``obj`` this is a decorator.

        Raises:
            ValueError: when ``name`` is already taken by a different object.
        """

        def add(item: T) -> T:
            key = _normalize(name)
            if key in self._items and self._items[key] is not item:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[key] = item
            return item

        return add if obj is None else add(obj)

    def register_prefix(
        self,
        prefix: str,
        resolve: Callable[[str], T],
        known: Callable[[], list[str]] = list,
    ) -> None:
        """Resolve every name ``"<prefix>:<rest>"`` with ``resolve(rest)``.

        Args:
            prefix: e.g. ``"posteriordb"``.
            resolve: called with the part after the colon (case kept).
            known: the names it can resolve now, for listings (without the prefix).
        """
        self._prefixes[_normalize(prefix)] = (resolve, known)

    def get(self, name: str) -> T:
        """The object registered as ``name`` (or resolved by its prefix).

        Raises:
            UnknownNameError: for an unknown name; the message lists the known ones.
        """
        if not isinstance(name, str):
            raise UnknownNameError(f"{self.kind} name must be a string, got {name!r}")
        head, sep, rest = name.partition(":")
        if sep and _normalize(head) in self._prefixes:
            return self._prefixes[_normalize(head)][0](rest)
        key = _normalize(name)
        if key not in self._items:
            known = ", ".join(self.names()) or "(none)"
            extra = "".join(f", {p}:<name>" for p in sorted(self._prefixes))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}{extra}")
        return self._items[key]

    def check_options(
        self,
        name: str,
        factory: Callable[..., Any],
        options: dict[str, Any],
        *,
        fixed: tuple[str, ...] = (),
        also: str = "",
    ) -> None:
        """Raise one ``ValueError`` naming an option ``factory`` (what ``name`` resolved to) does
        not take, and listing the ones it does. A factory that passes ``**options`` on is left
        to what it calls.

        Args:
            fixed: arguments the caller passes itself (not options, e.g. ``dim``).
            also: options the caller takes besides the factory's, for the message.

        >>> colors = Registry("color")
        >>> colors.check_options("rgb", lambda red, green=0: None, {"blue": 1})
        Traceback (most recent call last):
            ...
        ValueError: color 'rgb': unknown option 'blue'; its options: green, red
        """
        params = inspect.signature(factory).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return
        known = sorted(set(params) - set(fixed))
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(
                f"{self.kind} {name!r}: unknown option {unknown[0]!r}; its options: "
                f"{', '.join(known) or 'none'}{also}"
            )

    def names(self, *, with_prefixed: bool = False) -> list[str]:
        """The registered names, sorted; with ``with_prefixed``, also ``prefix:name`` for each
        name the prefix resolvers report as available."""
        out = sorted(self._items)
        if with_prefixed:
            for prefix, (_, known) in sorted(self._prefixes.items()):
                out += [f"{prefix}:{n}" for n in known()]
        return out

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _normalize(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
