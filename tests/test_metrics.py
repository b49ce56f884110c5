"""Sample-based metrics used by the density benchmark."""

from __future__ import annotations

import pytest
import torch

from vi_flows.metrics import mmd2, modes_covered, moment_errors, sliced_wasserstein


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mmd_separates_shifted_and_narrowed_samples() -> None:
    g = _gen()
    ref = torch.randn(800, 5, generator=g)
    same = torch.randn(800, 5, generator=g)
    assert abs(mmd2(same, ref)) < 0.005
    assert mmd2(same + 0.5, ref) > 0.02
    assert mmd2(0.3 * same, ref) > 0.02  # variance collapse is penalized too


def test_sliced_wasserstein_of_a_shift_is_the_projected_shift() -> None:
    g = _gen(1)
    x = torch.randn(4000, 1, generator=g)
    # In 1-D every direction is ±1, so SW1 is the 1-D W1 of a shift: exactly the shift.
    assert sliced_wasserstein(x + 2.0, x) == pytest.approx(2.0, abs=1e-6)
    y = torch.randn(4000, 3, generator=g)
    assert sliced_wasserstein(y, torch.randn(3000, 3, generator=g)) < 0.05


def test_moment_errors_in_units_of_sd() -> None:
    g = _gen(2)
    x = 2.0 * torch.randn(20000, 2, generator=g) + torch.tensor([1.0, 0.0])
    mean_err, sd_err = moment_errors(x, torch.tensor([0.0, 0.0]), torch.tensor([2.0, 2.0]))
    assert mean_err == pytest.approx(0.5, abs=0.03)
    assert sd_err < 0.03


def test_modes_covered_counts_only_populated_modes() -> None:
    modes = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    g = _gen(3)
    x = torch.cat([m + 0.1 * torch.randn(250, 2, generator=g) for m in modes[:3]])
    assert modes_covered(x, modes, radius=1.0) == pytest.approx(0.75)
    stray = torch.cat([x, modes[3:] + 0.01 * torch.randn(1, 2, generator=g)])
    assert modes_covered(stray, modes, radius=1.0) == pytest.approx(0.75)
