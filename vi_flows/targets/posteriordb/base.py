"""The posteriordb loader's base: where the posteriors live, :class:`PosteriorTarget`, and the
log-densities and constraining transforms the models share.

Every model maps Stan's unconstrained vector x (..., d) to the log density of the declared
parameters plus the log-Jacobian of Stan's constraining transforms (see :mod:`..posteriordb`).
The transforms here return ``(value, log_abs_det_jacobian)`` and have exact inverses:

- ``<lower=0>``: σ = exp(u), log-Jacobian u;
- ``positive_ordered[K]``: x_1 = exp(u_1), x_k = x_{k−1} + exp(u_k), log-Jacobian Σ u_k;
- ``simplex[K]``: Stan's (classic) stick-breaking transform, K − 1 free coordinates:
  z_k = logistic(u_k − log(K − k)), x_k = (1 − Σ_{j<k} x_j) z_k, x_K the rest, log-Jacobian
  Σ_k [log z_k + log(1 − z_k) + log(1 − Σ_{j<k} x_j)]. (Any bijection with its Jacobian gives
  the same posterior on the simplex; only the unconstrained coordinates differ.)
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from vi_flows.targets.base import Target

__all__ = [
    "ENV_VAR",
    "F64",
    "LOG_2PI",
    "PosteriorTarget",
    "cauchy_log_prob",
    "flatten_draws",
    "log_simplex",
    "positive_ordered",
    "positive_ordered_inverse",
    "read_json_zip",
    "root",
    "simplex_inverse",
    "student_t_log_prob",
]

ENV_VAR = "VI_FLOWS_POSTERIORDB"
LOG_2PI = math.log(2.0 * math.pi)
F64 = torch.float64


def root() -> Path:
    """The posteriordb folder: ``$VI_FLOWS_POSTERIORDB`` or ``<repo>/../shared/posteriordb``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    # <repo>/vi_flows/targets/posteriordb/base.py -> <repo>/../shared/posteriordb
    return Path(__file__).resolve().parents[4] / "shared" / "posteriordb"


def read_json_zip(path: Path) -> Any:
    """The JSON document inside the zip file ``path``."""
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read(zf.namelist()[0]))


def cauchy_log_prob(x: Tensor, loc: float, scale: float) -> Tensor:
    """Elementwise log Cauchy(x; loc, scale), constants included."""
    return -math.log(math.pi * scale) - torch.log1p(((x - loc) / scale) ** 2)


def student_t_log_prob(x: Tensor, df: float, loc: float, scale: float) -> Tensor:
    """Elementwise log Student-t(x; df, loc, scale), constants included."""
    const = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return const - math.log(scale) - (df + 1) / 2 * torch.log1p(((x - loc) / scale) ** 2 / df)


def positive_ordered(u: Tensor) -> tuple[Tensor, Tensor]:
    """Stan's ``positive_ordered``: (..., K) -> cumsum(exp(u)), with log-Jacobian Σ u."""
    return torch.cumsum(torch.exp(u), -1), u.sum(-1)


def positive_ordered_inverse(x: Tensor) -> Tensor:
    """Inverse of :func:`positive_ordered`."""
    return torch.log(torch.diff(x, dim=-1, prepend=torch.zeros_like(x[..., :1])))


def _stick_offsets(k: int, like: Tensor) -> Tensor:
    """log(K − k) for k = 1..K−1: centres the stick-breaking map at the uniform simplex."""
    return torch.log(torch.arange(k - 1, 0, -1, dtype=like.dtype, device=like.device))


def log_simplex(u: Tensor) -> tuple[Tensor, Tensor]:
    """Stan's stick-breaking ``simplex[K]`` transform in log space: (..., K−1) -> log x (..., K)
    and the log-Jacobian (log x stays finite where x underflows)."""
    k = u.shape[-1] + 1
    v = u - _stick_offsets(k, u)
    log_z, log_1mz = logsigmoid(v), logsigmoid(-v)
    # log of the stick left before piece k: Σ_{j<k} log(1 − z_j)
    log_stick = torch.cumsum(log_1mz, -1) - log_1mz
    log_x = torch.cat([log_stick + log_z, log_stick[..., -1:] + log_1mz[..., -1:]], -1)
    return log_x, (log_z + log_1mz + log_stick).sum(-1)


def simplex_inverse(x: Tensor) -> Tensor:
    """Inverse of :func:`log_simplex` (given x, not log x): (..., K) -> (..., K − 1)."""
    stick = 1.0 - (torch.cumsum(x, -1) - x)[..., :-1]
    return torch.logit(x[..., :-1] / stick) + _stick_offsets(x.shape[-1], x)


def flatten_draws(values: dict[str, Tensor]) -> tuple[list[str], Tensor]:
    """Named draws (scalars (n,), vectors (n, k)) as labels (``"beta[2]"``) and columns (n, m)."""
    labels, cols = [], []
    for name, v in values.items():
        if v.ndim == 1:
            labels.append(name)
            cols.append(v[:, None])
        else:
            labels += [f"{name}[{j + 1}]" for j in range(v.shape[1])]
            cols.append(v)
    return labels, torch.cat(cols, 1)


