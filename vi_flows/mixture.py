r"""Mixtures of flows: q(θ) = Σ_k π_k q_k(θ) with learnable weights, as one :class:`Flow`.

``build("mixture", d, components=K, family="realnvp", ...)`` returns an ordinary
:class:`~vi_flows.flows.Flow` whose transform is a :class:`MixtureTransform`, so sampling,
``log_prob``, ``fit``, ``diagnose`` and ``save``/``load`` work unchanged.

**How a mixture is a "transform".** The first base coordinate ξ₁ ~ N(0, 1) picks the component
and is reused: with u = Φ(ξ₁) and cumulative weights c_k, u ∈ [c_{k−1}, c_k) selects k (so
P(k) = π_k), and ξ₁' = Φ⁻¹((u − c_{k−1})/π_k) ~ N(0, 1) independently of k. Then
θ = h_k(ξ₁', ξ₂, …, ξ_d) ~ q_k. The map is not injective, so the returned "log-det" is the one
that makes the flow's density rule exact: log|det| = log N(ξ) − log q(θ), with
log q(θ) = logsumexp_k(log π_k + log q_k(θ)) computed through every component's inverse.
``inverse(θ)`` returns the preimage under the most responsible component. Components must be
invertible.

**Training.** Sampling k is discrete, so the reparameterization gradient of the weights misses the
jumps between components. The ``mixture-kl`` loss instead uses the stratified ELBO

.. math::
    \mathrm{ELBO} = \sum_k π_k\, E_{ξ}[\log p̃(h_k(ξ)) − \log q(h_k(ξ))],

estimated with n/K reparameterized draws per component: every term is differentiable (π_k
explicitly and inside log q, the components through h_k), so its gradient is unbiased for all
parameters (Morningstar et al. 2021, "Automatic differentiation variational inference with
mixtures"). The score-based losses (``forward``, ``chi2``, ``fab``) only need ``log_prob`` and
train the weights correctly as they are.

>>> from vi_flows.flows import build
>>> q = build("mixture", 2, components=3, family="gaussian")
>>> theta, log_q = q.sample_and_log_prob(5)
>>> bool(torch.allclose(log_q, q.log_prob(theta), atol=1e-5))
True
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from vi_flows.flows import FLOWS, Flow, register, standard_normal_log_prob
from vi_flows.losses import LOSSES, LossOutput
from vi_flows.objectives import LogProb, check_log_prob_output
from vi_flows.transforms import Compose, ElementwiseAffine, Transform

__all__ = ["MixtureKL", "MixtureTransform", "split_mixture"]

_EPS = 1e-12


def _normal_cdf(x: Tensor) -> Tensor:
    return torch.special.ndtr(x)


class MixtureTransform(Transform):
    """K component transforms and mixture logits, as described in the module docstring.

    Args:
        components: the K invertible component transforms (same dim).
    """

    def __init__(self, components: list[Transform]) -> None:
        dims = {c.dim for c in components}
        if len(components) < 1 or len(dims) != 1:
            raise ValueError("mixture: needs >= 1 component transforms sharing one dim")
        if not all(c.has_inverse for c in components):
            raise ValueError("mixture: every component must be invertible (log q needs inverses)")
        super().__init__(dims.pop())
        self.needs_normal_base = True  # its log-det is log N(ξ) − log q(θ) (module docstring)
        self.components = nn.ModuleList(components)
        self.sequential_forward = any(c.sequential_forward for c in components)
        # log q at a sample runs every component's inverse
        self.sequential_inverse = any(c.sequential_inverse for c in components)
        self.sequential_forward |= self.sequential_inverse
        self.logits = nn.Parameter(torch.zeros(len(components)))

    @torch.no_grad()
    def start_at(self, locs: Tensor) -> None:
        """Centre component k's closing shift at ``locs[k]`` for k < len(locs) (e.g. the modes a
        mode search found); the others keep their start. Needs the components of
        ``build("mixture", ...)``, each ending in an :class:`ElementwiseAffine`."""
        if locs.dim() != 2 or locs.shape[1] != self.dim:
            raise ValueError(f"locs must have shape (k, {self.dim}), got {tuple(locs.shape)}")
        for comp, loc in zip(self.components, locs, strict=False):
            if not (isinstance(comp, Compose) and isinstance(comp.parts[-1], ElementwiseAffine)):
                raise TypeError("start_at needs components ending in an ElementwiseAffine")
            comp.parts[-1].loc.copy_(loc)

    def log_weights(self) -> Tensor:
        """log π_k (K,)."""
        return torch.log_softmax(self.logits, 0)

    def component_log_probs(self, theta: Tensor) -> Tensor:
        """log q_k(θ) for every component: shape (..., K)."""
        out = []
        for comp in self.components:
            xi, ladj = comp.inverse(theta)
            out.append(standard_normal_log_prob(xi) + ladj)
        return torch.stack(out, -1)

    def log_prob(self, theta: Tensor) -> Tensor:
        """log q(θ) = logsumexp_k(log π_k + log q_k(θ))."""
        return torch.logsumexp(self.log_weights() + self.component_log_probs(theta), -1)

    def _bounds(self) -> tuple[Tensor, Tensor]:
        pi = torch.softmax(self.logits.double(), 0)
        upper = torch.cumsum(pi, 0)
        return upper - pi, pi

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        lower, pi = self._bounds()
        u = _normal_cdf(x[..., 0].double())
        k = torch.searchsorted(lower + pi, u.contiguous(), right=True).clamp(max=len(pi) - 1)
        inner = ((u - lower[k]) / pi[k]).clamp(_EPS, 1 - _EPS)
        xi = torch.cat([torch.special.ndtri(inner).to(x)[..., None], x[..., 1:]], -1)
        theta = torch.zeros_like(x)
        for j, comp in enumerate(self.components):
            mask = k == j
            if mask.any():
                theta = theta.index_put((mask,), comp(xi[mask])[0])
        return theta, standard_normal_log_prob(x) - self.log_prob(theta)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        self._check(y)
        log_qk = self.component_log_probs(y)
        log_q = torch.logsumexp(self.log_weights() + log_qk, -1)
        k = (self.log_weights() + log_qk).argmax(-1)
        lower, pi = self._bounds()
        xi = torch.zeros_like(y)
        for j, comp in enumerate(self.components):
            mask = k == j
            if mask.any():
                xi = xi.index_put((mask,), comp.inverse(y[mask])[0])
        u = lower[k] + pi[k] * _normal_cdf(xi[..., 0].double())
        xi0 = torch.special.ndtri(u.clamp(_EPS, 1 - _EPS)).to(y)
        xi = torch.cat([xi0[..., None], xi[..., 1:]], -1)
        return xi, log_q - standard_normal_log_prob(xi)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, components={len(self.components)}"


@register("mixture")
def _mixture(
    dim: int, components: int = 4, family: str = "realnvp", spread: float = 1.0, **options: Any
) -> Transform:
    """``components`` flows of ``family`` (built with ``options``) mixed with learnable weights
    (initially equal). Each component ends in a learnable shift initialised at N(0, spread² I)
    so that the components start apart (identical components would stay identical)."""
    if int(components) < 1:
        raise ValueError(f"mixture: components must be >= 1, got {components}")
    if family == "mixture":
        raise ValueError("mixture: family must be a non-mixture flow family")
    # the components' options, named against their family (build checks only its own)
    FLOWS.check_options(family, FLOWS.get(family), options, fixed=("dim",))
    parts: list[Transform] = []
    for _ in range(int(components)):
        shift = ElementwiseAffine(dim)
        with torch.no_grad():
            shift.loc.normal_(0.0, float(spread))
        parts.append(Compose([FLOWS.get(family)(dim, **options), shift]))
    return MixtureTransform(parts)


def split_mixture(q: Flow) -> tuple[MixtureTransform, Transform | None] | None:
    """The mixture that starts q's transform and the transforms after it (None without any:
    a plain mixture), or None when q is not a mixture flow. ``infer(flow="mixture")`` builds
    the mixture followed by its preconditioner's affine."""
    t = q.transform
    if isinstance(t, MixtureTransform):
        return t, None
    if isinstance(t, Compose) and isinstance(t.parts[0], MixtureTransform):
        rest = list(t.parts[1:])
        return t.parts[0], (Compose(rest) if len(rest) > 1 else rest[0]) if rest else None
    return None


