"""Sampler check of the posteriordb densities: batched multi-chain HMC on each torch log density,
compared with the posteriordb reference draws (long Stan NUTS runs). Not part of CI.

A density that is wrong anywhere that matters (a prior, a Jacobian, a likelihood term, a
transform) moves the posterior, so HMC on it disagrees with the reference draws. Pass: for every
scalar component of every declared parameter, |mean − mean_ref| / sd_ref < 0.05 and
sd / sd_ref ∈ [0.95, 1.05].

The sampler uses the density alone, never the reference draws:

1. **Start.** L-BFGS from ``--starts`` points drawn uniformly in [−2, 2]^d (Stan's default
   initialization); the best optimum x̂ and the Laplace covariance (−∇² log p(x̂))⁻¹ give the
   chains' start (x̂ + Laplace draws, redrawn where log p is implausibly far below log p(x̂)
   for a Gaussian) and the first metric.
2. **Warmup** (``--warmup`` iterations, all chains together): HMC in whitened coordinates
   x = m + L z, step size ε by dual averaging (Hoffman & Gelman 2014) on the chains' mean
   acceptance probability (target 0.8), and the dense metric (m, L L^T) re-estimated from the
   pooled chain positions at the end of two windows (Stan's windowed adaptation, with many
   chains instead of one long one; shrunk towards its diagonal relative to the variances).
3. **Sampling** (``--draws`` iterations): ε fixed (jittered ±10 %), trajectory length drawn
   uniformly in [1, 2] (in posterior-sd units; π/2 decorrelates a Gaussian), i.e.
   L = ceil(T/ε) leapfrog steps, all chains in one batch; non-finite energies are rejected.

ESS per component is estimated from the spread of the chain means (ESS = σ² / var(chain mean) ×
chains; many short chains make this precise), R̂ is the classic between/within-chain ratio.

Run (one core, under the shared lock)::

    flock /tmp/bench.lock python benchmarks/posteriordb_check.py

It writes ``benchmarks/results/posteriordb/check.md`` and ``check.csv`` and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from vi_flows import runfiles
from vi_flows.targets import posteriordb
from vi_flows.targets.posteriordb.base import flatten_draws

OUT = Path(__file__).resolve().parent / "results" / "posteriordb"
MEAN_TOL, SD_TOL = 0.05, 0.05


@dataclass(frozen=True)
class Settings:
    """Sampler settings (the same for every posterior)."""

    chains: int = 256
    """Chains, run as one batch."""
    warmup: int = 300
    """Warmup iterations (step size and metric adaptation)."""
    draws: int = 100
    """Sampling iterations per chain (kept draws: chains × draws)."""
    starts: int = 4
    """L-BFGS starts for the initial point and metric."""
    max_leapfrog: int = 100
    """Cap on leapfrog steps per iteration."""
    seed: int = 0
    """Random seed."""


def _value_and_grad(target: posteriordb.PosteriorTarget, x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.detach().requires_grad_(True)
    lp = target.log_prob(x)
    (grad,) = torch.autograd.grad(lp.sum(), x)
    return lp.detach(), grad


def find_mode(
    target: posteriordb.PosteriorTarget, starts: int, gen: torch.Generator
) -> tuple[Tensor, Tensor, list[float]]:
    """The best L-BFGS optimum from ``starts`` uniform[−2, 2] starts, its Laplace covariance
    and the optima's log densities (to report how many distinct optima there are)."""
    best, optima = None, []
    for _ in range(starts):
        x0 = 4 * torch.rand(target.dim, generator=gen, dtype=torch.float64) - 2
        x = x0.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([x], max_iter=500, line_search_fn="strong_wolfe")

        def closure(x: Tensor = x, opt: torch.optim.LBFGS = opt) -> Tensor:
            opt.zero_grad()
            loss = -target.log_prob(x)
            loss.backward()
            return loss

        try:
            opt.step(closure)
        except RuntimeError:  # a start that wanders into a numerically impossible region
            continue
        with torch.no_grad():
            lp = float(target.log_prob(x))
        if math.isfinite(lp):
            optima.append(lp)
            if best is None or lp > best[1]:
                best = (x.detach().clone(), lp)
    if best is None:
        raise RuntimeError(f"{target.name}: no L-BFGS start reached a finite log density")
    x_hat = best[0]
    neg_hess = -torch.autograd.functional.hessian(target.log_prob, x_hat)
    evals, evecs = torch.linalg.eigh(0.5 * (neg_hess + neg_hess.T))
    evals = evals.clamp_min(1e-8 * evals.abs().max().clamp_min(1e-300))
    cov = (evecs / evals) @ evecs.T
    return x_hat, cov, sorted(optima, reverse=True)


