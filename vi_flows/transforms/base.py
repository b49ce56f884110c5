"""The one small base every transform derives from, plus composition and inversion.

Conventions (used everywhere in the toolkit):

* **Forward means base → sample.** ``y, ladj = t(x)`` maps noise ξ to a sample θ and returns
  ``log|det ∂y/∂x|`` with the batch shape of ``x`` (all dimensions but the last), so sampling
  and the sample's log-density come out of one pass:

  .. math:: \\log q(θ) = \\log q_0(ξ) - \\log|\\det ∂h/∂ξ|.

* ``x, ladj = t.inverse(y)`` returns ``log|det ∂x/∂y|`` (the negative of the forward one at the
  matching point), or raises :class:`NotImplementedError` where no closed form exists.
* Every transform acts on the last dimension (event size ``dim``) and broadcasts over any leading
  batch shape, in whatever dtype and on whatever device its parameters live.
* Parameter constraints (positive scales, planar invertibility) live in one named method of each
  transform, never scattered through ``forward``.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn

__all__ = ["Transform", "Compose", "Inverse"]


class Transform(nn.Module):
    """Abstract invertible map on vectors of size :attr:`dim` with an exact log-determinant.

    Subclasses implement :meth:`forward` and, where a closed form exists, :meth:`inverse`.
    """

    dim: int

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = int(dim)

    #: ``False`` for transforms whose inverse has no closed form (planar, radial).
    has_inverse: bool = True
    #: ``True`` for transforms whose log-det holds only for x ~ N(0, I) (the mixture's, which
    #: is log N(x) − log q(y)): a :class:`~vi_flows.flows.Flow` refuses another base for them.
    needs_normal_base: bool = False
    #: ``True`` when :meth:`forward` (sampling) takes one network pass per coordinate, d in all
    #: (a MAF layer); :attr:`sequential_inverse` likewise for :meth:`inverse` (an IAF layer).
    sequential_forward: bool = False
    sequential_inverse: bool = False

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        """Map ``x`` (..., dim) to ``(y, log|det ∂y/∂x|)`` with shapes ``(..., dim)``, ``(...)``."""
        raise NotImplementedError

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``y`` back to ``(x, log|det ∂x/∂y|)``; raises where there is no closed form."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form inverse")

    def _check(self, x: Tensor) -> None:
        if x.shape[-1:] != (self.dim,):
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape (..., {self.dim}), "
                f"got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Compose(Transform):
    """Composition ``t_k ∘ … ∘ t_1``: applies ``transforms`` in the order given.

    The log-determinant of a composition is the sum of the parts' log-determinants.

    >>> import torch
    >>> from vi_flows.transforms import ElementwiseAffine
    >>> t = Compose([ElementwiseAffine(3), ElementwiseAffine(3)])
    >>> y, ladj = t(torch.zeros(5, 3))
    >>> tuple(y.shape), tuple(ladj.shape)
    ((5, 3), (5,))
    """

    def __init__(self, transforms: Iterable[Transform]) -> None:
        parts = list(transforms)
        if not parts:
            raise ValueError("Compose needs at least one transform")
        dims = {t.dim for t in parts}
        if len(dims) != 1:
            raise ValueError(f"all transforms must share one dim, got {sorted(dims)}")
        super().__init__(parts[0].dim)
        later = [type(t).__name__ for t in parts[1:] if t.needs_normal_base]
        if later:
            raise ValueError(
                f"transforms: {later[0]} needs N(0, I) inputs, so it can only come first in a "
                "Compose"
            )
        self.parts = nn.ModuleList(parts)
        self.has_inverse = all(t.has_inverse for t in parts)
        self.needs_normal_base = parts[0].needs_normal_base
        self.sequential_forward = any(t.sequential_forward for t in parts)
        self.sequential_inverse = any(t.sequential_inverse for t in parts)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        total = x.new_zeros(x.shape[:-1])
        for t in self.parts:
            x, ladj = t(x)
            total = total + ladj
        return x, total

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        self._check(y)
        total = y.new_zeros(y.shape[:-1])
        for t in reversed(self.parts):
            y, ladj = t.inverse(y)
            total = total + ladj
        return y, total


class Inverse(Transform):
    """The inverse of an invertible transform: its ``forward`` is ``base.inverse`` and vice versa.

    >>> import torch
    >>> from vi_flows.transforms import ElementwiseAffine
    >>> t = ElementwiseAffine(2)
    >>> x = torch.randn(4, 2)
    >>> torch.allclose(Inverse(t)(t(x)[0])[0], x, atol=1e-6)
    True
    """

    def __init__(self, base: Transform) -> None:
        if not base.has_inverse:
            raise ValueError(f"{type(base).__name__} has no closed-form inverse to wrap")
        super().__init__(base.dim)
        self.base = base
        self.sequential_forward = base.sequential_inverse
        self.sequential_inverse = base.sequential_forward

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.base.inverse(x)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.base(y)
