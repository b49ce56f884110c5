"""The target base: :class:`Target`, wrapping user callables, and the target registry.

Every target maps x of shape ``(..., dim)`` to log p̃(x) of shape ``(...)`` in the dtype and on
the device of ``x`` (differentiably), and says what is known about it: ``log_z`` (log ∫ p̃), an
exact sampler, moments, mode locations and a plotting box.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from vi_flows.checks import check_integer
from vi_flows.objectives import HasLogProb
from vi_flows.registry import Registry

__all__ = [
    "TARGETS",
    "Bounds",
    "CallableTarget",
    "Target",
    "as_target",
    "get",
    "names",
    "normal_log_prob",
    "register",
    "register_prefix",
]

Bounds = tuple[tuple[float, float], ...]
_LOG_2PI = math.log(2.0 * math.pi)

#: The target registry: ``factory(**options) -> Target`` by name; ``posteriordb:<name>`` is a
#: prefix resolved by :mod:`vi_flows.targets.posteriordb`.
TARGETS: Registry[Callable[..., Target]] = Registry("target")


def normal_log_prob(x: Tensor, loc: Tensor | float, scale: Tensor | float) -> Tensor:
    """Elementwise log N(x; loc, scale²), constants included (also used by posteriordb)."""
    z = (x - loc) / scale
    log_scale = torch.log(scale) if isinstance(scale, Tensor) else math.log(scale)
    return -0.5 * z * z - log_scale - 0.5 * _LOG_2PI


class Target:
    """An unnormalized density p̃ on R^dim and what is known about it.

    Subclasses implement ``_log_prob`` (and ``_sample`` when exact sampling is possible).

    Attributes:
        name: registry name.
        dim: dimension d of x.
        log_z: log ∫ p̃(x) dx where known (0.0 for normalized densities), else ``None``.
        bounds: plotting box ``((lo, hi), (lo, hi))`` for 2-D targets, else ``None``.
        mean, std: float64 tensors (d,) of the exact moments where known, else ``None``.
        modes: float64 tensor (k, d) of the mode (component) locations of mixtures, else ``None``.
    """

    log_z: float | None = None
    bounds: Bounds | None = None
    mean: Tensor | None = None
    std: Tensor | None = None
    modes: Tensor | None = None

    def __init__(self, name: str, dim: int, **known: Any) -> None:
        """Set ``name``, ``dim`` and any of the known attributes above, e.g. ``log_z=0.0``."""
        if int(dim) < 1:
            raise ValueError(f"{name}: dim must be >= 1, got {dim}")
        self.name, self.dim = name, int(dim)
        for key, value in known.items():
            setattr(self, key, value)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p̃(x) for x of shape ``(..., dim)``; returns shape ``(...)``."""
        if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[-1] != self.dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"{self.name}: expected a tensor of shape (..., {self.dim}), got {got}"
            )
        return self._log_prob(x)

    def __call__(self, x: Tensor) -> Tensor:
        return self.log_prob(x)

    def _log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _sample(self, n: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
        raise NotImplementedError

    @property
    def has_sample(self) -> bool:
        """Whether :meth:`sample` draws exact samples (else it raises ``NotImplementedError``)."""
        return type(self)._sample is not Target._sample

    def sample(
        self, n: int, generator: torch.Generator | None = None, *, dtype: torch.dtype | None = None
    ) -> Tensor:
        """``n`` exact samples (n, dim), drawn in float64 on ``generator``'s device (CPU if
        ``None``; a seeded generator makes them reproducible), returned in ``dtype`` (default:
        ``torch.get_default_dtype()``)."""
        if not self.has_sample:
            raise NotImplementedError(f"target {self.name!r} has no exact sampler")
        device = generator.device if generator is not None else torch.device("cpu")
        x = self._sample(int(n), generator, device)
        return x.to(dtype or torch.get_default_dtype())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, log_z={self.log_z})"


