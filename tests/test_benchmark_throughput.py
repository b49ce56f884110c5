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


def test_update_cost_times_every_phase_of_both_runs_and_restores_batch_subset(
    tmp_path, monkeypatch
):
    import benchmarks.rl.update_cost as module
    from benchmarks.rl.update_cost import PHASES, update_cost
    from rl.buffer import Batch

    monkeypatch.setattr(module, "time", _Ticks())
    original = Batch.subset
    rows = update_cost(tmp_path, quick=True, cycles=1, warmup=0)
    assert Batch.subset is original
    names = [r["phase"] for r in rows]
    assert names == [*PHASES, "cycle", "aten ops per step", "autograd nodes per step"]
    by_name = dict(zip(names, rows, strict=True))
    # one loss and one joint step per minibatch: 10 epochs × 8 minibatches of 2,048 samples
    for algo in ("ppo", "vppo"):
        assert by_name["loss"][f"{algo}_ms"] == pytest.approx(80.0)
        assert by_name["step"][f"{algo}_ms"] == pytest.approx(80.0)
    # PPO has no dual step; V-PPO takes one after every optimizer step
    assert by_name["dual"]["ppo_ms"] == 0.0
    assert by_name["dual"]["vppo_ms"] == pytest.approx(80.0)
    # the flow's nodes (affine map, log-det) come on top of PPO's graph
    nodes = by_name["autograd nodes per step"]
    assert nodes["vppo_count"] > nodes["ppo_count"] > 0
    assert "| dual | 0.0 |" in (tmp_path / "update-cost.md").read_text()


@pytest.mark.parametrize("algo, activation", [("ppo", "tanh"), ("vppo", "tanh"), ("vppo", "relu")])
def test_step_floors_hand_gradients_are_the_library_losss(algo, activation):
    """The floor computes the same gradients as autograd on the library's loss (policy + value),
    and the check would see a different loss (a wrong α moves ρ's gradient; a wrong clip ε the
    surrogate's)."""
    import dataclasses

    import torch

    from benchmarks.rl.step_floor import _library_gradients, hand_gradients
    from rl.run import Run

    torch.manual_seed(0)
    cfg = dataclasses.replace(rl_config("Pendulum-v1", algo, 10**6, seed=0), activation=activation)
    run = Run(cfg)
    try:
        batch, _ = run.collect()
    finally:
        run.envs.close()
    mb = next(iter(batch.minibatches(256, torch.Generator().manual_seed(0))))
    with torch.no_grad():  # move off the initial point: ratios ≠ 1, so clipping bites
        for p in run.policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    # α at the run's start (auto α's α₀ = 1e-3: the surrogate's share of ρ's gradient is ~3%,
    # so the check below sees it) and a larger one
    for alpha in (run.temperature(0), 0.3) if run.policy.has_kl_term else (1.0,):
        want = _library_gradients(run, mb, alpha, 0.2)
        for got, ref in zip(hand_gradients(run, mb, alpha, 0.2), want, strict=True):
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)
        off = hand_gradients(run, mb, alpha, 0.05)
        assert not all(
            torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(off, want, strict=True)
        )
        if run.policy.has_kl_term:
            raw = hand_gradients(run, mb, 2 * alpha, 0.2)[1]
            assert not torch.allclose(raw, want[1], rtol=1e-4, atol=1e-6)


def test_step_floor_refuses_what_it_does_not_write_out():
    import dataclasses

    from benchmarks.rl.step_floor import _check_supported
    from rl.run import Run

    for algo, change in [("vppo", {"objective": "kl-penalty"}), ("ppo", {"max_grad_norm": 0.0})]:
        cfg = dataclasses.replace(rl_config("Pendulum-v1", algo, 10**6, seed=0), **change)
        run = Run(cfg)
        try:
            with pytest.raises(ValueError, match="step-floor"):
                _check_supported(run)
        finally:
            run.envs.close()


def test_step_floor_writes_both_rows(tmp_path):
    from benchmarks.rl.step_floor import step_floor

    rows = step_floor(tmp_path, quick=True, reps=2)
    assert [r["method"] for r in rows] == ["ppo", "vppo"]
    assert rows[0]["sessions K"] == 1 < rows[1]["sessions K"]
    assert all(float(r["max rel. grad difference"]) < 1e-4 for r in rows)
    assert "V-PPO over PPO" in (tmp_path / "step-floor.md").read_text()
