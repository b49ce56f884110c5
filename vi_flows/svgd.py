r"""Stein variational gradient descent (SVGD), the particle baseline (Liu & Wang 2016).

Particles x_1..x_n move along the kernelized Stein direction

.. math::

    φ(x_i) = \frac{1}{n} \sum_j \big[k(x_j, x_i) ∇\log p(x_j) + ∇_{x_j} k(x_j, x_i)\big],

(attraction to high density plus repulsion). The defaults reproduce the reference code
(dilinwang820/Stein-Variational-Gradient-Descent, ``python/svgd.py``) exactly, RBF kernel, median
bandwidth and "AdaGrad with momentum" step, so the baseline is the real one, variance collapse in
high dimension included. Pair terms are computed in blocks of rows, never as an (n, n, d) tensor.
The kernels live in :mod:`vi_flows.kernels`; their names are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from tqdm import trange

from vi_flows import distributed
from vi_flows.kernels import (
    IMQ,
    KERNELS,
    RBF,
    IsotropicKernel,
    SteinKernel,
    get_kernel,
    median_bandwidth,
    pairwise_sq_dists,
    row_chunks,
)
from vi_flows.objectives import LogProb, as_log_prob

__all__ = [
    "IMQ",
    "RBF",
    "IsotropicKernel",
    "MLPGenerator",
    "Sampler",
    "SteinKernel",
    "amortized_svgd",
    "KERNELS",
    "get_kernel",
    "median_bandwidth",
    "mlp_generator",
    "pairwise_sq_dists",
    "svgd",
    "svgd_direction",
    "svgd_direction_from_score",
]

#: None (the reference AdaGrad step), an optimizer used as a template, or a factory params -> opt.
OptimizerSpec = torch.optim.Optimizer | Callable[[list[Tensor]], torch.optim.Optimizer] | None

#: Reference "AdaGrad with momentum" constants (python/svgd.py: alpha=0.9, fudge_factor=1e-6).
_ADAGRAD_ALPHA = 0.9
_ADAGRAD_FUDGE = 1e-6


@runtime_checkable
class Sampler(Protocol):
    """A generator that draws its own batch (amortized SVGD); others get noise (n, noise_dim)."""

    def sample(self, n: int) -> Tensor:
        """n draws (n, dim), differentiable in the generator's parameters."""
        ...