def _whitening(cov: Tensor) -> Tensor:
    """The lower Cholesky factor L of cov (symmetrized, eigenvalues floored to be positive
    definite)."""
    evals, evecs = torch.linalg.eigh(0.5 * (cov + cov.T))
    evals = evals.clamp_min(1e-10 * evals.max())
    return torch.linalg.cholesky((evecs * evals) @ evecs.T)


class _DualAveraging:
    """Nesterov dual averaging of log ε (Hoffman & Gelman 2014, Algorithm 5)."""

    def __init__(self, eps: float, target: float = 0.8) -> None:
        self.mu, self.target = math.log(10 * eps), target
        self.h_bar, self.log_eps_bar, self.t = 0.0, math.log(eps), 0
        self.log_eps = math.log(eps)

    def update(self, accept: float) -> float:
        self.t += 1
        w = 1.0 / (self.t + 10)
        self.h_bar = (1 - w) * self.h_bar + w * (self.target - accept)
        self.log_eps = self.mu - math.sqrt(self.t) / 0.05 * self.h_bar
        eta = self.t**-0.75
        self.log_eps_bar = eta * self.log_eps + (1 - eta) * self.log_eps_bar
        return math.exp(self.log_eps)

    @property
    def final(self) -> float:
        return math.exp(self.log_eps_bar)