class PosteriorTarget(Target):
    """A posteriordb posterior over Stan's unconstrained space (see the package docstring).

    Attributes:
        params: declared Stan parameters → the size of their unconstrained block (0 for
            scalars, K − 1 for a ``simplex[K]``), in declaration order.
        folder: the posterior's folder; ``data``: its data (the parsed ``data.json``).
    """

    params: dict[str, int]

    def __init__(self, name: str, folder: Path) -> None:
        self.folder = folder
        self.data: dict[str, Any] = read_json_zip(folder / "data.json.zip")
        self._setup()
        super().__init__(name, sum(max(1, s) for s in self.params.values()))
        self._cache: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}
        self._ref: dict[str, Tensor] | None = None

    # --- per-model pieces ---------------------------------------------------------------------
    def _setup(self) -> None:
        """Fix ``params`` where they depend on the data (default: the class attribute), and
        precompute data-only quantities (Stan's ``transformed data``)."""

    def constrain(self, x: Tensor) -> dict[str, Tensor]:
        """Constrained parameters (and transformed parameters) at unconstrained x (..., d)."""
        raise NotImplementedError

    def unconstrain(self, values: dict[str, Tensor]) -> Tensor:
        """Inverse of :meth:`constrain`: named constrained values (e.g. reference draws) -> x."""
        raise NotImplementedError

    # --- shared machinery ---------------------------------------------------------------------
    def _d(self, key: str, like: Tensor) -> Tensor:
        """Data array ``key`` as a tensor in ``like``'s dtype and device (cached)."""
        ck = (key, like.dtype, like.device)
        if ck not in self._cache:
            self._cache[ck] = torch.as_tensor(self.data[key], dtype=like.dtype, device=like.device)
        return self._cache[ck]

    def _split(self, x: Tensor) -> dict[str, Tensor]:
        """The unconstrained blocks of x by parameter name (scalars (...), vectors (..., k))."""
        out, i = {}, 0
        for p, size in self.params.items():
            out[p] = x[..., i] if size == 0 else x[..., i : i + size]
            i += max(1, size)
        return out

    def _join(self, blocks: list[Tensor]) -> Tensor:
        """Inverse of :meth:`_split` (blocks in parameter order)."""
        return torch.cat(
            [
                b[..., None] if s == 0 else b
                for b, s in zip(blocks, self.params.values(), strict=True)
            ],
            -1,
        )

    def reference_draws(self) -> dict[str, Tensor]:
        """The reference draws (float64, chains concatenated), named as :meth:`constrain`."""
        if self._ref is None:
            chains = read_json_zip(self.folder / "reference_draws.json.zip")
            cols: dict[str, list[float]] = {}
            for chain in chains:
                for key, draws in chain.items():
                    cols.setdefault(key, []).extend(draws)
            groups: dict[str, dict[int, Tensor]] = {}
            for key, draws in cols.items():
                m = re.fullmatch(r"(\w+)\[(\d+)\]", key)
                name, idx = (m.group(1), int(m.group(2))) if m else (key, 0)
                groups.setdefault(name, {})[idx] = torch.tensor(draws, dtype=F64)
            self._ref = {
                n: g[0] if list(g) == [0] else torch.stack([g[i] for i in sorted(g)], -1)
                for n, g in groups.items()
            }
        return dict(self._ref)

    def compare(self, x: Tensor) -> dict[str, Any]:
        """Draws x (n, d) of the unconstrained parameters against the reference draws, per
        scalar component of every parameter in the reference draws (constrained, as Stan
        reports them; the declared parameters, or eight schools' ``theta``).

        Returns:
            ``labels`` (e.g. ``"beta[2]"``), ``mean_error`` (mean − mean_ref) / sd_ref and
            ``sd_ratio`` sd / sd_ref (float64 tensors, one entry per label), and the summaries
            ``worst_mean_error`` (max |mean_error|), ``worst_param``, ``sd_ratio_min`` and
            ``sd_ratio_max``.
        """
        ref = self.reference_draws()
        with torch.no_grad():
            ours = self.constrain(x.detach().to(F64).reshape(-1, self.dim))
        labels, r = flatten_draws(ref)
        _, o = flatten_draws({name: ours[name] for name in ref})
        z = (o.mean(0) - r.mean(0)) / r.std(0)
        ratio = o.std(0) / r.std(0)
        worst = int(z.abs().argmax())
        return {
            "labels": labels,
            "mean_error": z,
            "sd_ratio": ratio,
            "worst_mean_error": float(z.abs().max()),
            "worst_param": labels[worst],
            "sd_ratio_min": float(ratio.min()),
            "sd_ratio_max": float(ratio.max()),
        }

    def reference_unconstrained(self) -> Tensor:
        """The reference draws mapped to the unconstrained space, (n, d) float64."""
        return self.unconstrain(self.reference_draws())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, folder={self.folder})"
