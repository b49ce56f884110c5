"""Flow distributions q_φ = h_φ # q₀ and the ``build`` registry of ready-made families.

The base q₀ is N(0, I) unless ``build(..., base="student-t", df=ν)`` asks for a heavy-tailed one
(:mod:`vi_flows.bases`).

>>> q = build("gaussian", 3)
>>> theta, log_q = q.sample_and_log_prob(5)
>>> tuple(theta.shape), tuple(log_q.shape)
((5, 3), (5,))
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vi_flows import runfiles
from vi_flows.bases import StandardNormal, make_base, standard_normal_log_prob
from vi_flows.registry import Registry
from vi_flows.transforms import (
    AffineCoupling,
    Compose,
    ElementwiseAffine,
    Inverse,
    LowerTriangularAffine,
    LowRankAffine,
    MaskedAutoregressive,
    Permutation,
    Planar,
    Radial,
    SplineCoupling,
    Transform,
)
from vi_flows.transforms.coupling import alternating_mask
from vi_flows.transforms.external import nflows_spline, pyro_coupling, pyro_planar

__all__ = [
    "FLOWS",
    "Flow",
    "build",
    "load",
    "names",
    "register",
    "save",
    "standard_normal_log_prob",
]


class Flow(nn.Module):
    """The distribution of θ = h(ξ), ξ ~ q₀ (N(0, I_d) by default), for an invertible map h.

    log q(θ) = log q₀(ξ) − log|det ∂h/∂ξ|, so :meth:`sample_and_log_prob` needs one forward
    pass and no inverse; :meth:`log_prob` at arbitrary points needs ``h.inverse``.

    Args:
        transform: the map h (forward = base → sample).
        config: how the flow was built (name, dim, options), kept so :func:`save` can rebuild it.
        base: the base distribution q₀ (a :class:`vi_flows.bases.Base` module); standard normal
            when omitted.
    """

    def __init__(
        self,
        transform: Transform,
        config: dict[str, Any] | None = None,
        base: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.dim = transform.dim
        self.config = dict(config or {})
        self.base = make_base() if base is None else base
        if transform.needs_normal_base and not isinstance(self.base, StandardNormal):
            first = transform
            while isinstance(first, Compose):  # the part that needs it comes first
                first = first.parts[0]
            raise ValueError(
                f"base: {type(first).__name__} is exact only on the standard-normal base, "
                f"got {type(self.base).__name__}; use base='normal'"
            )

    @property
    def has_log_prob(self) -> bool:
        """Whether :meth:`log_prob` works at arbitrary points (the transform is invertible)."""
        return self.transform.has_inverse

    def _like(self) -> Tensor:
        for tensor in self.parameters():
            return tensor
        for tensor in self.buffers():
            if tensor.is_floating_point():
                return tensor
        return torch.empty(0)

    def base_sample(self, sample_shape: int | tuple[int, ...] = ()) -> Tensor:
        """ξ ~ q₀ with shape (*sample_shape, d) in the flow's dtype and device (reparameterized)."""
        shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
        return self.base.sample((*shape, self.dim), self._like())

    def base_log_prob(self, xi: Tensor) -> Tensor:
        """log q₀(ξ), summed over the last dimension."""
        return self.base.log_prob(xi)

    def forward(self, xi: Tensor) -> tuple[Tensor, Tensor]:
        """Push given base noise through h: returns (θ, log q(θ))."""
        theta, ladj = self.transform(xi)
        return theta, self.base_log_prob(xi) - ladj

    def rsample(self, sample_shape: int | tuple[int, ...] = ()) -> Tensor:
        """Reparameterized samples θ = h(ξ) (gradients flow to the flow's parameters)."""
        return self.transform(self.base_sample(sample_shape))[0]

    @torch.no_grad()
    def sample(self, sample_shape: int | tuple[int, ...] = ()) -> Tensor:
        """Samples without gradient tracking."""
        return self.rsample(sample_shape)

    def sample_and_log_prob(
        self, sample_shape: int | tuple[int, ...] = ()
    ) -> tuple[Tensor, Tensor]:
        """Reparameterized samples and their log-density in one forward pass."""
        return self(self.base_sample(sample_shape))

    def log_prob(self, theta: Tensor) -> Tensor:
        """log q(θ) = log N(h⁻¹(θ)) + log|det ∂h⁻¹/∂θ|; needs an invertible transform."""
        if not self.has_log_prob:
            raise NotImplementedError(
                f"log_prob at arbitrary points needs an invertible transform; "
                f"{type(self.transform).__name__} has no closed-form inverse "
                "(use sample_and_log_prob instead)"
            )
        xi, ladj = self.transform.inverse(theta)
        return self.base_log_prob(xi) + ladj

    @torch.no_grad()
    def mean_and_std(self, n: int = 10_000) -> tuple[Tensor, Tensor]:
        """Monte Carlo mean and marginal standard deviation of q from ``n`` samples."""
        theta = self.sample(n)
        return theta.mean(0), theta.std(0)


