"""The throughput benchmark compares the same work: rl/'s rows against SB3 PPO's defaults."""

from __future__ import annotations

import inspect

import pytest

from benchmarks.rl.throughput_one import N_ENVS, N_STEPS, SB3_EPOCHS, SB3_MINIBATCH, rl_config


@pytest.mark.parametrize("algo", ["ppo", "vppo"])
def test_rl_rows_do_sb3_ppos_work_critic_included(algo):
    cfg = rl_config("Pendulum-v1", algo, steps=20_480, seed=0)
    assert (cfg.num_envs, cfg.rollout_steps) == (N_ENVS, N_STEPS)
    # SB3's joint loss steps its value network on every policy minibatch.
    assert cfg.epochs == cfg.value_epochs == SB3_EPOCHS
    assert cfg.minibatch_size == cfg.value_minibatch_size == SB3_MINIBATCH
    assert (tuple(cfg.hidden), cfg.activation) == ((64, 64), "tanh")


def test_the_epochs_are_sb3_ppos_default():
    sb3 = pytest.importorskip("stable_baselines3")
    assert inspect.signature(sb3.PPO.__init__).parameters["n_epochs"].default == SB3_EPOCHS


def test_paired_ratio_follows_each_repeats_sb3_run(monkeypatch, tmp_path):
    """The host slows down between runs: SB3 runs at 1000, 500 and 600 steps/s in the three
    repeats, PPO at 1.5× SB3 except in repeat 1, where it ran before the slowdown. The ratio of
    medians says 2.5×; the paired ratio's median says 1.5× and its range shows the outlier."""
    import benchmarks.rl.throughput as throughput

    sb3 = {0: 1000.0, 1: 500.0, 2: 600.0}
    ppo = {0: 1500.0, 1: 1500.0, 2: 900.0}

    def run_one(env_id, method, steps, seed):
        return {"steps_per_s": {"sb3-ppo": sb3, "ppo": ppo}.get(method, sb3)[seed]}

    monkeypatch.setattr(throughput, "_run_one", run_one)
    monkeypatch.setattr(throughput, "has_envpool", lambda: False)
    monkeypatch.setattr(throughput, "has_mujoco", lambda: False)
    rows = throughput.throughput(tmp_path, quick=True)
    row = next(r for r in rows if r["env"] == "Pendulum-v1" and r["method"] == "ppo")
    assert row["ratio_to_sb3_ppo"] == pytest.approx(2.5)
    assert row["median_paired_ratio"] == pytest.approx(1.5)
    assert (row["paired_ratio_min"], row["paired_ratio_max"]) == pytest.approx((1.5, 3.0))
    assert (
        "| Pendulum-v1 | ppo | 1500 | 2.50 | 1.50 (1.50–3.00) |"
        in (tmp_path / "throughput.md").read_text()
    )


def test_update_cost_times_every_phase_of_both_runs_and_restores_batch_subset(tmp_path):
    from benchmarks.rl.update_cost import PHASES, update_cost
    from rl.buffer import Batch

    original = Batch.subset
    rows = update_cost(tmp_path, quick=True, cycles=1, warmup=0)
    assert Batch.subset is original
    names = [r["phase"] for r in rows]
    assert names == [*PHASES, "cycle", "aten ops per step", "autograd nodes per step"]
    by_name = dict(zip(names, rows, strict=True))
    # PPO has no dual step; V-PPO takes one after every optimizer step
    assert by_name["dual"]["ppo_ms"] == 0.0 < by_name["dual"]["vppo_ms"]
    assert by_name["step"]["ppo_ms"] > 0.0 and by_name["loss"]["vppo_ms"] > 0.0
    # the flow's nodes (affine map, log-det) come on top of PPO's graph
    nodes = by_name["autograd nodes per step"]
    assert nodes["vppo_count"] > nodes["ppo_count"] > 0
    assert "| dual | 0.0 |" in (tmp_path / "update-cost.md").read_text()
