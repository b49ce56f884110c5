"""GAE against hand-computed values and the collector against environments with known returns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rl.buffer import gae
from rl.envs import make_envs
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