#: The flow families: ``factory(dim, **options) -> Transform`` by name.
FLOWS: Registry[Callable[..., Transform]] = Registry("flow")


def register(name: str) -> Callable[[Callable[..., Transform]], Callable[..., Transform]]:
    """Decorator adding a factory ``factory(dim, **options) -> Transform`` to :func:`build`."""
    return FLOWS.register(name)


def names() -> list[str]:
    """The flow families :func:`build` knows."""
    return FLOWS.names()


def build(
    name: str,
    dim: int,
    *,
    base: str = "normal",
    df: float | None = None,
    learn_df: bool = False,
    **options: Any,
) -> Flow:
    """A ready flow of family ``name`` over ℝ^dim.

    Families: ``gaussian`` (diagonal), ``full-gaussian``, ``lowrank-gaussian``, ``planar``,
    ``radial``, ``realnvp``, ``maf``, ``iaf``, ``nsf``, ``nsf-ar`` (native), and the adapters
    ``nflows-spline``, ``pyro-planar``, ``pyro-coupling`` (see each factory's docstring for its
    options).

    Args:
        name: the family.
        dim: event size d.
        base: ``"normal"`` (N(0, I), the default) or ``"student-t"`` (independent Student-t(ν)
            coordinates, for heavy-tailed targets).
        df: ν > 0 of the Student-t base (default 5).
        learn_df: learn ν with the flow's parameters.
        **options: passed to the family's factory.

    Raises:
        UnknownNameError: for an unknown family (the message lists the known ones).
        ValueError: for a bad size or base option (unknown base, df ≤ 0).

    >>> q = build("iaf", 2, base="student-t", df=4.0)
    >>> q.sample_and_log_prob(3)[1].shape
    torch.Size([3])
    """
    factory = FLOWS.get(name)
    _check_sizes(name, dim, options)
    FLOWS.check_options(name, factory, options, fixed=("dim",), also=_BUILD_OPTIONS)
    base_module = make_base(base, df, learn_df)
    transform = factory(dim, **options)
    config: dict[str, Any] = {"name": name, "dim": dim, "options": options}
    if base != "normal":  # kept out of the config otherwise, so older saved files stay identical
        config["base"] = {"base": base, "df": df, "learn_df": learn_df}
    return Flow(transform, config=config, base=base_module)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_sizes(name: str, dim: Any, options: dict[str, Any]) -> None:
    """One clear error for sizes every family shares: dim, layers, hidden widths."""
    if not _is_count(dim):
        raise ValueError(f"flow {name!r}: dim must be an integer >= 1, got {dim!r}")
    if "layers" in options and not _is_count(options["layers"]):
        raise ValueError(
            f"flow {name!r}: layers must be an integer >= 1, got {options['layers']!r}"
        )
    hidden = options.get("hidden", ())
    if isinstance(hidden, int) or not all(_is_count(h) for h in hidden):
        raise ValueError(
            f"flow {name!r}: hidden must be a sequence of widths >= 1, e.g. (64, 64), "
            f"got {hidden!r}"
        )


#: What :func:`build` takes besides the family's own options (for messages).
_BUILD_OPTIONS = " (and base, df, learn_df)"


@register("gaussian")
def _gaussian(dim: int, init_scale: float = 1.0) -> Transform:
    """Mean-field Gaussian θ = μ + σ ⊙ ξ."""
    return ElementwiseAffine(dim, init_scale=init_scale)


