"""Unnormalized target densities p̃ = Z·p for variational inference, in one registry.

- :mod:`vi_flows.targets.base`: :class:`Target`, :func:`as_target` and the registry;
- :mod:`vi_flows.targets.toys`: toy targets with known answers (U1–U4, banana, funnel, ...);
- :mod:`vi_flows.targets.heavy_tails`: the multivariate Student-t (``student-t``);
- :mod:`vi_flows.targets.posteriordb`: real posteriors, registered under the prefix
  ``posteriordb:``;
- :mod:`vi_flows.targets.files`: a function in a Python file, ``path/to/file.py:function``.

A new target is a :class:`Target` subclass (or any factory returning one) registered with
``@register("name")`` or ``register("name", factory)``.

>>> t = get("funnel", dim=3)
>>> t.log_prob(torch.zeros(5, 3)).shape, t.log_z, t.has_sample
(torch.Size([5]), 0.0, True)
>>> sorted(names())[:3]
['banana', 'correlated-gaussian', 'funnel']
"""

import torch  # noqa: F401  (used by the doctest above)

from vi_flows.targets import heavy_tails, hier_logreg, posteriordb, sampling, toys
from vi_flows.targets.base import (
    TARGETS,
    Bounds,
    CallableTarget,
    Target,
    as_target,
    get,
    names,
    normal_log_prob,
    register,
)
from vi_flows.targets.toys import grid_log_z

__all__ = [
    "TARGETS",
    "Bounds",
    "CallableTarget",
    "Target",
    "as_target",
    "get",
    "grid_log_z",
    "heavy_tails",
    "hier_logreg",
    "names",
    "normal_log_prob",
    "posteriordb",
    "register",
    "sampling",
    "toys",
]
