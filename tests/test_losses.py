"""The loss seam: fit(loss=...) reproduces the inlined KL, and IW's DReG gradient."""

from __future__ import annotations

import math

import pytest
import torch

from vi_flows import flows
from vi_flows.fit import fit
from vi_flows.losses import IW, LOSSES, get_loss
from vi_flows.objectives import kl_loss


def std_normal(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * x.square().sum(-1)


def shifted(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - torch.tensor([1.0, -0.5])) / 0.7).square().sum(-1)


def test_fit_with_loss_kl_is_the_plain_kl_loop_bit_for_bit() -> None:
    torch.manual_seed(0)
    a = flows.build("realnvp", 2, layers=2, hidden=(8,))
    b = flows.build("realnvp", 2, layers=2, hidden=(8,))
    b.load_state_dict(a.state_dict())
    history = fit(a, shifted, 25, loss="kl", num_samples=32, seed=5, progress=False)
    # The loop fit had before losses existed: Adam on kl_loss (Eq. 2), one step per draw.
    torch.manual_seed(5)
    opt = torch.optim.Adam(b.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        opt.zero_grad(set_to_none=True)
        loss = kl_loss(b, shifted, 32)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert history.loss == losses
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_iw_is_registered_and_its_bound_sits_between_elbo_and_log_z() -> None:
    assert {"kl", "stl", "iw"} <= set(LOSSES.names())
    q = flows.build("gaussian", 2, init_scale=1.5)
    torch.manual_seed(0)
    elbo = float(get_loss("kl")(q, std_normal, 20_000).elbo)
    iw = float(IW(k=32)(q, std_normal, 20_000).elbo)
    log_z = float(torch.log(torch.tensor(2 * torch.pi)))
    assert elbo < iw < log_z + 0.01
    # the bound from the draws themselves, with q's density written out: groups of k
    # consecutive draws, log (1/k) Σ_j p̃/q
    out = IW(k=32)(q, std_normal, 2048)
    theta = out.theta.detach().double()
    log_q = torch.distributions.Normal(0.0, 1.5).log_prob(theta).sum(-1)
    log_w = (-0.5 * theta.square().sum(-1) - log_q).reshape(-1, 32)
    want = (torch.logsumexp(log_w, -1) - math.log(32)).mean()
    assert float(out.elbo) == pytest.approx(float(want), abs=1e-4)


def _grads(loss: IW, reps: int) -> torch.Tensor:
    q = flows.build("gaussian", 2, init_scale=1.2)
    with torch.no_grad():
        q.transform.loc.fill_(0.3)
    rows = []
    for _ in range(reps):
        q.zero_grad()
        loss(q, std_normal, loss.k).loss.backward()
        rows.append(torch.cat([p.grad.flatten() for p in q.parameters()]))
    return torch.stack(rows)


def test_dreg_gradient_has_lower_variance_than_plain_iw() -> None:
    torch.manual_seed(0)
    dreg, plain = _grads(IW(k=16, dreg=True), 400), _grads(IW(k=16, dreg=False), 400)
    # Same expectation (both estimate ∇ of the IW bound) ...
    se = (plain.var(0) / 400).sqrt() + (dreg.var(0) / 400).sqrt()
    assert ((dreg.mean(0) - plain.mean(0)).abs() < 4 * se).all()
    # ... with a measured variance ratio well below one (under 0.01 here).
    ratio = float(dreg.var(0).sum() / plain.var(0).sum())
    assert ratio < 0.5, ratio


def test_iw_fits_a_gaussian_and_validates_k() -> None:
    q = flows.build("gaussian", 2)
    fit(q, shifted, 600, loss="iw", lr=3e-2, seed=0, progress=False)
    mean, std = q.mean_and_std(20_000)
    assert torch.allclose(mean, torch.tensor([1.0, -0.5]), atol=0.05)
    assert torch.allclose(std, torch.full((2,), 0.7), atol=0.05)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        IW(k=0)
