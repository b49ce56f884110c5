"""The hier-logreg target: shipped data as documented, reference draws that verify."""

from __future__ import annotations

import torch

from vi_flows import targets
from vi_flows.targets.hier_logreg import REFERENCE, simulate


def test_shipped_data_is_simulate_seed_0() -> None:
    t = targets.get("hier-logreg")
    assert t.data == simulate(0) and t.dim == 30 and t.data["N"] == 205


def test_reference_draws_pass_convergence_and_the_stein_identity() -> None:
    blob = torch.load(REFERENCE, weights_only=True)
    assert float(blob["split_rhat"].max()) < 1.01 and float(blob["ess"].min()) > 4000
    t = targets.get("hier-logreg")
    x = t.reference_unconstrained().requires_grad_(True)
    (score,) = torch.autograd.grad(t.log_prob(x).sum(), x)
    # Under p, E[∇ log p] = 0: the draws' mean score is within 4 standard errors of 0.
    z = score.mean(0) / (score.std(0) / score.shape[0] ** 0.5)
    assert float(z.abs().max()) < 4.0, z
