"""vi-flows: normalizing-flow variational inference by explicit KL minimization.

Fit q_φ = h_φ # N(0, I) to an unnormalized log-density by minimizing KL(q_φ‖p) (Xu 2018, Eq. 2),
and compare against SVGD (Liu & Wang 2016). ``infer`` is the turnkey path (conditioning, step
sizes, stopping and a verdict chosen for you); ``fit`` is the loop underneath.

>>> import vi_flows
>>> q = vi_flows.build("gaussian", 2)
>>> history = vi_flows.fit(q, lambda x: -0.5 * (x - 1).square().sum(-1), 200, progress=False)
>>> len(history)
200

The functions ``fit``, ``svgd`` and ``diagnose`` are re-exported here; their modules stay
importable as ``vi_flows.fit`` etc. through ``from vi_flows.fit import ...``.
"""

from vi_flows import losses_mass, mixture  # noqa: F401  (register renyi/forward/chi2/fab, mixture)
from vi_flows.ais import AISResult, ais
from vi_flows.diagnostics import Diagnostics, diagnose
from vi_flows.fit import History, NonFiniteError, fit
from vi_flows.flows import Flow, build
from vi_flows.infer import Inference, infer
from vi_flows.objectives import elbo_terms, kl_loss
from vi_flows.svgd import amortized_svgd, svgd
from vi_flows.targets import as_target

__all__ = [
    "AISResult",
    "Diagnostics",
    "Flow",
    "History",
    "Inference",
    "NonFiniteError",
    "ais",
    "amortized_svgd",
    "as_target",
    "build",
    "diagnose",
    "elbo_terms",
    "fit",
    "infer",
    "kl_loss",
    "svgd",
]