class CallableTarget(Target):
    """A user log-density ``fn: (n, d) -> (n,)`` as a :class:`Target` (``log_z`` unknown).

    Inputs of any batch shape are flattened to ``(n, d)`` before calling ``fn``, so ``fn`` only
    needs to handle 2-D batches.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], dim: int, name: str | None = None) -> None:
        super().__init__(name or getattr(fn, "__name__", type(fn).__name__), dim)
        self._fn = fn

    def _log_prob(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.dim)
        try:
            out = self._fn(flat)
        except Exception as err:  # the user's own error, kept; the note says what it was given
            err.add_note(
                f"vi_flows: {self.name} was called on a batch of shape {tuple(flat.shape)}: a "
                f"log-density takes (n, {self.dim}) points and returns (n,) values"
            )
            raise
        if not isinstance(out, Tensor) or out.shape not in ((flat.shape[0],), (flat.shape[0], 1)):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"{self.name}: the log-density returned {shape} for inputs {tuple(flat.shape)}; "
                f"expected ({flat.shape[0]},)"
            )
        return out.reshape(x.shape[:-1])


def register(name: str, factory: Callable[..., Target] | None = None) -> Any:
    """Add ``factory(**options) -> Target`` under ``name``; without ``factory``, a decorator."""
    return TARGETS.register(name, factory)


def register_prefix(
    prefix: str, resolve: Callable[[str], Target], known: Callable[[], list[str]] = list
) -> None:
    """Resolve ``"<prefix>:<name>"`` by ``resolve(name)``; ``known()`` lists what is available."""
    TARGETS.register_prefix(prefix, lambda rest: lambda **options: resolve(rest, **options), known)


def names(*, with_prefixed: bool = False) -> list[str]:
    """The registered target names (with ``with_prefixed``, also the available
    ``posteriordb:<name>`` entries)."""
    return TARGETS.names(with_prefixed=with_prefixed)


def get(name: str, **options: Any) -> Target:
    """Build the registered target ``name`` (case-insensitive, ``_`` = ``-``) with ``options``.

    Names ``posteriordb:<posterior>`` load a real posterior (:mod:`vi_flows.targets.posteriordb`).

    >>> get("gaussian", dim=4).dim
    4

    Raises:
        UnknownNameError: for an unknown name (the message lists the known ones).
    """
    factory = TARGETS.get(name)
    TARGETS.check_options(name, factory, options)
    dim = options.get("dim", 1)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        # Checked here, before a target builds (dim,)-shaped tensors from it.
        raise ValueError(f"target {name!r}: dim must be an integer >= 1, got {dim!r}")
    return factory(**options)


def as_target(obj: Any, dim: int | None = None) -> Target:
    """Turn ``obj`` into a :class:`Target`.

    Args:
        obj: a ``Target``; a registered name (``dim`` is passed on as the ``dim`` option); an
            object with a ``log_prob`` method (its ``dim``, or ``event_shape`` for a torch
            distribution, gives the dimension); or any callable x (n, d) -> log p̃(x) (n,).
        dim: the dimension; required for bare callables, checked against ``obj`` otherwise.

    Raises:
        ValueError: when ``dim`` is needed but missing, or disagrees with ``obj``.
        TypeError: when ``obj`` is none of the above.
    """
    check_integer("dim", dim, 1, or_none=True)
    dist = torch.distributions.Distribution
    if isinstance(obj, dist) and obj.batch_shape and not obj.event_shape:
        raise ValueError(
            f"a torch distribution with batch_shape {tuple(obj.batch_shape)} and event_shape () "
            "gives one log-density per coordinate; wrap it as torch.distributions."
            "Independent(dist, 1) to get one per point"
        )
    if isinstance(obj, Target):
        target = obj
    elif isinstance(obj, str):
        target = get(obj) if dim is None else get(obj, dim=dim)
    elif isinstance(obj, HasLogProb) or callable(obj):
        fn = obj.log_prob if isinstance(obj, HasLogProb) else obj
        d = dim if dim is not None else getattr(obj, "dim", None)
        if d is None and len(getattr(obj, "event_shape", ())) == 1:
            d = obj.event_shape[0]
        if d is None and isinstance(obj, dist) and not obj.batch_shape and not obj.event_shape:
            d = 1  # a scalar distribution: log_prob of (n, 1) is (n, 1), accepted as (n,)
        if d is None:
            raise ValueError(
                "as_target needs dim=... for a bare callable log-density (the dimension cannot "
                "be inferred from a function)"
            )
        name = getattr(obj, "name", None) or getattr(obj, "__name__", type(obj).__name__)
        target = CallableTarget(fn, int(d), name)
    else:
        raise TypeError(
            f"cannot make a target from {type(obj).__name__}: expected a Target, a registered "
            f"name ({', '.join(names())}), an object with log_prob or a callable x -> log p(x)"
        )
    if dim is not None and target.dim != dim:
        raise ValueError(f"target {target.name!r} has dim {target.dim}, but dim={dim} was given")
    return target