def hmc(
    target: posteriordb.PosteriorTarget, s: Settings, gen: torch.Generator
) -> tuple[Tensor, dict[str, float]]:
    """Batched HMC (see the module docstring); returns draws (draws, chains, d) and info."""
    d, c = target.dim, s.chains
    x_hat, cov, optima = find_mode(target, s.starts, gen)
    loc, chol = x_hat, _whitening(cov)
    # starts: Laplace draws, redrawn where log p falls below the mode's by more than a Gaussian's
    # χ²_d/2 would (mean + 3 sd): a start deep in a tail (e.g. eight schools' log τ = 6, log p
    # 900 below the mode) has gradients no common step size can follow, and stays stuck
    lp_hat = float(target.log_prob(x_hat))
    floor = lp_hat - (d + 3 * math.sqrt(2 * d)) / 2
    x = x_hat.expand(c, d).clone()
    todo = torch.ones(c, dtype=torch.bool)
    for _ in range(50):
        x[todo] = (
            x_hat + torch.randn(int(todo.sum()), d, generator=gen, dtype=torch.float64) @ chol.T
        )
        with torch.no_grad():
            todo = ~(target.log_prob(x) >= floor)
        if not todo.any():
            break
    x[todo] = x_hat
    lp, grad = _value_and_grad(target, x)
    n_grad = 0
    # adaptation windows (iterations): step size only, metric, metric, step size only
    w1 = max(1, s.warmup // 6)
    ends = {w1 + (s.warmup - 2 * w1) // 3: "metric", s.warmup - w1: "metric"}
    window: list[Tensor] = []
    eps = 0.5 / d**0.25
    adapt = _DualAveraging(eps)
    accepts: list[float] = []
    kept: list[Tensor] = []
    for it in range(s.warmup + s.draws):
        warm = it < s.warmup
        # whitened coordinates z = L⁻¹ (x − loc): ∇_z log p = L^T ∇_x log p
        z = torch.linalg.solve_triangular(chol, (x - loc).T, upper=False).T
        gz = grad @ chol
        p0 = torch.randn(c, d, generator=gen, dtype=torch.float64)
        h0 = -lp + 0.5 * (p0 * p0).sum(-1)
        step = eps * (0.9 + 0.2 * float(torch.rand((), generator=gen, dtype=torch.float64)))
        length = 1.0 + float(torch.rand((), generator=gen, dtype=torch.float64))
        n_steps = min(s.max_leapfrog, max(1, math.ceil(length / step)))
        zn, pn = z, p0 + 0.5 * step * gz
        for k in range(n_steps):
            zn = zn + step * pn
            lpn, gxn = _value_and_grad(target, loc + zn @ chol.T)
            gn = gxn @ chol
            pn = pn + (step if k < n_steps - 1 else 0.5 * step) * gn
        n_grad += n_steps
        h1 = -lpn + 0.5 * (pn * pn).sum(-1)
        log_a = torch.nan_to_num(h0 - h1, nan=-math.inf).clamp_max(0.0)
        accept = torch.log(torch.rand(c, generator=gen, dtype=torch.float64)) < log_a
        x = torch.where(accept[:, None], loc + zn @ chol.T, x)
        lp = torch.where(accept, lpn, lp)
        grad = torch.where(accept[:, None], gxn, grad)
        mean_a = float(log_a.exp().mean())
        if warm:
            eps = adapt.update(mean_a)
            window.append(x.clone())
            if it + 1 in ends:  # new metric from the second half of this window, all chains
                pooled = torch.cat(window[len(window) // 2 :])
                n = pooled.shape[0]
                loc = pooled.mean(0)
                sample_cov = torch.cov(pooled.T).reshape(d, d)
                # shrink towards the diagonal by Stan's weights, relative to each variance, so
                # that posteriors with sds of 1e-4 (or 1e4) are not regularized by an absolute 1e-3
                cov = (n / (n + 5)) * sample_cov + (5 / (n + 5)) * 1e-3 * sample_cov.diag().diag()
                chol, window = _whitening(cov), []
                lp, grad = _value_and_grad(target, x)
                eps = eps * 2  # the new metric allows larger steps; dual averaging restarts
                adapt = _DualAveraging(eps)
            if it + 1 == s.warmup:
                eps = adapt.final
        else:
            accepts.append(mean_a)
            kept.append(x.clone())
    info = {
        "step_size": eps,
        "accept": sum(accepts) / len(accepts),
        "grad_evals": n_grad,
        "optima_lp_gap": optima[0] - optima[-1],
        "optima": len(optima),
    }
    return torch.stack(kept), info


def check(name: str, s: Settings) -> dict[str, object]:
    """Run the sampler on ``name`` and compare with its reference draws."""
    target = posteriordb.load(name)
    gen = torch.Generator().manual_seed(s.seed)
    start = time.perf_counter()
    draws, info = hmc(target, s, gen)
    seconds = time.perf_counter() - start
    n_draws, n_chains, d = draws.shape
    with torch.no_grad():
        ours_named = target.constrain(draws.reshape(-1, d))
    ref_named = target.reference_draws()
    labels, ref = flatten_draws(ref_named)
    _, ours = flatten_draws({name: ours_named[name] for name in ref_named})
    z = (ours.mean(0) - ref.mean(0)) / ref.std(0)
    ratio = ours.std(0) / ref.std(0)
    per_chain = ours.reshape(n_draws, n_chains, -1)
    chain_means = per_chain.mean(0)
    ess = n_chains * ours.var(0) / chain_means.var(0)
    sq = (per_chain - ours.mean(0)) ** 2
    ess_sd = n_chains * sq.reshape(-1, sq.shape[-1]).var(0) / sq.mean(0).var(0)
    within = per_chain.var(0).mean(0)
    rhat = torch.sqrt(((n_draws - 1) / n_draws * within + chain_means.var(0)) / within)
    worst = int(z.abs().argmax())
    ok = bool(z.abs().max() < MEAN_TOL) and bool(((ratio - 1).abs() <= SD_TOL).all())
    return {
        "posterior": name,
        "dim": d,
        "worst_mean_err": float(z.abs().max()),
        "worst_param": labels[worst],
        "sd_ratio_min": float(ratio.min()),
        "sd_ratio_max": float(ratio.max()),
        "ess_min": float(ess.min()),
        "ess_sd_min": float(ess_sd.min()),
        "rhat_max": float(rhat.max()),
        "accept": info["accept"],
        "step_size": info["step_size"],
        "grad_evals": info["grad_evals"],
        "optima": info["optima"],
        "optima_lp_gap": info["optima_lp_gap"],
        "seconds": seconds,
        "pass": ok,
    }


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    runfiles.write_text(path, text)  # temp file, fsync, os.replace


COLUMNS = [
    ("posterior", "{}"),
    ("dim", "{}"),
    ("worst_mean_err", "{:.3f}"),
    ("worst_param", "{}"),
    ("sd_ratio_min", "{:.3f}"),
    ("sd_ratio_max", "{:.3f}"),
    ("ess_min", "{:.0f}"),
    ("ess_sd_min", "{:.0f}"),
    ("rhat_max", "{:.3f}"),
    ("accept", "{:.2f}"),
    ("grad_evals", "{}"),
    ("seconds", "{:.0f}"),
    ("pass", "{}"),
]


def markdown(rows: list[dict[str, object]], s: Settings) -> str:
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    lines = [head, "|" + " --- |" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(f.format(r[c]) for c, f in COLUMNS) + " |")
    passed = sum(bool(r["pass"]) for r in rows)
    return (
        f"# posteriordb sampler check\n\nBatched HMC on each torch density vs the reference draws "
        f"({s}); pass: worst |mean − mean_ref|/sd_ref < {MEAN_TOL} and every sd ratio in "
        f"[{1 - SD_TOL}, {1 + SD_TOL}]. One CPU thread. **{passed} of {len(rows)} pass.**\n\n"
        "Columns: errors over every scalar component of the reference draws' parameters "
        "(constrained); ess_min / ess_sd_min: the smallest ESS of the means / of the squared "
        "deviations (from the spread of the chain means); rhat_max: between/within-chain R̂; "
        "accept: mean acceptance probability while sampling; grad_evals: gradient evaluations "
        "of the whole batch of chains; seconds: wall time of the sampler (L-BFGS start "
        "included, data loading not).\n\n" + "\n".join(lines) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="posterior names (default: all)")
    parser.add_argument("--chains", type=int, default=Settings.chains)
    parser.add_argument("--warmup", type=int, default=Settings.warmup)
    parser.add_argument("--draws", type=int, default=Settings.draws)
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    s = Settings(chains=args.chains, warmup=args.warmup, draws=args.draws, seed=args.seed)
    names = args.only or posteriordb.available()
    if not names:
        raise SystemExit(f"error: no posteriors found in {posteriordb.root()}")
    csv_path = args.out / "check.csv"
    previous = {}
    if csv_path.exists():  # a partial rerun (--only) keeps the other rows
        with csv_path.open() as fh:
            previous = {r["posterior"]: r for r in csv.DictReader(fh)}
    rows = []
    for name in names:
        row = check(name, s)
        print(" | ".join(f.format(row[c]) for c, f in COLUMNS), flush=True)
        rows.append(row)
    merged = {**previous, **{r["posterior"]: r for r in rows}}
    all_rows = [_typed(merged[n]) for n in sorted(merged)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(all_rows)
    _atomic_write(csv_path, buf.getvalue())
    table = markdown(all_rows, s)
    _atomic_write(args.out / "check.md", table)
    print(table)


def _typed(row: dict[str, object]) -> dict[str, object]:
    """A row read back from the CSV with its numbers and booleans parsed."""
    out: dict[str, object] = {}
    for k, v in row.items():
        if not isinstance(v, str):
            out[k] = v
        elif v in {"True", "False"}:
            out[k] = v == "True"
        else:
            try:
                out[k] = int(v)
            except ValueError:
                try:
                    out[k] = float(v)
                except ValueError:
                    out[k] = v
    return out


if __name__ == "__main__":
    main()
