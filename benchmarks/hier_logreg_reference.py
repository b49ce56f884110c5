"""Reference draws for the ``hier-logreg`` target: a long multi-chain HMC run, checked by split-R̂.

    flock /tmp/bench.lock python -m benchmarks.hier_logreg_reference   # ~1 min on one core

Method: 32 chains of HMC in parallel (one batched log-density call per leapfrog step), in
coordinates whitened by a dense metric — first the Laplace covariance, then the sample covariance
of the first warmup stage (Stan's dense-metric adaptation, in two stages). The step size is
adapted toward acceptance 0.8 during warmup only, then fixed; the leapfrog count is drawn
uniformly from 5–30 per iteration (no resonances). After warmup, 2,500 iterations per chain are
kept and thinned by 20 to 4,000 draws, written with split-R̂ and bulk ESS of every coordinate to
``vi_flows/targets/data/hier_logreg_reference.pt``; the run fails if any split-R̂ exceeds 1.01.
"""

from __future__ import annotations

import math
import time

import torch

from vi_flows import runfiles
from vi_flows.precondition import find_mode
from vi_flows.targets.hier_logreg import REFERENCE, HierLogReg

CHAINS, WARM1, WARM2, KEEP, THIN = 32, 600, 600, 2500, 20


def _grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_(True)
    lp = fn(x)
    (g,) = torch.autograd.grad(lp.sum(), x)
    return lp.detach(), g


def hmc(fn, x: torch.Tensor, iters: int, eps: float, adapt: bool, gen: torch.Generator):
    """``iters`` HMC iterations for every chain; returns the draws, final state and step size."""
    lp, g = _grad(fn, x)
    draws, log_eps, accepted = [], math.log(eps), []
    for _ in range(iters):
        step = math.exp(log_eps) * (0.8 + 0.4 * float(torch.rand((), generator=gen)))
        n_leap = int(torch.randint(5, 31, (), generator=gen))
        p0 = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        xn, pn, gn = x, p0 + 0.5 * step * g, g
        for i in range(n_leap):
            xn = xn + step * pn
            lpn, gn = _grad(fn, xn)
            if i < n_leap - 1:
                pn = pn + step * gn
        pn = pn + 0.5 * step * gn
        log_acc = (lpn - 0.5 * pn.square().sum(-1)) - (lp - 0.5 * p0.square().sum(-1))
        log_acc = torch.nan_to_num(log_acc, nan=-math.inf)
        accept = torch.log(torch.rand(x.shape[0], generator=gen, dtype=x.dtype)) < log_acc
        x = torch.where(accept[:, None], xn, x)
        lp = torch.where(accept, lpn, lp)
        g = torch.where(accept[:, None], gn, g)
        rate = float(torch.exp(log_acc.clamp(max=0)).mean())
        accepted.append(rate)
        if adapt:
            log_eps += 0.05 * (rate - 0.8)
        draws.append(x.clone())
    return torch.stack(draws, 1), x, math.exp(log_eps), sum(accepted) / len(accepted)


def split_rhat(chains: torch.Tensor) -> torch.Tensor:
    """Split-R̂ per coordinate of (chains, draws, d)."""
    half = chains.shape[1] // 2
    c = torch.cat([chains[:, :half], chains[:, half : 2 * half]], 0)
    n = c.shape[1]
    w = c.var(1).mean(0)
    b = n * c.mean(1).var(0)
    return ((n - 1) / n * w + b / n).div(w).sqrt()


def ess(chains: torch.Tensor) -> torch.Tensor:
    """Bulk ESS per coordinate (Geyer initial positive sequence on the mean autocorrelation)."""
    m, n, d = chains.shape
    x = chains - chains.mean(1, keepdim=True)
    f = torch.fft.rfft(x, n=2 * n, dim=1)
    acov = torch.fft.irfft(f * f.conj(), dim=1)[:, :n] / n
    rho = acov.mean(0) / acov.mean(0)[0]
    out = torch.empty(d, dtype=chains.dtype)
    for j in range(d):
        total, t = 0.0, 1
        while t + 1 < n:
            pair = float(rho[t, j] + rho[t + 1, j])
            if pair < 0:
                break
            total += pair
            t += 2
        out[j] = m * n / (1 + 2 * total)
    return out


def main() -> None:
    torch.set_num_threads(1)
    start = time.perf_counter()
    target = HierLogReg()
    gen = torch.Generator().manual_seed(2024)
    mode = find_mode(target, target.dim)
    m, tril = mode.loc, torch.linalg.cholesky(mode.cov)

    def whitened(m: torch.Tensor, tril: torch.Tensor):
        return lambda y: target.log_prob(m + y @ tril.T)

    y = torch.randn(CHAINS, target.dim, generator=gen, dtype=torch.float64)
    draws, y, eps, _ = hmc(whitened(m, tril), y, WARM1, 0.3, True, gen)
    x_warm = m + draws[:, WARM1 // 2 :].reshape(-1, target.dim) @ tril.T
    m2, cov2 = x_warm.mean(0), torch.cov(x_warm.T)
    tril2 = torch.linalg.cholesky(cov2)
    y = torch.linalg.solve_triangular(tril2, (m + y @ tril.T - m2).T, upper=False).T
    _, y, eps, _ = hmc(whitened(m2, tril2), y, WARM2, eps, True, gen)
    draws, _, _, acc = hmc(whitened(m2, tril2), y, KEEP, eps, False, gen)
    chains = m2 + draws @ tril2.T  # (chains, KEEP, d)
    rhat, n_eff = split_rhat(chains), ess(chains)
    kept = chains[:, ::THIN].reshape(-1, target.dim)
    print(
        f"step {eps:.3f}, acceptance {acc:.3f}, max split-R̂ {float(rhat.max()):.4f}, "
        f"min ESS {float(n_eff.min()):.0f} of {CHAINS * KEEP} iterations, "
        f"{kept.shape[0]} draws kept, {time.perf_counter() - start:.0f} s"
    )
    if float(rhat.max()) > 1.01:
        raise SystemExit("split-R̂ above 1.01: not converged, nothing written")
    blob = {
        "draws": kept.float(),
        "split_rhat": rhat.float(),
        "ess": n_eff.float(),
        "info": f"HMC, {CHAINS} chains x {KEEP} kept iterations, thinned by {THIN}, seed 2024",
    }
    runfiles.save(blob, REFERENCE)  # temp file, fsync, os.replace
    print(f"wrote {REFERENCE}")


if __name__ == "__main__":
    main()
