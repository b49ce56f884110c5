"""GAE against hand-computed values and the collector against environments with known returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rl.buffer import Batch, gae
from rl.envs import RewardScaler, make_envs
from rl.policies import BNNPolicy
from rl.rollout import Collector
from rl.testing import register

register()


class ConstantCritic(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.full((obs.shape[0], 1), self.value)


def test_gae_hand_computed_with_termination_and_truncation_bootstrap():
    g, lam = 0.9, 0.5
    # One slot, 4 steps: episode A = steps 0-1 truncated at 1 (bootstrap V(s_final)=2.0),
    # episode B = steps 2-3, terminated at 3.
    r = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    v = torch.tensor([[0.5], [1.0], [1.5], [0.2]])
    v_next = torch.tensor([[1.0], [2.0], [0.2], [0.0]])
    ends = torch.tensor([[False], [True], [False], [True]])
    adv = gae(r, v, v_next, ends, g, lam).flatten()
    d1 = 2.0 + g * 2.0 - 1.0
    d0 = 1.0 + g * 1.0 - 0.5
    d3 = 4.0 - 0.2
    d2 = 3.0 + g * 0.2 - 1.5
    expected = [d0 + g * lam * d1, d1, d2 + g * lam * d3, d3]
    assert adv.tolist() == pytest.approx(expected)


def test_gae_equals_the_tensor_recursion_bit_for_bit():
    """The numpy recursion is the plain tensor loop, float32 arithmetic unchanged."""
    torch.manual_seed(0)
    t, n, gamma, lam = 50, 4, 0.99, 0.95
    rewards, values, following = torch.randn(t, n), torch.randn(t, n), torch.randn(t, n)
    ends = torch.rand(t, n) < 0.1
    expected = torch.zeros(t, n)
    running = torch.zeros(n)
    for i in range(t - 1, -1, -1):
        delta = rewards[i] + gamma * following[i] - values[i]
        running = delta + gamma * lam * (~ends[i]).float() * running
        expected[i] = running
    assert torch.equal(gae(rewards, values, following, ends, gamma, lam), expected)


def test_gae_lambda_one_is_discounted_return_minus_value():
    r = torch.ones(5, 1)
    v = torch.full((5, 1), 0.3)
    v_next = torch.cat([v[1:], torch.tensor([[0.7]])])  # the rollout ends mid-episode
    adv = gae(r, v, v_next, torch.zeros(5, 1, dtype=torch.bool), 0.9, 1.0).flatten()
    expected = [sum(0.9**k for k in range(5 - t)) + 0.9 ** (5 - t) * 0.7 - 0.3 for t in range(5)]
    assert adv.tolist() == pytest.approx(expected)


def _collect(env_id: str, value: float, gamma: float):
    envs = make_envs(env_id, 2, seed=0)
    policy = BNNPolicy(1, envs.single_action_space, hidden=(4,), posterior="gaussian")
    collector = Collector(envs, policy, ConstantCritic(value), steps=6, seed=0)
    xi, returns, lengths = collector.collect()
    batch = collector.buffer.batch(xi, gamma, 1.0, normalize_advantages=False)
    return collector, xi, batch, returns, lengths


@pytest.mark.parametrize("env_id, bootstrap", [("CountTerm-v0", False), ("CountTrunc-v0", True)])
def test_collector_returns_match_known_returns(env_id, bootstrap):
    gamma, c = 0.5, 10.0
    _, _, batch, returns, lengths = _collect(env_id, c, gamma)
    assert returns == [3.0] * 4 and lengths == [3] * 4
    # Time-major (T=6, N=2): steps 0-2 and 3-5 of each slot are whole episodes.
    targets = batch.returns.reshape(6, 2)[:, 0]
    for t in range(6):
        left = 3 - t % 3
        expected = sum(gamma**k for k in range(left)) + (gamma**left * c if bootstrap else 0.0)
        assert float(targets[t]) == pytest.approx(expected)


def test_sessions_keep_theta_for_an_episode_then_resample():
    collector, xi, batch, _, _ = _collect("CountTerm-v0", 0.0, 0.9)
    session = batch.session.reshape(6, 2)
    # Each slot's session is constant within an episode and changes exactly at episode starts.
    for j in range(2):
        assert session[0, j] == session[2, j] != session[3, j] == session[5, j]
    assert len(torch.unique(batch.session)) == 4 == xi.shape[0] - 2  # 2 fresh sessions pending
    assert not torch.allclose(xi[session[0, 0]], xi[session[3, 0]])
    # The slots keep their newest noise for the next rollout.
    assert torch.equal(collector.slot_xi, xi[-2:])


def test_reward_scaler_divides_by_running_std_of_discounted_return():
    gamma = 0.9
    scaler = RewardScaler(num_envs=2, gamma=gamma)
    rng = np.random.default_rng(0)
    rewards = rng.normal(3.0, 2.0, size=(40, 2))
    ends = np.zeros((40, 2), dtype=bool)
    ends[9, 0] = ends[25, 1] = True
    running, seen = np.zeros(2), []
    for r, e in zip(rewards, ends, strict=True):
        out = scaler(r, e)
        running = gamma * running + r
        seen += running.tolist()
        running[e] = 0.0
        # Same statistics as a direct computation (the 1e-4 prior count is negligible), clipped
        # to ±10 (which only bites on the first steps, while the variance is tiny).
        expected = np.clip(r / np.sqrt(np.var(seen) + 1e-8), -10, 10)
        assert out == pytest.approx(expected, rel=1e-3)
    fresh = RewardScaler(2, gamma)
    fresh.load_state_dict(scaler.state_dict())
    r = np.array([1.0, -2.0])
    assert np.array_equal(fresh(r, ends[0]), scaler(r, ends[0]))


def test_collector_scales_buffer_rewards_but_reports_raw_returns():
    envs = make_envs("CountTerm-v0", 2, 0)
    policy = BNNPolicy(1, envs.single_action_space, hidden=(4,), posterior="gaussian")
    scaler = RewardScaler(2, gamma=0.5)
    collector = Collector(envs, policy, ConstantCritic(0.0), 6, 0, reward_scaler=scaler)
    _, returns, _ = collector.collect()
    assert returns == [3.0] * 4
    stored = collector.buffer.rewards
    # Discounted returns in an episode are 1, 1.5, 1.75: rewards are 1/std, not 1.
    assert not torch.allclose(stored, torch.ones_like(stored))
    expected = 1 / np.sqrt(scaler.stats.var + 1e-8)
    assert stored[-1].tolist() == pytest.approx([expected] * 2, rel=1e-5)


class ObsCritic(nn.Module):
    """V(s) = s for the counting envs (observation [t]): shows which state each value is of."""

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return obs[:, :1].clone()


@pytest.mark.parametrize("env_id, final_value", [("CountTerm-v0", 0.0), ("CountTrunc-v0", 3.0)])
def test_values_are_of_the_right_states(env_id, final_value):
    envs = make_envs(env_id, 2, seed=0)
    policy = BNNPolicy(1, envs.single_action_space, hidden=(4,), posterior="gaussian")
    collector = Collector(envs, policy, ObsCritic(), steps=6, seed=0)
    collector.collect()
    buf = collector.buffer
    # Episodes of 3 steps: states 0, 1, 2, then a new episode from 0.
    assert buf.values[:, 0].tolist() == [0, 1, 2, 0, 1, 2]
    # V'_t: the next state's value in the episode; at its end 0 (termination) or V(s_final) = 3
    # (truncation), never the value of the next episode's first state.
    f = final_value
    assert buf.next_values[:, 0].tolist() == [1, 2, f, 1, 2, f]
    assert torch.equal(buf.values[:, 0], buf.values[:, 1])


def test_last_step_bootstraps_from_the_state_after_the_rollout():
    envs = make_envs("CountTerm-v0", 1, seed=0)
    policy = BNNPolicy(1, envs.single_action_space, hidden=(4,), posterior="gaussian")
    collector = Collector(envs, policy, ObsCritic(), steps=4, seed=0)
    collector.collect()  # states 0, 1, 2 | 0: the rollout stops inside the second episode
    assert collector.buffer.next_values[:, 0].tolist() == [1, 2, 0, 1]


def test_check_finite_names_the_vector_slot():
    from rl.envs import check_finite

    check_finite("final observation", np.zeros((1, 3)), 7, [5])  # finite: no error
    with pytest.raises(FloatingPointError, match=r"env step 7 \(vector slots \[5\]\)"):
        check_finite("final observation", np.array([[0.0, np.nan, 1.0]]), 7, [5])
    with pytest.raises(FloatingPointError, match=r"slots \[1\]"):
        check_finite("reward", np.array([0.0, np.inf]), 3)


def _session_batch(sessions: list[int], table: int, noise_dim: int = 3) -> Batch:
    m = len(sessions)
    return Batch(
        obs=torch.randn(m, 2),
        actions=torch.randn(m, 1),
        logp=torch.randn(m),
        advantages=torch.randn(m),
        returns=torch.randn(m),
        values=torch.randn(m),
        session=torch.tensor(sessions),
        xi=torch.randn(table, noise_dim),
    )


def test_subset_keeps_only_the_sessions_it_holds_each_sample_keeping_its_noise():
    batch = _session_batch([0, 0, 1, 2, 3, 3, 4, 5], table=7)  # session 6 has no sample at all
    rows = torch.tensor([5, 0, 3, 7])  # sessions 3, 0, 2, 5
    mb = batch.subset(rows)
    assert mb.xi.shape[0] == 4  # 1, 4 and 6 are cut
    assert torch.equal(mb.xi[mb.session], batch.xi[batch.session[rows]])
    assert torch.equal(mb.obs, batch.obs[rows])
    assert sorted(mb.session.tolist()) == [0, 1, 2, 3]  # renumbered into the cut table
    assert mb.session.dtype == torch.long


def test_subset_with_every_session_present_or_no_noise_keeps_the_table():
    batch = _session_batch([0, 1, 2, 0], table=3)
    assert batch.subset(torch.tensor([2, 1, 0])).xi is batch.xi
    point = _session_batch([0, 1, 2, 0], table=3, noise_dim=0)  # a point mass: ξ has no entries
    mb = point.subset(torch.tensor([0]))
    assert mb.xi is point.xi and torch.equal(mb.session, torch.tensor([0]))
