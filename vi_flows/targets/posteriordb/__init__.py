"""Real posteriors from posteriordb as targets over Stan's unconstrained parameter space.

The posteriors are read (never copied) from ``<repo>/../shared/posteriordb/<name>/`` (override
with the environment variable ``VI_FLOWS_POSTERIORDB``); each folder holds ``model.stan``,
``data.json.zip``, ``reference_draws.json.zip`` and ``posterior.json``. Each model is
re-implemented in torch from its ``model.stan``:

- x (..., d) is Stan's unconstrained vector: the declared parameters in declaration order,
  each flattened, with ``<lower=0>`` as σ = exp(u), ``<lower=a, upper=b>`` as
  a + (b − a)·logistic(u), ``ordered`` as (u1, u1 + exp(u2), …), ``positive_ordered`` as
  (exp(u1), exp(u1) + exp(u2), …) and ``simplex[K]`` by stick-breaking (K − 1 coordinates),
  exactly as Stan does (:mod:`.base`);
- ``log_prob(x)`` is the model's log density plus the log-Jacobian of those transforms, **with
  every normalizing constant of every lpdf kept** (Stan's ``log_prob`` with ``jacobian=True``,
  ``propto=False``); improper flat priors are the constant 0. As in Stan, half-distributions
  from lower bounds (e.g. a ``cauchy(0, 5)`` prior on σ > 0) are not renormalized unless the
  program does so; ``log_z`` (the log evidence) is unknown (``None``).
- ``constrain(x)`` returns the named constrained parameters and transformed parameters: scalars
  as (...) tensors, vectors as (..., k) tensors (``theta[1]`` … ``theta[8]`` are the columns of
  ``theta``); ``reference_draws()`` returns the reference draws (all chains concatenated) in the
  same scheme, and ``unconstrain`` maps such a dict back to x.

The models are grouped by kind: :mod:`.regressions` (linear regressions, eight schools),
:mod:`.timeseries` (AR(K), ARMA, GARCH), :mod:`.mixtures` (Gaussian mixture, HMMs),
:mod:`.ode` (Lotka–Volterra) and :mod:`.gp` (Gaussian processes).

>>> "sblrc-blr" in implemented()
True
"""

from __future__ import annotations

from pathlib import Path

from vi_flows.registry import UnknownNameError
from vi_flows.targets.base import register_prefix
from vi_flows.targets.posteriordb import gp, mixtures, ode, regressions, timeseries
from vi_flows.targets.posteriordb.base import ENV_VAR, PosteriorTarget, root

__all__ = [
    "ENV_VAR",
    "PosteriorNotFoundError",
    "PosteriorTarget",
    "available",
    "describe",
    "implemented",
    "load",
    "root",
]

_MODELS: dict[str, type[PosteriorTarget]] = {
    # regressions
    "sblrc-blr": regressions.SblrBlr,
    "sblri-blr": regressions.SblrBlr,
    "kidiq-kidscore_momiq": regressions.KidiqMomiq,
    "kidiq-kidscore_interaction": regressions.KidiqInteraction,
    "kidiq_with_mom_work-kidscore_interaction_c": regressions.KidiqInteractionC,
    "earnings-earn_height": regressions.EarnHeight,
    "earnings-logearn_interaction_z": regressions.LogearnInteractionZ,
    "earnings-logearn_logheight_male": regressions.LogearnLogheightMale,
    "kilpisjarvi_mod-kilpisjarvi": regressions.Kilpisjarvi,
    "mesquite-logmesquite_logvash": regressions.LogmesquiteLogvash,
    "nes2000-nes": regressions.Nes,
    "diamonds-diamonds": regressions.Diamonds,
    "eight_schools-eight_schools_noncentered": regressions.EightSchoolsNoncentered,
    # time series
    "arK-arK": timeseries.ArK,
    "arma-arma11": timeseries.Arma11,
    "garch-garch11": timeseries.Garch11,
    # mixtures and hidden Markov models
    "low_dim_gauss_mix-low_dim_gauss_mix": mixtures.LowDimGaussMix,
    "hmm_example-hmm_example": mixtures.HmmExample,
    "bball_drive_event_0-hmm_drive_0": mixtures.HmmDrive,
    # ODE
    "hudson_lynx_hare-lotka_volterra": ode.LotkaVolterra,
    # Gaussian processes
    "gp_pois_regr-gp_pois_regr": gp.GpPoisRegr,
    "gp_pois_regr-gp_regr": gp.GpRegr,
}


class PosteriorNotFoundError(FileNotFoundError, ValueError):
    """A posterior's files are absent. Also a ``ValueError``, so callers that report bad names
    (e.g. the CLI) report this the same way, in one line."""


def implemented() -> list[str]:
    """The posteriors this package implements (whether or not their files are present)."""
    return sorted(_MODELS)


def available() -> list[str]:
    """The implemented posteriors whose folders are present under :func:`root`."""
    base = root()
    return [n for n in implemented() if (base / n / "data.json.zip").is_file()]


def describe() -> list[tuple[str, int]]:
    """``(name, dim)`` of every available posterior (dim: the unconstrained dimension).

    Loads each posterior's data (a second or so for all of them).
    """
    return [(name, load(name).dim) for name in available()]


def load(name: str, root_dir: str | Path | None = None) -> PosteriorTarget:
    """Load the posterior ``name`` (e.g. ``"sblrc-blr"``) as a :class:`PosteriorTarget`.

    Args:
        name: a posteriordb posterior name, one of :func:`implemented`.
        root_dir: the posteriordb folder (default :func:`root`).

    Raises:
        UnknownNameError: (a ``ValueError``) when ``name`` is not implemented here.
        PosteriorNotFoundError: (a ``FileNotFoundError``) when its folder or a file in it is
            missing.
    """
    base = Path(root_dir) if root_dir is not None else root()
    where = f"posteriors are read from {base} (set {ENV_VAR} to another folder)"
    if name not in _MODELS:
        present = [n for n in implemented() if (base / n / "data.json.zip").is_file()]
        raise UnknownNameError(
            f"posterior {name!r} is not implemented; implemented: {', '.join(implemented())}; "
            f"present: {', '.join(present) or 'none'}; {where}"
        )
    folder = base / name
    missing = [
        f for f in ("data.json.zip", "reference_draws.json.zip") if not (folder / f).is_file()
    ]
    if missing:
        raise PosteriorNotFoundError(
            f"posterior {name!r}: {', '.join(missing)} not found in {folder}; {where}"
        )
    return _MODELS[name](name, folder)


register_prefix("posteriordb", load, available)