@register("full-gaussian")
def _full_gaussian(dim: int, init_scale: float = 1.0) -> Transform:
    """Full-covariance Gaussian θ = μ + L ξ."""
    return LowerTriangularAffine(dim, init_scale=init_scale)


@register("lowrank-gaussian")
def _lowrank_gaussian(
    dim: int, rank: int = 4, init_scale: float = 1.0, factor_scale: float = 1.0
) -> Transform:
    """Low-rank-plus-diagonal Gaussian θ = μ + D (I + V Vᵀ) ξ (V = ``factor_scale`` · W,
    :class:`~vi_flows.transforms.LowRankAffine`)."""
    return LowRankAffine(dim, rank=rank, init_scale=init_scale, factor_scale=factor_scale)


def _with_affine_head(body: list[Transform], dim: int, init_scale: float) -> Transform:
    # A final elementwise affine lets every stack shift and rescale globally at O(d) cost, which
    # the planar/radial/coupling layers alone reach only slowly.
    return Compose([*body, ElementwiseAffine(dim, init_scale=init_scale)])


@register("planar")
def _planar(dim: int, layers: int = 16, init_scale: float = 1.0) -> Transform:
    """A stack of ``layers`` planar maps followed by an elementwise affine."""
    return _with_affine_head([Planar(dim) for _ in range(layers)], dim, init_scale)


@register("radial")
def _radial(dim: int, layers: int = 16, init_scale: float = 1.0) -> Transform:
    """A stack of ``layers`` radial maps followed by an elementwise affine."""
    return _with_affine_head([Radial(dim) for _ in range(layers)], dim, init_scale)


@register("realnvp")
def _realnvp(
    dim: int,
    layers: int = 8,
    hidden: tuple[int, ...] = (64, 64),
    scale_bound: float = 3.0,
    init_scale: float = 1.0,
) -> Transform:
    """``layers`` affine couplings with alternating masks (and a random permutation between pairs
    when dim > 2), followed by an elementwise affine."""
    if dim < 2:
        raise ValueError("realnvp needs dim >= 2 (a coupling splits the coordinates)")
    body: list[Transform] = []
    for i in range(layers):
        mask = alternating_mask(dim, i)
        body.append(AffineCoupling(dim, mask, hidden=tuple(hidden), scale_bound=scale_bound))
        if dim > 2 and i % 2 == 1 and i < layers - 1:
            body.append(Permutation(dim))
    return _with_affine_head(body, dim, init_scale)


def _alternating_orders(dim: int, layers: int) -> list[torch.Tensor]:
    # Reversing the order between autoregressive layers lets every coordinate condition on every
    # other one within two layers (the standard MAF/IAF choice).
    forward = torch.arange(dim)
    return [forward if i % 2 == 0 else forward.flip(0) for i in range(layers)]


@register("iaf")
def _iaf(
    dim: int,
    layers: int = 5,
    hidden: tuple[int, ...] = (64, 64),
    residual: bool = False,
    scale_bound: float = 3.0,
    init_scale: float = 1.0,
) -> Transform:
    """Inverse autoregressive flow (Kingma et al. 2016): ``layers`` affine MADE layers with
    alternating orders, then an elementwise affine. Sampling with log q is one pass per layer;
    log q at arbitrary points costs d passes per layer."""
    return _autoregressive(dim, layers, hidden, residual, scale_bound, init_scale, invert=False)


@register("maf")
def _maf(
    dim: int,
    layers: int = 5,
    hidden: tuple[int, ...] = (64, 64),
    residual: bool = False,
    scale_bound: float = 3.0,
    init_scale: float = 1.0,
) -> Transform:
    """Masked autoregressive flow (Papamakarios et al. 2017): as ``iaf`` but each layer is the
    inverse of a MADE layer, so log q at arbitrary points is one pass per layer and sampling
    costs d passes per layer (prefer ``iaf`` for VI)."""
    return _autoregressive(dim, layers, hidden, residual, scale_bound, init_scale, invert=True)


def _autoregressive(
    dim: int,
    layers: int,
    hidden: tuple[int, ...],
    residual: bool,
    scale_bound: float,
    init_scale: float,
    *,
    invert: bool,
) -> Transform:
    """Affine MADE layers with alternating orders (each inverted for MAF), then an affine."""
    body: list[Transform] = []
    for o in _alternating_orders(dim, layers):
        made = MaskedAutoregressive(
            dim, "affine", hidden, order=o, residual=residual, scale_bound=scale_bound
        )
        body.append(Inverse(made) if invert else made)
    return _with_affine_head(body, dim, init_scale)


