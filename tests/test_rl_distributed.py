"""RL under several ranks: 2 gloo ranks spawned on localhost by the test itself (bounded time).

What is checked: one V-PPO update under 2 ranks equals one process's update on the concatenated
batch (to 1e-6); merged observation/reward statistics equal those of the concatenated data; a
2-rank run resumed from its checkpoint continues bit for bit; a resume with another number of
ranks is refused in one line; a rank that raises brings the job down instead of hanging.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import _ranks  # noqa: I001  (tests/_ranks.py, the rank launcher)
import numpy as np
import pytest
import torch
import torch.distributed as dist

from rl.buffer import Batch, RolloutBuffer
from rl.checkpoint import from_plain
from rl.cli import main
from rl.envs import RewardScaler, RunningMeanStd
from rl.run import Run, saved_config
from vi_flows import runfiles

WORKER = Path(__file__).with_name("_rl_dist_worker.py")
pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)


def run_ranks(*args: str, world: int = 2, timeout: float = 150.0) -> list[tuple[int, str, str]]:
    """Start ``world`` ranks of ``_rl_dist_worker.py ARGS`` and wait; their (code, out, err)."""
    return _ranks.run_ranks(WORKER, *args, world=world, timeout=timeout)


def _ok(results) -> None:
    assert all(code == 0 for code, _, _ in results), "\n".join(err for _, _, err in results)


def _reference_batch(parts: list[dict], cfg) -> Batch:
    """The concatenated batch (rank order) as one process would build it from the rollouts."""
    batches = []
    for part in parts:
        ro = part["rollout"]
        buf = RolloutBuffer(ro["obs"].shape[0], ro["obs"].shape[1], ro["obs"].shape[2], ())
        buf.fill(**ro)  # terminated stays zero: only the collector reads it
        batches.append(buf.batch(part["xi"], cfg.gamma, cfg.gae_lambda, False))
    offsets = np.cumsum([0] + [b.xi.shape[0] for b in batches[:-1]])
    adv = torch.cat([b.advantages for b in batches])
    return Batch(
        obs=torch.cat([b.obs for b in batches]),
        actions=torch.cat([b.actions for b in batches]),
        logp=torch.cat([b.logp for b in batches]),
        advantages=(adv - adv.mean()) / (adv.std() + 1e-8),
        returns=torch.cat([b.returns for b in batches]),
        values=torch.cat([b.values for b in batches]),
        session=torch.cat([b.session + int(o) for b, o in zip(batches, offsets, strict=True)]),
        xi=torch.cat([b.xi for b in batches]),
    )


#: "minibatch_size=2" makes minibatches of 2: about half of them hold no sample of one rank.
#: target_kl=1e-9 ends the update after its first epoch, on every rank alike.
#: value_minibatch_size=48 (the policy's): the critic's epochs share its minibatches and backward.
ALGOS = [
    "vppo",
    "vtrpo",
    "trpo",
    "svpg",
    "vppo:minibatch_size=2",
    "vppo:target_kl=1e-9",
    "vppo:value_minibatch_size=48",
]


@pytest.fixture(scope="module")
def updates(tmp_path_factory) -> Path:
    """One 2-rank job that makes one update of each algorithm in :data:`ALGOS`."""
    out = tmp_path_factory.mktemp("updates")
    _ok(run_ranks("update", str(out), *ALGOS))
    return out


@pytest.mark.parametrize("algo", ALGOS)
def test_one_update_equals_the_single_process_update_on_the_concatenated_batch(algo, updates):
    """V-PPO (the issue's case), V-TRPO (all-reduced Fisher-vector products and line search),
    TRPO with the score Fisher, SVPG (all-reduced particle scores), and V-PPO with minibatches
    so small that a rank's share is often empty."""
    tmp_path = updates / algo
    parts = [torch.load(tmp_path / f"u{r}.pt", weights_only=True) for r in range(2)]
    # The ranks drew different ξ and episodes (rank-aware seeds) but hold the same networks.
    assert not torch.equal(parts[0]["xi"], parts[1]["xi"])
    assert not torch.equal(parts[0]["rollout"]["obs"], parts[1]["rollout"]["obs"])
    for key, value in parts[0]["after"]["policy"].items():
        assert torch.equal(value, parts[1]["after"]["policy"][key]), key
    s0, s1 = parts[0]["after"]["stats"], parts[1]["after"]["stats"]
    assert s0.keys() == s1.keys()
    assert all(s0[k] == s1[k] or (math.isnan(s0[k]) and math.isnan(s1[k])) for k in s0), (s0, s1)
    if "target_kl" in algo:  # the guard fired: both ranks stopped after the first epoch
        assert s0["step_frac"] == s1["step_frac"] < 1.0

    torch.set_num_threads(1)
    cfg = saved_config(tmp_path)  # the workers' config
    run = Run(cfg)
    try:
        before = parts[0]["before"]
        for key, value in run.policy.state_dict().items():  # rank 0 = one process's init
            assert torch.equal(value, before["policy"][key]), key
        run.algo.generator.set_state(before["algo_generator"])
        stats = run.algo.update(_reference_batch(parts, cfg), 0.1)
        moved = False
        for name, module in (("policy", run.policy), ("critic", run.critic)):
            for key, value in module.state_dict().items():
                got = parts[0]["after"][name][key]
                torch.testing.assert_close(got, value, atol=1e-6, rtol=0, msg=f"{name}.{key}")
                moved |= not torch.equal(value, before[name][key]) if name == "policy" else False
        assert moved  # the update did change the policy
        for key in ("kl", "entropy", "clipfrac", "explained_variance", "value_loss", "step_frac"):
            if key in stats and stats[key] == stats[key]:
                assert abs(stats[key] - s0[key]) < 1e-5, key
    finally:
        run.envs.close()


def test_merged_normalisation_statistics_equal_those_of_the_concatenated_data(tmp_path):
    _ok(run_ranks("moments", str(tmp_path)))
    parts = [torch.load(tmp_path / f"m{r}.pt", weights_only=True) for r in range(2)]
    rms = RunningMeanStd((3,))
    rms.update(torch.cat([p["x"] for p in parts]).numpy())
    for part in parts:
        for key, value in rms.state_dict().items():
            np.testing.assert_allclose(part["rms"][key].numpy(), value, rtol=1e-12, atol=1e-12)
    # The reward scaler: one process with both ranks' slots side by side, stepped one by one.
    rewards = torch.cat([p["rewards"] for p in parts], 1).numpy()
    ended = torch.cat([p["ended"] for p in parts], 1).numpy()
    scaler = RewardScaler(6, 0.9)
    scaled = np.stack([scaler(rewards[t], ended[t]) for t in range(len(rewards))])
    np.testing.assert_allclose(
        torch.cat([p["scaled"] for p in parts], 1).numpy(), scaled, rtol=1e-12, atol=1e-12
    )
    for part in parts:
        for key in ("mean", "var", "count"):
            np.testing.assert_allclose(
                part["scaler"][key].numpy(), scaler.state_dict()[key], rtol=1e-12
            )


def _rows(out: Path) -> list[dict]:
    with (out / "progress.csv").open() as f:
        return [
            {k: v for k, v in r.items() if k not in {"wall_time", "sps"}} for r in csv.DictReader(f)
        ]


def _cli(run_dir: Path, updates: int, *extra: str) -> list[str]:
    return [
        "cli",
        str(run_dir),
        "train",
        "--env",
        "Pendulum-v1",
        "--steps",
        str(128 * updates),
        "--out",
        str(run_dir),
        "--quiet",
        "--set",
        "num_envs=2",
        "--set",
        "rollout_steps=64",
        "--set",
        "hidden=16",
        "--set",
        "normalize_obs=true",
        "--set",
        "normalize_reward=true",
        "--set",
        "minibatch_size=48",
        "--set",
        "epochs=2",
        "--set",
        "checkpoint_every=1",
        "--set",
        "tensorboard=false",
        # Pendulum's preset decays lr over --steps, which the resume below extends.
        "--set",
        "anneal_lr=false",
        *extra,
    ]


def test_resume_under_two_ranks_continues_bit_for_bit_and_other_world_sizes_are_refused(
    tmp_path, capsys
):
    a, b = tmp_path / "a", tmp_path / "b"
    _ok(run_ranks(*_cli(a, 4)))  # `vi-rl train` under 2 ranks, no new flags
    _ok(run_ranks(*_cli(b, 2)))
    _ok(run_ranks(*_cli(b, 4, "--resume")))
    sa, sb = (from_plain(runfiles.load(d / "checkpoint.pt")) for d in (a, b))
    assert sa["world_size"] == sb["world_size"] == 2 and sb["update"] == 4
    for key in sa["policy"]:
        assert torch.equal(sa["policy"][key], sb["policy"][key]), key
    for key in sa["critic"]:
        assert torch.equal(sa["critic"][key], sb["critic"][key]), key
    for r in range(2):  # each rank's own envs and RNG were saved and restored
        assert torch.equal(sa["ranks"][r]["torch_rng"], sb["ranks"][r]["torch_rng"])
    assert not torch.equal(sa["ranks"][0]["torch_rng"], sa["ranks"][1]["torch_rng"])
    rows_a, rows_b = _rows(a), _rows(b)
    assert rows_a == rows_b and len(rows_a) == 4
    assert int(rows_a[-1]["env_steps"]) == 4 * 128 * 2  # env steps of both ranks
    # One process cannot resume a 2-rank run: one line, exit status 2.
    capsys.readouterr()
    assert main(_cli(b, 6, "--resume")[2:]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "written by 2 rank(s) but this job has 1" in err and "--nproc_per_node 2" in err
    assert main(["eval", str(a), "--episodes", "1"]) == 0  # evaluation needs no ranks


def test_a_failing_rank_brings_the_training_job_down(tmp_path):
    results = run_ranks("fail", str(tmp_path), str(tmp_path / "run"), timeout=120.0)
    assert results[1][0] != 0 and "rank 1 fails on purpose" in results[1][2]
    assert results[0][0] != 0  # rank 0 errors out of its next collective instead of hanging