@LOSSES.register("mixture-kl")
class MixtureKL:
    r"""Reverse KL for a mixture flow with the stratified, fully reparameterized ELBO:

    .. math::
        \mathcal L = \sum_k π_k \frac1m \sum_{i=1}^m [\log q(θ_{ki}) − β \log p̃(θ_{ki})],
        \quad θ_{ki} = h_k(ξ_{ki}),\ m = ⌈n/K⌉,

    an unbiased estimate of KL(q‖p_β) − log Z_β whose gradient is unbiased for the weights and
    the components alike (see :mod:`vi_flows.mixture`).
    """

    def __call__(
        self, q: Flow, log_prob: LogProb, num_samples: int, *, beta: float = 1.0
    ) -> LossOutput:
        found = split_mixture(q)
        if found is None:
            raise TypeError(
                "mixture-kl needs a mixture flow: build('mixture', dim, ...), or one followed by "
                "other transforms (infer(flow='mixture') preconditions it so)"
            )
        mix, after = found
        m = math.ceil(num_samples / len(mix.components))
        z = torch.stack([comp(q.base_sample(m))[0] for comp in mix.components])  # (K, m, d)
        log_q = mix.log_prob(z)
        if after is None:
            flat = z.reshape(-1, mix.dim)  # log p̃ is taken at this view: fit sees its graph
        else:  # θ = g(z) for a bijection g after the mixture (a preconditioner's affine)
            theta, ladj = after(z.reshape(-1, mix.dim))
            flat, log_q = theta, log_q - ladj.reshape(log_q.shape)
        log_p_flat = log_prob(flat)
        check_log_prob_output(log_p_flat, flat)
        log_p = log_p_flat.reshape(log_q.shape)
        pi = mix.log_weights().exp()
        loss = (pi * (log_q - beta * log_p).mean(-1)).sum()
        elbo = (pi * (log_p - log_q).mean(-1)).sum().detach()
        return LossOutput(loss, flat, log_p_flat, log_q.reshape(-1), elbo)

    def __repr__(self) -> str:
        return "MixtureKL()"
