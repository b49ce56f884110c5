"""Multi-process tests: 2 gloo ranks spawned on localhost by the test itself (bounded time)."""

from __future__ import annotations

from pathlib import Path

import _ranks  # noqa: I001  (tests/_ranks.py, the rank launcher)
import pytest
import torch
import torch.distributed as dist

from vi_flows import distributed
from vi_flows.fit import fit
from vi_flows.flows import build
from vi_flows.objectives import kl_loss
from vi_flows.svgd import svgd

WORKER = Path(__file__).with_name("_dist_worker.py")
pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)


def run_ranks(case: str, out: Path, world: int = 2, timeout: float = 120.0, coll: float = 60.0):
    """Start ``world`` ranks of ``_dist_worker.py CASE OUT`` and wait; returns their results."""
    return _ranks.run_ranks(
        WORKER, case, str(out), world=world, timeout=timeout, collective_timeout=coll
    )


def test_single_process_is_rank_zero_of_one() -> None:
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    t = torch.ones(3)
    assert distributed.all_reduce_mean(t) is t and torch.equal(t, torch.ones(3))
    assert distributed.all_gather_cat(t) is t
    assert distributed.rank_seed(7) == 7
    assert distributed.shard(5) == (0, 5)


@pytest.mark.parametrize("n,world", [(10, 3), (7, 2), (2, 4), (64, 2)])
def test_shards_cover_the_range_exactly(n: int, world: int) -> None:
    covered = []
    for r in range(world):
        off, size = distributed.shard(n, world=world, rank_=r)
        covered += list(range(off, off + size))
    assert covered == list(range(n))


def test_rank_seeds_differ_and_repeat() -> None:
    seeds = [distributed.rank_seed(3, rank_=r) for r in range(8)]
    assert len(set(seeds)) == 8 and seeds == [distributed.rank_seed(3, rank_=r) for r in range(8)]


def test_gather_with_unequal_sizes(tmp_path: Path) -> None:
    results = run_ranks("gather", tmp_path)
    assert all(rc == 0 for rc, _, _ in results), results
    expected = torch.cat(
        [torch.arange(r + 2, dtype=torch.float64)[:, None].repeat(1, 2) + 10 * r for r in range(2)]
    )
    for r in range(2):
        assert torch.equal(torch.load(tmp_path / f"gather{r}.pt", weights_only=True), expected)


def test_sharded_svgd_equals_single_process(tmp_path: Path) -> None:
    results = run_ranks("svgd", tmp_path)
    assert all(rc == 0 for rc, _, _ in results), results
    particles = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.set_num_threads(1)
    single = svgd(
        lambda x: -0.5 * ((x - 1.0) / torch.tensor([0.5, 2.0, 1.0])).square().sum(-1),
        particles,
        10,
        step_size=0.05,
    )
    sharded = torch.load(tmp_path / "svgd.pt", weights_only=True)
    assert not torch.equal(single, particles)  # the particles moved
    torch.testing.assert_close(sharded, single, atol=1e-6, rtol=0)


def test_a_failing_rank_brings_the_job_down_without_a_hang(tmp_path: Path) -> None:
    results = run_ranks("raise", tmp_path, timeout=90.0, coll=10.0)
    codes = [rc for rc, _, _ in results]
    assert codes[1] != 0 and "rank 1 fails on purpose" in results[1][2]
    assert codes[0] != 0  # the surviving rank errors out of its collective instead of hanging


def _log_p(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - 1.0) / torch.tensor([0.5, 2.0, 1.0])).square().sum(-1)


def test_fit_step_under_two_ranks_equals_one_process_on_the_union_of_xi(tmp_path: Path) -> None:
    results = run_ranks("fit_step", tmp_path)
    assert all(rc == 0 for rc, _, _ in results), results
    torch.set_num_threads(1)
    torch.manual_seed(100)  # rank 0's initial weights, which fit gives every rank
    q = build("realnvp", 3, layers=2, hidden=(8,))
    before = {k: v.clone() for k, v in q.state_dict().items()}
    xi = []
    for r in range(2):  # each rank's share of the 64 draws, from its own stream
        torch.manual_seed(distributed.rank_seed(5, rank_=r))
        xi.append(q.base_sample(distributed.shard(64, world=2, rank_=r)[1]))
    opt = torch.optim.Adam([p for p in q.parameters() if p.requires_grad], lr=1e-2)
    kl_loss(q, _log_p, xi=torch.cat(xi)).backward()
    opt.step()
    sharded = torch.load(tmp_path / "fit_step.pt", weights_only=True)
    moved = False
    for key, value in q.state_dict().items():
        torch.testing.assert_close(sharded[key], value, atol=1e-6, rtol=0)
        moved |= not torch.equal(value, before[key])
    assert moved


def test_fit_resume_under_two_ranks_is_bit_for_bit_and_needs_the_same_world(
    tmp_path: Path,
) -> None:
    results = run_ranks("fit_resume", tmp_path)
    assert all(rc == 0 for rc, _, _ in results), results
    got = torch.load(tmp_path / "fit_resume.pt", weights_only=True)
    for key, value in got["whole"].items():
        assert torch.equal(value, got["resumed"][key]), key
    q = build("realnvp", 3, layers=2, hidden=(8,))
    with pytest.raises(ValueError, match="written by 2 rank"):
        fit(q, _log_p, 8, checkpoint=tmp_path / "part.pt", resume=True, progress=False)
