"""Shared pieces of the benchmarks: fitting a flow under a budget, tables, output folders."""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vi_flows import flows
from vi_flows.diagnostics import diagnose
from vi_flows.fit import fit
from vi_flows.transforms import Compose, ElementwiseAffine, Transform

# Flow families and their fit settings used by every density benchmark (one place, so a change is
# a change for all). The learning rates are each family's own sensible default, not tuned per
# target: Gaussians take larger steps, the deep stacks smaller ones.
FAMILIES: dict[str, dict[str, Any]] = {
    "gaussian": {"lr": 1e-2, "options": {}},
    "full-gaussian": {"lr": 1e-2, "options": {}},
    "lowrank-gaussian": {"lr": 1e-2, "options": {"rank": 4}},
    "planar": {"lr": 3e-3, "options": {"layers": 16}},
    "radial": {"lr": 3e-3, "options": {"layers": 16}},
    "realnvp": {"lr": 3e-3, "options": {"layers": 8}},
    "nflows-spline": {"lr": 3e-3, "options": {"layers": 4}},
    "pyro-planar": {"lr": 3e-3, "options": {"layers": 16}},
    "pyro-coupling": {"lr": 3e-3, "options": {"layers": 8}},
    "maf": {"lr": 3e-3, "options": {"layers": 5}},
    "iaf": {"lr": 3e-3, "options": {"layers": 5}},
    "nsf": {"lr": 3e-3, "options": {"layers": 4}},
    "nsf-ar": {"lr": 3e-3, "options": {"layers": 4}},
}

#: zuko's flows at the architecture of our families (layers, hidden widths, bins, bound 5), fitted
#: by the same loop; built by :func:`build_family`, never part of vi_flows. zuko-nsf is zuko's
#: NSF in coupling form (passes=2) like our ``nsf``; zuko-maf is zuko's MAF like our ``maf``.
ZUKO_FAMILIES: dict[str, dict[str, Any]] = {
    "zuko-nsf": {"lr": 3e-3, "options": {"layers": 4}},
    "zuko-maf": {"lr": 3e-3, "options": {"layers": 5}},
}

#: ε of SVGD's reference AdaGrad step in the density benchmarks (the reference demos use 1e-2 to
#: 5e-2); SVGD is otherwise run exactly as the reference code.
SVGD_STEP = 0.05

#: Families that need a coupling split (dim >= 2).
NEEDS_TWO_DIMS = {"realnvp", "nflows-spline", "pyro-coupling", "nsf", "zuko-nsf"}


class ZukoTransform(Transform):
    """A zuko flow's transform as a vi_flows transform (forward = base → sample).

    zuko's transforms map data to noise, so our forward is zuko's inverse: for autoregressive
    layers that is ``passes`` MADE evaluations per layer (2 for coupling form, d for MAF).
    """

    def __init__(self, flow: Any, dim: int, *, sequential_forward: bool = False) -> None:
        super().__init__(dim)
        self.flow = flow
        self.sequential_forward = sequential_forward  # zuko's MAF samples in d passes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow.transform().inv.call_and_ladj(x)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow.transform().call_and_ladj(y)


def zuko_flow(family: str, dim: int, layers: int, hidden: tuple[int, ...] = (64, 64)) -> Any:
    """zuko's NSF (coupling form, 8 bins on [−5, 5]) or MAF with our layer count and widths."""
    import zuko

    if family == "zuko-nsf":
        return zuko.flows.NSF(dim, transforms=layers, hidden_features=hidden, bins=8, passes=2)
    if family == "zuko-maf":
        return zuko.flows.MAF(dim, transforms=layers, hidden_features=hidden)
    raise ValueError(f"unknown zuko family {family!r}")


def build_family(family: str, dim: int, **extra: Any) -> flows.Flow:
    """One of :data:`FAMILIES` (``extra`` options, e.g. a base, go to ``build``) or a zuko peer
    (wrapped with the same standard-normal base and our elementwise affine head)."""
    if family in ZUKO_FAMILIES:
        inner = ZukoTransform(
            zuko_flow(family, dim, **ZUKO_FAMILIES[family]["options"]),
            dim,
            sequential_forward=family == "zuko-maf",
        )
        return flows.Flow(Compose([inner, ElementwiseAffine(dim)]))
    return flows.build(family, dim, **FAMILIES[family]["options"], **extra)


def fit_family(
    family: str,
    target: Any,
    *,
    steps: int | None = None,
    seconds: float | None = None,
    samples: int = 256,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> tuple[flows.Flow, dict[str, float]]:
    """Fit one family to ``target`` for ``steps`` steps or ``seconds`` of wall clock.

    ``options`` (e.g. ``{"base": "student-t"}``) are passed to ``build`` on top of the family's.
    Returns the flow and {steps, seconds, final ELBO}.
    """
    if (steps is None) == (seconds is None):
        raise ValueError("give exactly one of steps and seconds")
    spec = {**FAMILIES, **ZUKO_FAMILIES}[family]
    torch.manual_seed(seed)
    q = build_family(family, target.dim, **(options or {}))
    budget_steps = steps if steps is not None else 10**9
    deadline = None if seconds is None else time.perf_counter() + seconds
    start = time.perf_counter()

    def stop(step: int, info: dict[str, float]) -> bool:
        return deadline is not None and time.perf_counter() > deadline

    history = fit(
        q,
        target,
        budget_steps,
        num_samples=samples,
        lr=spec["lr"],
        lr_schedule="cosine" if steps is not None else None,
        seed=seed,
        callback=stop,
        progress=False,
        max_bad_steps=50,
    )
    elapsed = time.perf_counter() - start
    return q, {"steps": len(history), "seconds": elapsed, "final_elbo": history.elbo[-1]}


def evaluate(q: flows.Flow, target: Any, n: int, seed: int = 12345) -> dict[str, float]:
    """ELBO, IS log Z, KL (when log Z is known), ESS and k̂ from ``n`` samples."""
    torch.manual_seed(seed)
    d = diagnose(q, target, n=n)
    return {
        "elbo": d.elbo,
        "log_z_is": d.log_z,
        "kl": math.nan if d.kl is None else d.kl,
        "ess": d.ess,
        "k_hat": d.k_hat,
    }


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV from :func:`benchmarks.files.write_rows`, numbers and booleans parsed."""

    def parse(text: str) -> Any:
        if text in {"True", "False"}:
            return text == "True"
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            return text

    with path.open(newline="") as fh:
        return [{k: parse(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def fit_or_fail(family: str, target: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """:func:`fit_family`, but a fit that diverges is a result (``error``), not a crash."""
    try:
        return fit_family(family, target, **kwargs)
    except (FloatingPointError, RuntimeError, ValueError) as err:
        return None, {"error": f"{type(err).__name__}: {str(err)[:120]}"}


def fmt(value: Any, digits: int = 3) -> str:
    """Format a number for a Markdown table (NaN as '—')."""
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.{digits}f}"
    return str(value)


def alternating_rates(
    contenders: dict[str, flows.Flow], target: Any, rounds: int, steps: int
) -> dict[str, list[float]]:
    """Fit steps per second (batch 256) of each flow, ``rounds`` times in turn: alternating, so
    a drift in the host's speed hits every contender alike."""
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, q in contenders.items():
            start = time.perf_counter()
            fit(q, target, steps, num_samples=256, progress=False)
            rates[name].append(steps / (time.perf_counter() - start))
    return rates


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], digits: int = 3) -> str:
    """A GitHub Markdown table of ``columns`` from ``rows``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c, ""), digits) for c in columns) + " |")
    return "\n".join(lines)
