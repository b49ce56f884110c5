"""Toy target densities p̃ = Z·p with known answers: Rezende & Mohamed's U1–U4, banana, funnel,
ring, moons, Gaussians and mixtures.

>>> from vi_flows.targets import get
>>> t = get("funnel", dim=3)
>>> t.log_prob(torch.zeros(5, 3)).shape, t.log_z, t.has_sample
(torch.Size([5]), 0.0, True)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from vi_flows.targets.base import Bounds, Target, normal_log_prob, register

__all__ = [
    "Banana",
    "CorrelatedGaussian",
    "Funnel",
    "Gaussian",
    "GaussianMixture",
    "Moons",
    "RezendeEnergy",
    "RezendeU1",
    "grid_log_z",
]

_LOG_2PI = math.log(2.0 * math.pi)
_F64 = torch.float64


def _randn(n: int, d: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.randn(n, d, generator=gen, device=device, dtype=_F64)


# 2-D quadrature and rejection sampling (for the targets without closed forms)


def grid_log_z(log_prob: Callable[[Tensor], Tensor], box: Bounds, n: int = 1201) -> float:
    """log ∫_box exp(log_prob) by the midpoint rule on an ``n × n`` float64 grid; for smooth
    densities that vanish at the edges of the box it converges exponentially fast in ``n``.

    >>> round(grid_log_z(Gaussian().log_prob, ((-9.0, 9.0), (-9.0, 9.0)), 201), 6)
    0.0
    """
    return _grid_stats(log_prob, box, n)[0]


def _grid_stats(log_prob: Callable[[Tensor], Tensor], box: Bounds, n: int) -> tuple[float, float]:
    """(log ∫_box p̃, max of log p̃ over the grid) from the n × n midpoint grid of ``box``."""
    (a0, b0), (a1, b1) = box
    h0, h1 = (b0 - a0) / n, (b1 - a1) / n
    g0 = a0 + h0 * (torch.arange(n, dtype=_F64) + 0.5)
    g1 = a1 + h1 * (torch.arange(n, dtype=_F64) + 0.5)
    with torch.no_grad():
        lp = log_prob(torch.stack(torch.meshgrid(g0, g1, indexing="ij"), -1)).flatten()
    return float(torch.logsumexp(lp, 0)) + math.log(h0 * h1), float(lp.max())


class _Grid2D(Target):
    """A 2-D target with ``log_z`` by quadrature over ``_box`` (lazy, cached) and rejection
    sampling from the uniform law on ``_box``, bounded by e^0.05 × the grid maximum of p̃ (the
    true maximum exceeds it by far less). p's mass outside ``_box`` is below 1e-10 here."""

    _box: Bounds
    _CACHE: dict[tuple, tuple[float, float]] = {}  # shared: get() builds fresh instances

    def _stats(self) -> tuple[float, float]:
        key = (type(self).__name__, *sorted(vars(self).items()))
        if key not in self._CACHE:
            self._CACHE[key] = _grid_stats(self.log_prob, self._box, 601)
        return self._CACHE[key]

    @property
    def log_z(self) -> float:  # type: ignore[override]
        return self._stats()[0]

    def _sample(self, n: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
        log_z, log_max = self._stats()
        (a0, b0), (a1, b1) = self._box
        lo, width = torch.tensor([[a0, a1], [b0 - a0, b1 - a1]], dtype=_F64, device=device)
        log_bound = log_max + 0.05
        accept_rate = math.exp(log_z - log_bound) / float(width.prod())
        out, have = [], 0
        while have < n:
            m = max(1024, int(1.2 * (n - have) / accept_rate))
            x = lo + width * torch.rand(m, 2, generator=gen, device=device, dtype=_F64)
            u = torch.rand(m, generator=gen, device=device, dtype=_F64)
            keep = torch.log(u) < self.log_prob(x) - log_bound
            out.append(x[keep])
            have += int(keep.sum())
        return torch.cat(out)[:n]


def _check_2d(name: str, dim: int) -> None:
    if dim != 2:
        raise ValueError(f"target {name!r} is 2-D only, got dim={dim}")


# Rezende & Mohamed (2015), Table 1


class RezendeU1(_Grid2D):
    r"""p̃(z) = exp(−U1(z)) with (Rezende & Mohamed 2015, Table 1)

    .. math::

        U_1(z) = ½((‖z‖ − 2)/0.4)² − \log(e^{−½((z_1−2)/0.6)²} + e^{−½((z_1+2)/0.6)²}).

    A ring of radius 2 with two lobes at z1 = ±2. Proper; ``log_z`` ≈ 1.8775 by quadrature on
    [−6, 6]²; sampled by rejection from that box.
    """

    bounds = ((-4.0, 4.0), (-4.0, 4.0))
    _box = ((-6.0, 6.0), (-6.0, 6.0))

    def __init__(self, dim: int = 2) -> None:
        _check_2d("u1", dim)
        super().__init__("u1", 2)

    def _log_prob(self, x: Tensor) -> Tensor:
        z1 = x[..., 0]
        r = torch.linalg.vector_norm(x, dim=-1)  # its gradient at 0 is 0, unlike hypot's NaN
        lobes = torch.logaddexp(-0.5 * ((z1 - 2.0) / 0.6) ** 2, -0.5 * ((z1 + 2.0) / 0.6) ** 2)
        return -0.5 * ((r - 2.0) / 0.4) ** 2 + lobes


class RezendeEnergy(Target):
    r"""p̃(z) = exp(−U_k(z) − ½(z_1/s)²) for k = 2, 3, 4 (Rezende & Mohamed 2015, Table 1).

    With w1 = sin(2πz1/4), w2 = 3exp(−½((z1−1)/0.6)²), w3 = 3σ((z1−1)/0.3):

    - U2 = ½((z2 − w1)/0.4)²
    - U3 = −log(exp(−½((z2 − w1)/0.35)²) + exp(−½((z2 − w1 + w2)/0.35)²))
    - U4 = −log(exp(−½((z2 − w1)/0.4)²) + exp(−½((z2 − w1 + w3)/0.35)²))

    exp(−U_k) is constant along z1, hence improper on R². The **envelope** exp(−½(z1/s)²) with
    s = ``envelope_scale`` = 4 (an unnormalized N(0, 4²) factor in z1, ≈ flat on the [−4, 4]²
    plotting box, where it stays above e^{−1/2}) makes them proper. Because exp(−U_k) is, for
    each z1, an unnormalized Gaussian (mixture) in z2, everything is then in closed form:

    - Z2 = 0.4·√(2π)·s√(2π),  Z3 = 2·0.35·√(2π)·s√(2π),  Z4 = (0.4 + 0.35)·√(2π)·s√(2π);
    - exact sampling: z1 ~ N(0, s²), then z2 | z1 from the Gaussian (mixture) above, e.g. for U4
      N(w1, 0.4²) with probability 0.4/0.75 and N(w1 − w3, 0.35²) otherwise.

    >>> round(RezendeEnergy(2).log_z, 4), round(RezendeEnergy(3).log_z, 4)
    (2.3079, 2.8675)
    """

    bounds = ((-4.0, 4.0), (-4.0, 4.0))

    def __init__(self, k: int, dim: int = 2, envelope_scale: float = 4.0) -> None:
        if k not in (2, 3, 4):
            raise ValueError(f"k must be 2, 3 or 4, got {k}")
        _check_2d(f"u{k}", dim)
        # sds of the Gaussian components in z2; their weights are ∝ sd since each has peak 1
        self._sds = {2: (0.4,), 3: (0.35, 0.35), 4: (0.4, 0.35)}[k]
        log_z = math.log(sum(self._sds) * 2.0 * math.pi * envelope_scale)
        super().__init__(f"u{k}", 2, log_z=log_z)
        self.k, self.envelope_scale = k, float(envelope_scale)

    def _shifts(self, z1: Tensor) -> tuple[Tensor, ...]:
        """Centres of the z2 components given z1: w1, and w1 − w2 (U3) or w1 − w3 (U4)."""
        w1 = torch.sin(2.0 * math.pi * z1 / 4.0)
        if self.k == 2:
            return (w1,)
        if self.k == 3:
            return (w1, w1 - 3.0 * torch.exp(-0.5 * ((z1 - 1.0) / 0.6) ** 2))
        return (w1, w1 - 3.0 * torch.sigmoid((z1 - 1.0) / 0.3))

    def _log_prob(self, x: Tensor) -> Tensor:
        z1, z2 = x[..., 0], x[..., 1]
        shifts = torch.stack(self._shifts(z1), -1)
        sds = torch.tensor(self._sds, dtype=x.dtype, device=x.device)
        log_kernel = torch.logsumexp(-0.5 * ((z2[..., None] - shifts) / sds) ** 2, -1)
        return log_kernel - 0.5 * (z1 / self.envelope_scale) ** 2

    def _sample(self, n: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
        eps = _randn(n, 2, gen, device)
        z1 = self.envelope_scale * eps[:, 0]
        sds = torch.tensor(self._sds, dtype=_F64, device=device)
        comp = torch.multinomial(sds / sds.sum(), n, replacement=True, generator=gen)
        centre = torch.stack(self._shifts(z1), -1).gather(-1, comp[:, None])[:, 0]
        return torch.stack([z1, centre + sds[comp] * eps[:, 1]], -1)


# Other 2-D and d-dimensional targets


class Banana(Target):
    r"""Haario et al.'s (1999) twisted Gaussian: p = N(0, diag(a², 1, …, 1)) ∘ φ_b,
    φ_b(x) = (x1, x2 + b(x1² − a²), x3, …, xd).

    φ_b has unit Jacobian, so p is normalized (``log_z`` = 0); exact sampling: x1 ~ N(0, a²),
    x2 = ε − b(x1² − a²). Defaults a = 10, b = 0.03 are Haario's "moderately twisted" case.
    """

    def __init__(self, dim: int = 2, a: float = 10.0, b: float = 0.03) -> None:
        if dim < 2:
            raise ValueError(f"banana needs dim >= 2, got {dim}")
        std = torch.ones(dim, dtype=_F64)
        std[0], std[1] = a, math.sqrt(1.0 + 2.0 * b**2 * a**4)  # Var(x1²) = 2a⁴
        super().__init__("banana", dim, log_z=0.0, mean=torch.zeros(dim, dtype=_F64), std=std)
        self.a, self.b = float(a), float(b)
        if dim == 2:  # E[x2 | x1] = −b(x1² − a²) runs from b a² (x1 = 0) to −8 b a² (x1 = ±3a)
            lo, hi = sorted((-8.0 * b * a**2, b * a**2))
            self.bounds = ((-3.0 * a, 3.0 * a), (lo - 4.0, hi + 4.0))

    def _log_prob(self, x: Tensor) -> Tensor:
        x1 = x[..., 0]
        y2 = x[..., 1] + self.b * (x1 * x1 - self.a**2)
        out = normal_log_prob(x1, 0.0, self.a) + normal_log_prob(y2, 0.0, 1.0)
        if self.dim > 2:
            out = out + normal_log_prob(x[..., 2:], 0.0, 1.0).sum(-1)
        return out

    def _sample(self, n: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
        x = _randn(n, self.dim, gen, device)
        x[:, 0] *= self.a
        x[:, 1] -= self.b * (x[:, 0] ** 2 - self.a**2)
        return x


class Funnel(Target):
    r"""Neal's (2003) funnel in d ≥ 2 dimensions: v = x1 ~ N(0, s²), x_i | v ~ N(0, e^v), i ≥ 2.

    Normalized (``log_z`` = 0), sampled exactly; E x = 0, sd(v) = s, sd(x_i) = exp(s²/4).
    """

    def __init__(self, dim: int = 2, scale: float = 3.0) -> None:
        if dim < 2:
            raise ValueError(f"funnel needs dim >= 2, got {dim}")
        std = torch.full((dim,), math.exp(scale**2 / 4.0), dtype=_F64)
        std[0] = scale
        super().__init__("funnel", dim, log_z=0.0, mean=torch.zeros(dim, dtype=_F64), std=std)
        self.scale = float(scale)
        if dim == 2:
            self.bounds = ((-3.0 * self.scale, 3.0 * self.scale), (-20.0, 20.0))

    def _log_prob(self, x: Tensor) -> Tensor:
        v, rest = x[..., 0], x[..., 1:]
        # log N(x_i; 0, e^v) written with e^{−v} (not a scale e^{v/2}) to stay finite for large |v|.
        # Deep in the neck (v < −88 in float32) e^{−v} overflows; capping the exponent keeps
        # Σx² e^{−v} = 0 at x = 0 (not 0·inf = NaN) and the gradients finite (p̃ ≈ 0 elsewhere).
        inv_var = torch.exp((-v).clamp(max=math.log(torch.finfo(x.dtype).max) - 1.0))
        lp_rest = -0.5 * rest.pow(2).sum(-1) * inv_var - 0.5 * (self.dim - 1) * (v + _LOG_2PI)
        return normal_log_prob(v, 0.0, self.scale) + lp_rest

    def _sample(self, n: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
        x = _randn(n, self.dim, gen, device)
        x[:, 0] *= self.scale
        x[:, 1:] *= torch.exp(0.5 * x[:, :1])
        return x


class GaussianMixture(Target):
    r"""p(x) = (1/k) Σ_j N(x; m_j, s² I): an equal-weight isotropic Gaussian mixture.

    Normalized (``log_z`` = 0), sampled exactly; ``modes`` holds the means m_j (k, d).
    """

    def __init__(self, name: str, means: Tensor, sd: float) -> None:
        means = means.to(_F64)
        std = torch.sqrt(means.var(0, correction=0) + sd**2)
        super().__init__(name, means.shape[1], log_z=0.0, modes=means, mean=means.mean(0), std=std)
        self.sd = float(sd)

    def _log_prob(self, x: Tensor) -> Tensor:
        m = self.modes.to(x)
        comp = normal_log_prob(x[..., None, :], m, self.sd).sum(-1)  # (..., k)
        return torch.logsumexp(comp, -1) - math.log(m.shape[0])

    def _sample(self, n: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
        k = self.modes.shape[0]
        idx = torch.multinomial(torch.ones(k, device=device), n, replacement=True, generator=gen)
        return self.modes.to(device)[idx] + self.sd * _randn(n, self.dim, gen, device)


def _ring(dim: int = 2, n_modes: int = 8, radius: float = 4.0, sd: float = 0.5) -> GaussianMixture:
    """``ring``: ``n_modes`` equal-weight N(m_j, sd² I) with m_j = radius·(cos 2πj/k, sin 2πj/k)."""
    _check_2d("ring", dim)
    ang = 2.0 * math.pi * torch.arange(n_modes, dtype=_F64) / n_modes
    t = GaussianMixture("ring", radius * torch.stack([ang.cos(), ang.sin()], -1), sd)
    lim = math.ceil(radius + 4.0 * sd)
    t.bounds = ((-lim, lim), (-lim, lim))
    return t


def _mixture(
    dim: int = 2, k: int = 4, sd: float = 1.0, separation: float = 8.0, seed: int = 0
) -> GaussianMixture:
    """``mixture``: k equal-weight N(m_j, sd² I) in d dimensions, well separated.

    The means are drawn uniformly in a cube [−L, L]^d (L = separation·sd·max(1, k^{1/d})) by a
    seeded ``numpy`` generator, rejecting any within ``separation``·sd of an earlier one, so they
    are deterministic given (dim, k, sd, separation, seed) and pairwise ≥ separation·sd apart.
    """
    rng = np.random.default_rng(seed)
    min_dist = separation * sd
    half = min_dist * max(1.0, k ** (1.0 / dim))
    means: list[np.ndarray] = []
    for tries in range(1, 10**6):
        c = rng.uniform(-half, half, size=dim)
        if all(np.linalg.norm(c - m) >= min_dist for m in means):
            means.append(c)
        if len(means) == k:
            break
        if tries % 1000 == 0:  # the cube is too crowded: widen it
            half *= 1.5
    t = GaussianMixture("mixture", torch.from_numpy(np.stack(means)), sd)
    if dim == 2:
        lo, hi = t.modes.min(0).values - 4.0 * sd, t.modes.max(0).values + 4.0 * sd
        t.bounds = ((float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1])))
    return t


class Moons(_Grid2D):
    r"""A smooth two-moons density (the shape of scikit-learn's ``make_moons``, scaled by 2 and
    centred):

    .. math::

        p̃(z) = Σ_{j=1,2} \exp(−½((‖z − c_j‖ − 2)/s)²) · σ(±(z_2 − c_{j,2})/τ),

    two half-rings of radius 2 with c1 = (−1, −0.5) (upper half, sign +) and c2 = (1, 0.5)
    (lower half, sign −), ring width s = ``noise`` = 0.2 and gate softness τ = 0.2. ``log_z``
    by quadrature on [−5, 5]², sampled by rejection from that box.
    """

    bounds = ((-4.0, 4.0), (-3.0, 3.0))
    _box = ((-5.0, 5.0), (-5.0, 5.0))

    def __init__(self, dim: int = 2, noise: float = 0.2) -> None:
        _check_2d("moons", dim)
        super().__init__("moons", 2)
        self.noise = float(noise)

    def _log_prob(self, x: Tensor) -> Tensor:
        out = []
        for (c1, c2), sign in (((-1.0, -0.5), 1.0), ((1.0, 0.5), -1.0)):
            c = torch.tensor([c1, c2], dtype=x.dtype, device=x.device)
            r = torch.linalg.vector_norm(x - c, dim=-1)
            gate = torch.nn.functional.logsigmoid(sign * (x[..., 1] - c2) / 0.2)
            out.append(-0.5 * ((r - 2.0) / self.noise) ** 2 + gate)
        return torch.logaddexp(out[0], out[1])


class Gaussian(Target):
    """N(loc, diag(scale²)) in d dimensions (``loc``/``scale``: floats or length-d sequences)."""

    def __init__(
        self, dim: int = 2, loc: float | Sequence[float] = 0.0, scale: float | Sequence[float] = 1.0
    ) -> None:
        mean = torch.as_tensor(loc, dtype=_F64).expand(dim).clone()
        std = torch.as_tensor(scale, dtype=_F64).expand(dim).clone()
        if (std <= 0).any():
            raise ValueError("scale must be positive")
        super().__init__("gaussian", dim, log_z=0.0, mean=mean, std=std)
        if dim == 2:
            lo, hi = (mean - 4.0 * std).tolist(), (mean + 4.0 * std).tolist()
            self.bounds = ((lo[0], hi[0]), (lo[1], hi[1]))

    def _log_prob(self, x: Tensor) -> Tensor:
        return normal_log_prob(x, self.mean.to(x), self.std.to(x)).sum(-1)

    def _sample(self, n: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
        return self.mean.to(device) + self.std.to(device) * _randn(n, self.dim, gen, device)


class CorrelatedGaussian(Target):
    r"""N(0, Σ) with the AR(1) covariance Σ_ij = ρ^{|i−j|} (unit variances), ρ = 0.9 by default.

    Its condition number grows to (1 + ρ)²/(1 − ρ)² (= 361 for ρ = 0.9) with d, and
    log det Σ = (d − 1) log(1 − ρ²). The density is evaluated in O(d) by the chain rule
    x1 ~ N(0, 1), x_{i+1} | x_i ~ N(ρ x_i, 1 − ρ²). Normalized; exposes ``mean`` and ``cov``.
    """

    def __init__(self, dim: int = 2, rho: float = 0.9) -> None:
        if not -1.0 < rho < 1.0:
            raise ValueError(f"rho must lie in (-1, 1), got {rho}")
        zeros, ones = torch.zeros(dim, dtype=_F64), torch.ones(dim, dtype=_F64)
        super().__init__("correlated-gaussian", dim, log_z=0.0, mean=zeros, std=ones)
        self.rho = float(rho)
        idx = torch.arange(dim, dtype=_F64)
        self.cov = self.rho ** (idx[:, None] - idx[None, :]).abs()
        if dim == 2:
            self.bounds = ((-4.0, 4.0), (-4.0, 4.0))

    def _log_prob(self, x: Tensor) -> Tensor:
        cond_sd = math.sqrt(1.0 - self.rho**2)
        lp = normal_log_prob(x[..., 0], 0.0, 1.0)
        return lp + normal_log_prob(x[..., 1:], self.rho * x[..., :-1], cond_sd).sum(-1)

    def _sample(self, n: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
        chol = torch.linalg.cholesky(self.cov).to(device)
        return _randn(n, self.dim, gen, device) @ chol.T


register("u1", RezendeU1)
for _k in (2, 3, 4):
    register(f"u{_k}", functools.partial(RezendeEnergy, _k))
register("banana", Banana)
register("funnel", Funnel)
register("ring", _ring)
register("moons", Moons)
register("gaussian", Gaussian)
register("correlated-gaussian", CorrelatedGaussian)
register("mixture", _mixture)