@register("nsf")
def _nsf(
    dim: int,
    layers: int = 4,
    hidden: tuple[int, ...] = (64, 64),
    bins: int = 8,
    bound: float = 5.0,
    init_scale: float = 1.0,
) -> Transform:
    """Neural spline flow (Durkan et al. 2019), coupling form: ``layers`` rational-quadratic
    spline couplings with ``bins`` bins on [−bound, bound] and linear tails of learned slope,
    alternating masks (and a random permutation between pairs when dim > 2), then an
    elementwise affine. Both directions are one pass per layer."""
    if dim < 2:
        raise ValueError("nsf needs dim >= 2 (a coupling splits the coordinates); use nsf-ar")
    body: list[Transform] = []
    for i in range(layers):
        mask = alternating_mask(dim, i)
        body.append(SplineCoupling(dim, mask, hidden=tuple(hidden), bins=bins, bound=bound))
        if dim > 2 and i % 2 == 1 and i < layers - 1:
            body.append(Permutation(dim))
    return _with_affine_head(body, dim, init_scale)


@register("nsf-ar")
def _nsf_ar(
    dim: int,
    layers: int = 4,
    hidden: tuple[int, ...] = (64, 64),
    bins: int = 8,
    bound: float = 5.0,
    residual: bool = False,
    init_scale: float = 1.0,
) -> Transform:
    """Autoregressive neural spline flow, in the IAF direction (sampling with log q is one pass
    per layer): ``layers`` MADE-conditioned rational-quadratic splines with alternating orders,
    then an elementwise affine."""
    body: list[Transform] = [
        MaskedAutoregressive(
            dim, "spline", hidden, order=o, residual=residual, bins=bins, bound=bound
        )
        for o in _alternating_orders(dim, layers)
    ]
    return _with_affine_head(body, dim, init_scale)


register("nflows-spline")(nflows_spline)
register("pyro-planar")(pyro_planar)
register("pyro-coupling")(pyro_coupling)


def save(flow: Flow, path: str | Path) -> None:
    """Write the flow's parameters and the options to rebuild it (see :func:`load`).

    The file is written atomically (a crash leaves the previous file or the new one) and holds
    tensors and plain data only.
    """
    if not flow.config.get("name"):
        raise ValueError("only flows made by build() can be saved with the options to rebuild")
    runfiles.save({"config": flow.config, "state_dict": flow.state_dict()}, Path(path))


def load(path: str | Path, map_location: str | torch.device | None = None) -> Flow:
    """Rebuild a flow written by :func:`save`, parameters included, in the dtype it was saved in.

    Loading never executes code from the file (``weights_only=True``).

    Raises:
        vi_flows.runfiles.RunFileError: a missing, truncated or corrupt file, one holding other
            Python objects, or one whose contents do not rebuild a flow.
    """
    blob = runfiles.load(path, map_location=map_location)
    try:
        config = blob["config"]
        name, dim, base, options = (
            config["name"],
            config["dim"],
            config.get("base", {}),
            config["options"],
        )
    except (KeyError, TypeError) as err:
        raise runfiles.RunFileError(
            f"{path}: not a flow written by vi_flows.flows.save ({type(err).__name__}: {err})"
        ) from None
    try:
        flow = build(name, dim, **base, **options)
    except (TypeError, ValueError) as err:  # saved by an older version this one refuses
        raise runfiles.RunFileError(
            f"{path}: the saved flow ({name!r}, {options}) cannot be rebuilt by this version: {err}"
        ) from None
    try:
        state = blob["state_dict"]
        floats = [t.dtype for t in state.values() if t.is_floating_point()]
        if floats:  # build() makes the default dtype; a float64 flow must come back float64
            flow = flow.to(floats[0])
        flow.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        raise runfiles.RunFileError(
            f"{path}: not a flow written by vi_flows.flows.save ({type(err).__name__}: {err})"
        ) from None
    if map_location is not None:
        flow = flow.to(map_location)
    return flow
