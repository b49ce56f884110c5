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

    order: dict[int, list[str]] = {}

    def run_one(env_id, method, steps, seed):
        if env_id == "Pendulum-v1":
            order.setdefault(seed, []).append(method)
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
    # every repeat runs every method once, in an order rotated by one each repeat
    assert order[1] == order[0][1:] + order[0][:1] and sorted(order[2]) == sorted(order[0])


class _Ticks:
    """A clock that advances 1 ms per reading: a phase timed around calls that read no clock
    themselves takes exactly 1 ms per call, so the table counts calls, not host speed."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1e-3
        return self.now


def test_update_cost_times_every_phase_of_both_runs_and_restores_batch_minibatches(
    tmp_path, monkeypatch
):
    import benchmarks.rl.update_cost as module
    from benchmarks.rl.update_cost import PHASES, update_cost
    from rl.buffer import Batch

    monkeypatch.setattr(module, "time", _Ticks())
    original = Batch.minibatches
    rows = update_cost(tmp_path, quick=True, cycles=1, warmup=0)
    assert Batch.minibatches is original
    names = [r["phase"] for r in rows]
    assert names == [*PHASES, "cycle", "aten ops per step", "autograd nodes per step"]
    by_name = dict(zip(names, rows, strict=True))
    # one gradient computation and one step per minibatch: 10 epochs × 8 minibatches of 2,048
    # samples (both runs take the written-out path, rl.written_out)
    for algo in ("ppo", "vppo"):
        assert by_name["gradients"][f"{algo}_ms"] == pytest.approx(80.0)
        assert by_name["step"][f"{algo}_ms"] == pytest.approx(80.0)
        # each minibatch's cut, and each epoch's last call that finds none left
        assert by_name["subset"][f"{algo}_ms"] == pytest.approx(90.0)
    # PPO has no dual step; V-PPO takes one after every optimizer step
    assert by_name["dual"]["ppo_ms"] == 0.0
    assert by_name["dual"]["vppo_ms"] == pytest.approx(80.0)
    # the written-out step records no autograd node; V-PPO's per-session work adds operators
    nodes, ops = by_name["autograd nodes per step"], by_name["aten ops per step"]
    assert nodes["vppo_count"] == nodes["ppo_count"] == 0
    assert ops["vppo_count"] > ops["ppo_count"] > 0
    assert "| dual | 0.0 |" in (tmp_path / "update-cost.md").read_text()


def test_step_floor_writes_both_rows(tmp_path):
    from benchmarks.rl.step_floor import step_floor

    rows = step_floor(tmp_path, quick=True, reps=2)
    assert [r["method"] for r in rows] == ["ppo", "vppo"]
    assert rows[0]["sessions K"] == 1 < rows[1]["sessions K"]
    assert all(float(r["max rel. grad difference"]) < 1e-4 for r in rows)
    assert "V-PPO over PPO" in (tmp_path / "step-floor.md").read_text()
