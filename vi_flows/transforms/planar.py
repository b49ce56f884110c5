"""Planar and radial flows (Rezende & Mohamed 2015): exact log-det, no closed-form inverse."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vi_flows.transforms.base import Transform

__all__ = ["Planar", "Radial"]

#: Strict margin on the invertibility constraints: softplus underflows to 0 for very negative
#: inputs, which would put wᵀû (planar) or β (radial) exactly on the boundary, where the
#: Jacobian is singular at one point and the log-det is -inf.
MARGIN = 1e-6
#: c with −1 + ε + softplus(c) = 0: planar's m(0) = 0, so u = 0 is the identity.
IDENTITY_OFFSET = math.log(math.expm1(1.0 - MARGIN))


class Planar(Transform):
    """y = x + û tanh(wᵀx + b), log|det| = log|1 + tanh'(wᵀx + b) wᵀû|.

    The map is invertible iff wᵀû ≥ −1 (tanh' ∈ (0, 1]). :meth:`u_hat` enforces it by moving u along
    w: û = u + (m(wᵀu) − wᵀu) w / ‖w‖², m(a) = −1 + ε + softplus(a + c) (ε = :data:`MARGIN`), so
    that wᵀû = m(wᵀu) > −1.
    (Dividing by ‖w‖ instead of ‖w‖², a bug several public libraries shipped, breaks it.)

    The offset c = log(e^(1−ε) − 1) ≈ 0.541 makes m(0) = 0, so small u and w give a map near
    the identity. Rezende & Mohamed's m (c = 0, as in pyro) has m(0) = −0.31: at small w each
    layer then contracts along w by 0.69 and sixteen layers start a 1-d flow at sd 0.003. A state
    dict saved before c existed loads with c = 0 (the map it was fitted as).

    Args:
        dim: event size d.
        init_std: standard deviation of the initial u and w.

    >>> t = Planar(2)
    >>> with torch.no_grad():
    ...     _ = t.u.copy_(torch.tensor([-10.0, 0.0])); _ = t.w.copy_(torch.tensor([3.0, 0.0]))
    >>> bool(t.w @ t.u_hat() > -1)
    True
    >>> _ = torch.nn.init.zeros_(t.u)
    >>> t(torch.tensor([[0.5, -2.0]]))[0]  # u = 0: the identity
    tensor([[ 0.5000, -2.0000]], grad_fn=<AddBackward0>)
    """

    has_inverse = False

    def __init__(self, dim: int, init_std: float = 0.1) -> None:
        super().__init__(dim)
        self.u = nn.Parameter(init_std * torch.randn(dim))
        self.w = nn.Parameter(init_std * torch.randn(dim))
        self.b = nn.Parameter(torch.zeros(()))
        self.register_buffer("offset", torch.tensor(IDENTITY_OFFSET))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # a state dict from before the offset existed was fitted with m(a) = −1 + ε + softplus(a)
        state_dict.setdefault(prefix + "offset", torch.tensor(0.0))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def u_hat(self) -> Tensor:
        """The constrained û with wᵀû = −1 + ε + softplus(wᵀu + c) > −1 (invertibility)."""
        wu = self.w @ self.u
        # The clamp only guards w = 0, where the direction of the correction is undefined.
        norm_sq = (self.w @ self.w).clamp_min(torch.finfo(self.w.dtype).tiny)
        m = -1.0 + MARGIN + F.softplus(wu + self.offset)
        return self.u + (m - wu) * self.w / norm_sq

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        u = self.u_hat()
        pre = x @ self.w + self.b
        act = torch.tanh(pre)
        y = x + act[..., None] * u
        # 1 + tanh'(a) wᵀû > 0 because tanh' ∈ (0, 1] and wᵀû > -1; log1p keeps precision near 1.
        ladj = torch.log1p((1.0 - act.square()) * (self.w @ u))
        return y, ladj


class Radial(Transform):
    """y = x + β h(r)(x − z₀), h(r) = 1/(α + r), r = ‖x − z₀‖.

    log|det| = (d − 1) log(1 + βh) + log(1 + βh + βh′(r) r), h′ = −1/(α + r)². Invertible iff
    β ≥ −α; :meth:`alpha_beta` returns α = softplus(a) > 0 and β = −α + ε + softplus(b) > −α.

    Args:
        dim: event size d.
        init_std: standard deviation of the initial centre z₀.
    """

    has_inverse = False

    def __init__(self, dim: int, init_std: float = 0.1) -> None:
        super().__init__(dim)
        self.z0 = nn.Parameter(init_std * torch.randn(dim))
        self.raw_alpha = nn.Parameter(torch.zeros(()))
        self.raw_beta = nn.Parameter(torch.zeros(()))

    def alpha_beta(self) -> tuple[Tensor, Tensor]:
        """The constrained (α, β) with α > 0 and β > −α (the invertibility condition)."""
        alpha = F.softplus(self.raw_alpha)
        return alpha, -alpha + MARGIN + F.softplus(self.raw_beta)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        alpha, beta = self.alpha_beta()
        diff = x - self.z0
        r = torch.linalg.vector_norm(diff, dim=-1)
        h = 1.0 / (alpha + r)
        bh = beta * h
        y = x + bh[..., None] * diff
        # 1 + βh + βh'r = 1 + βα/(α + r)², positive whenever β > -α.
        ladj = (self.dim - 1) * torch.log1p(bh) + torch.log1p(beta * alpha * h.square())
        return y, ladj