def _score(log_prob: LogProb, x: Tensor, step: int | None = None) -> tuple[Tensor, Tensor]:
    """(log p(x), ∇ log p(x)) by autograd, with shape and finiteness checks."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        lp = log_prob(x)
    got = tuple(lp.shape) if isinstance(lp, Tensor) else type(lp).__name__
    if got != (x.shape[0],):
        raise ValueError(
            f"log_prob must map {tuple(x.shape)} particles to shape ({x.shape[0]},), got {got}"
        )
    if not lp.requires_grad:
        raise ValueError("log_prob output does not depend on x through autograd; no score")
    (score,) = torch.autograd.grad(lp.sum(), x)
    if not torch.isfinite(score).all():
        bad = (~torch.isfinite(score)).any(-1).nonzero().flatten()[:5].tolist()
        where = f" at step {step}" if step is not None else ""
        raise FloatingPointError(f"non-finite score ∇log p{where} for particle(s) {bad}")
    return lp.detach(), score


def svgd_direction_from_score(
    x: Tensor,
    score: Tensor,
    kernel: str | SteinKernel = "rbf",
    bandwidth: float | Tensor | None = None,
    chunk_size: int | None = None,
    rows: slice | None = None,
) -> Tensor:
    r"""φ(x_i) = (1/n) Σ_j [k(x_j, x_i) s_j + ∇_{x_j} k(x_j, x_i)] for a given score s_j.

    Used by SVPG, whose score (a policy-gradient estimate) is computed elsewhere. ``x`` and
    ``score`` have shape (n, d); ``bandwidth`` overrides the kernel's rule; ``chunk_size`` is the
    number of rows per block of the O(n²) pair terms (None: automatic); ``rows`` restricts the
    output to φ(x_i) for i in that slice (a rank's own particles under sharding; the sums still
    run over all n). Returns φ, shape (n, d) or (len(rows), d).
    """
    if x.dim() != 2 or score.shape != x.shape:
        raise ValueError(f"need x (n, d) and score of the same shape, got {x.shape}, {score.shape}")
    kern = get_kernel(kernel)
    # Stationary kernels: centering changes nothing but keeps the Gram identity accurate.
    xc = x - x.mean(0)
    if bandwidth is None:  # uncentered x: the floor of the median rule scales with max|x|
        h = kern.bandwidth(x, chunk_size, sharded=rows is not None)
    else:
        h = torch.as_tensor(bandwidth, dtype=x.dtype, device=x.device)
        if not h > 0:
            raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    start, stop, _ = (rows or slice(0, x.shape[0])).indices(x.shape[0])
    phi = xc.new_empty((stop - start, x.shape[1]))
    for block in row_chunks(stop - start, chunk_size, x.shape[0]):
        own = slice(start + block.start, start + block.stop)
        k, repulsion = kern.gram_and_repulsion(xc[own], xc, h)
        phi[block] = k @ score + repulsion
    return phi / x.shape[0]


def _sharded_direction(
    x: Tensor,
    score: Tensor,
    kern: SteinKernel,
    bandwidth: float | Tensor | None,
    chunk_size: int | None,
) -> Tensor:
    """φ at this rank's particles ``x`` against the particles of every rank.

    On one process this is :func:`svgd_direction_from_score`. Under ``torch.distributed`` each
    rank all-gathers the particles and scores (O(n·d) memory) and computes only its own rows of
    the pair terms (O((n/N)·n) per rank, in row blocks), which equals the single-process φ.
    """
    if not distributed.is_distributed():
        return svgd_direction_from_score(x, score, kern, bandwidth, chunk_size)
    x_all, s_all = distributed.all_gather_cat(x), distributed.all_gather_cat(score)
    counts = distributed.all_gather_cat(torch.tensor([x.shape[0]]))
    offset = int(counts[: distributed.rank()].sum())
    own = slice(offset, offset + x.shape[0])
    return svgd_direction_from_score(x_all, s_all, kern, bandwidth, chunk_size, rows=own)


def svgd_direction(
    log_prob: LogProb | Any,
    x: Tensor,
    kernel: str | SteinKernel = "rbf",
    bandwidth: float | Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """The SVGD direction φ at particles ``x``, with the score ∇ log p taken by autograd."""
    _, score = _score(as_log_prob(log_prob), x)
    with torch.no_grad():
        return svgd_direction_from_score(x.detach(), score, kernel, bandwidth, chunk_size)


def _make_optimizer(spec: OptimizerSpec, params: list[Tensor]) -> torch.optim.Optimizer | None:
    """Build the optimizer over our own parameters (an instance is only a template)."""
    if spec is None:
        return None
    if isinstance(spec, torch.optim.Optimizer):
        # The caller's instance is bound to tensors we must not touch; reuse class + settings.
        return type(spec)(params, **spec.defaults)
    opt = spec(params) if callable(spec) else spec
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be None, an Optimizer or a factory of one, got {spec!r}")
    return opt


def _check_steps(steps: Any) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")


def svgd(
    log_prob: LogProb | Any,
    particles: Tensor,
    steps: int = 1000,
    *,
    kernel: str | SteinKernel = "rbf",
    step_size: float = 1e-2,
    optimizer: OptimizerSpec = None,
    bandwidth: float | None = None,
    chunk_size: int | None = None,
    callback: Callable[[int, Tensor, Tensor], bool | None] | None = None,
    progress: bool = False,
) -> Tensor:
    r"""Run SVGD from ``particles`` and return the final particles (the input is not modified).

    With ``optimizer=None`` the step is the reference "AdaGrad with momentum": with g = φ,
    ``hist = g²`` at step 0, then ``hist = 0.9·hist + 0.1·g²``, and
    ``x ← x + ε · g / (1e-6 + sqrt(hist))``. Otherwise −φ is written into ``.grad`` of the
    particle tensor and the torch optimizer steps (it minimizes, so it ascends along φ).

    Args:
        log_prob: Callable (n, d) → (n,) unnormalized log density, or an object with ``log_prob``.
        particles: Initial particles (n, d), float32 or float64, on any device.
        steps: Number of updates.
        kernel: ``"rbf"``, ``"imq"`` or a :class:`SteinKernel`.
        step_size: ε of the reference AdaGrad step (ignored when ``optimizer`` is given).
        optimizer: A factory ``params -> Optimizer`` (e.g. ``partial(Adam, lr=0.1)``) or an
            instance used as a template (same class and ``defaults``, fresh state, bound to the
            internal copy). Closure-based optimizers (LBFGS) are unsupported.
        bandwidth: Fixed h; None uses the kernel's rule (median heuristic by default).
        chunk_size: Rows per block of the O(n²) pair terms (None: automatic).
        callback: ``callback(step, particles, phi)``; returning True stops early.
        progress: Show a tqdm progress bar.

    Raises:
        ValueError: If ``log_prob`` does not return shape (n,), there are no particles,
            ``steps < 0``, or ``step_size`` is not a finite positive number.
        FloatingPointError: If the score is non-finite (the message names the step).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> target = torch.distributions.Normal(torch.tensor(1.0), 1.0)
        >>> x = svgd(lambda z: target.log_prob(z).sum(-1), torch.randn(100, 1), 300, step_size=0.1)
        >>> abs(x.mean().item() - 1.0) < 0.1
        True
    """
    fn = as_log_prob(log_prob)
    if particles.dim() != 2 or not particles.is_floating_point():
        raise ValueError(f"particles must be a float tensor of shape (n, d), got {particles.shape}")
    if particles.shape[0] < 1 or particles.shape[1] < 1:
        raise ValueError(
            f"particles must have n >= 1 rows and d >= 1 columns, got {particles.shape}"
        )
    _check_steps(steps)
    if optimizer is None and not (math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a finite number > 0, got {step_size!r}")
    kern = get_kernel(kernel)
    x = particles.detach().clone()
    opt = _make_optimizer(optimizer, [x])
    hist: Tensor | None = None
    for step in trange(steps, desc="svgd", disable=not progress):
        _, score = _score(fn, x, step)
        with torch.no_grad():
            phi = _sharded_direction(x, score, kern, bandwidth, chunk_size)
            if opt is None:
                g2 = phi.square()
                hist = g2 if hist is None else _ADAGRAD_ALPHA * hist + (1 - _ADAGRAD_ALPHA) * g2
                x.add_(step_size * phi / (_ADAGRAD_FUDGE + hist.sqrt()))
            else:
                x.grad = -phi
                opt.step()
        if callback is not None and callback(step, x.detach(), phi) is True:
            break
    return x.detach()


class MLPGenerator(nn.Module):
    """x = f_η(ξ), ξ ~ N(0, I_noise_dim) (default noise_dim = dim): a tanh-MLP sampler."""

    def __init__(self, dim: int, noise_dim: int | None = None, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.dim, self.noise_dim = dim, noise_dim or dim
        layers: list[nn.Module] = []
        width = self.noise_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.Tanh()]
            width = h
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, noise: Tensor) -> Tensor:
        return self.net(noise)

    def sample(self, n: int) -> Tensor:
        """n samples, shape (n, dim), differentiable w.r.t. the parameters."""
        p = next(self.parameters())
        return self(torch.randn(n, self.noise_dim, dtype=p.dtype, device=p.device))


def mlp_generator(
    dim: int, noise_dim: int | None = None, hidden: Sequence[int] = (64, 64)
) -> MLPGenerator:
    """Default generator for :func:`amortized_svgd` (an :class:`MLPGenerator`)."""
    return MLPGenerator(dim, noise_dim, hidden)


def amortized_svgd(
    log_prob: LogProb | Any,
    generator: nn.Module,
    dim: int,
    steps: int,
    *,
    batch_size: int = 100,
    lr: float = 1e-3,
    kernel: str | SteinKernel = "rbf",
    bandwidth: float | None = None,
    optimizer: OptimizerSpec = None,
    noise_dim: int | None = None,
    chunk_size: int | None = None,
    callback: Callable[[int, dict[str, float]], bool | None] | None = None,
    progress: bool = False,
) -> list[dict[str, float]]:
    r"""Amortized SVGD (Feng, Wang & Liu 2017): train a sampler x = f_η(ξ) along φ.

    Each step draws a batch x_i = f_η(ξ_i), computes φ at the (detached) batch and updates
    η ← η + lr · (1/B) Σ_i (∂f_η(ξ_i)/∂η)ᵀ φ(x_i) by back-propagating
    ``loss = −(x · φ.detach()).sum() / B`` through the generator.

    Args:
        log_prob: Callable (n, d) → (n,) or object with ``log_prob``.
        generator: Module with ``sample(n)``, or mapping noise (n, noise_dim) to (n, dim).
        dim: Target dimension d (checked against the generator's output).
        steps: Number of updates.
        batch_size: Particles per step B.
        lr: Adam learning rate when ``optimizer`` is None.
        kernel, bandwidth, optimizer, chunk_size, progress: As in :func:`svgd`.
        noise_dim: Noise dimension for generators without ``sample`` (default:
            ``generator.noise_dim`` if present, else ``dim``).
        callback: ``callback(step, record)``; returning True stops early.

    Returns:
        History: per step ``{"step", "phi_sq" (mean φ², a convergence monitor), "mean_log_prob"}``.
    """
    fn = as_log_prob(log_prob)
    _check_steps(steps)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    kern = get_kernel(kernel)
    params = [p for p in generator.parameters() if p.requires_grad]
    if not params:
        raise ValueError("generator has no trainable parameters")
    opt = _make_optimizer(optimizer, params)
    if opt is None:
        opt = torch.optim.Adam(params, lr=lr)
    nz = noise_dim or getattr(generator, "noise_dim", None) or dim  # optional metadata
    history: list[dict[str, float]] = []
    local_b = distributed.shard(batch_size)[1]  # this rank's share of the batch (all of it on 1)
    for step in trange(steps, desc="amortized svgd", disable=not progress):
        if isinstance(generator, Sampler):
            x = generator.sample(local_b)
        else:
            x = generator(params[0].new_empty(local_b, nz).normal_())
        if tuple(x.shape) != (local_b, dim):
            raise ValueError(
                f"generator produced shape {tuple(x.shape)}, expected ({local_b}, {dim})"
            )
        lp, score = _score(fn, x, step)
        with torch.no_grad():
            phi = _sharded_direction(x.detach(), score, kern, bandwidth, chunk_size)
        loss = -(x * phi).sum() / batch_size
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # Each rank's loss already divides by the global B: the gradients add up.
        distributed.all_reduce_grads(params, weights=1.0)
        opt.step()
        record = {"step": float(step), "phi_sq": phi.square().mean().item()}
        record["mean_log_prob"] = lp.mean().item()
        history.append(record)
        if callback is not None and callback(step, record) is True:
            break
    return history
