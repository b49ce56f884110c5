"""Collecting rollouts: one session (episode) per θ draw, per env slot.

Env slot j keeps its noise ξ_j for its whole episode (θ_j = h_φ(ξ_j) is recomputed only after an
update changes φ) and draws a fresh ξ when the episode ends. Truncated episodes are bootstrapped
from V(s_final) (see :mod:`rl.buffer`).

Under several ranks (torchrun) each rank steps its own envs; the observation statistics and the
reward scaler's statistics are merged over ranks after the rollout (exactly: :mod:`rl.envs`), and
the episode returns are gathered, so every rank reports the same returns in rank order.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
from torch import Tensor, nn

from rl.buffer import RolloutBuffer
from rl.envs import RewardScaler, RunningMeanStd, VectorEnv, check_finite
from vi_flows import distributed

__all__ = ["Collector"]


class Collector:
    """Steps a vector env with a policy family and fills a :class:`RolloutBuffer`.

    Args:
        envs: a SAME_STEP-autoreset vector env (:func:`rl.envs.make_envs`, either backend).
        policy: a policy family (:mod:`rl.policies`).
        critic: V(s).
        steps: steps per slot and rollout (T).
        seed: seed of the first reset.
        normalizer: running observation statistics, frozen during a rollout and updated after it.
        reward_scaler: optional scaling of the rewards that go into the buffer (episode returns
            are reported unscaled).
    """

    def __init__(
        self,
        envs: VectorEnv,
        policy: nn.Module,
        critic: nn.Module,
        steps: int,
        seed: int,
        normalizer: RunningMeanStd | None = None,
        reward_scaler: RewardScaler | None = None,
    ) -> None:
        self.envs, self.policy, self.critic, self.normalizer = envs, policy, critic, normalizer
        self.reward_scaler = reward_scaler
        self.num_envs = envs.num_envs
        obs_dim = int(np.prod(envs.single_observation_space.shape))
        self.buffer = RolloutBuffer(steps, self.num_envs, obs_dim, policy.head.shape)
        self.obs, _ = envs.reset(seed=seed)
        self.slot_xi = policy.new_noise(torch.arange(self.num_envs))
        self.ep_return = np.zeros(self.num_envs)
        self.ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self.recent: deque[float] = deque(maxlen=20)
        self.global_step = 0

    def _norm(self, obs: np.ndarray) -> Tensor:
        obs = obs.reshape(obs.shape[0], -1)
        if self.normalizer is not None:
            return torch.as_tensor(self.normalizer.normalize(obs))
        return torch.as_tensor(obs, dtype=torch.float32)

    @torch.no_grad()
    def collect(self) -> tuple[Tensor, list[float], list[int]]:
        """One rollout of T steps into :attr:`buffer`.

        V is evaluated after the rollout in one batched pass (the observation statistics are
        frozen during it, so this equals evaluating it step by step, and V(s_{t+1}) is not
        computed twice): V'_t = V(s_{t+1}), 0 after a termination, V(s_final) after a truncation.

        Returns:
            The session table ξ (K, noise_dim) indexed by the buffer's ``session``, and the returns
            and lengths of the episodes that ended during the rollout.
        """
        policy, n, buffer = self.policy, self.num_envs, self.buffer
        params = policy.session_params(self.slot_xi).clone()
        act = policy.actor(params)  # new sessions below rewrite rows of params in place
        table = [self.slot_xi.clone()]
        next_row = n
        returns, lengths, raw_obs = [], [], []
        # Several ranks: the reward scaler's statistics merge over ranks once per rollout.
        deferred = self.reward_scaler is not None and distributed.is_distributed()
        # Per-step outputs go into lists / numpy rows and enter the buffer once, after the loop
        # (per-step tensor writes and conversions showed up in the rollout's profile).
        rewards = np.zeros((buffer.steps, n))
        terminated = np.zeros((buffer.steps, n), dtype=bool)
        ends = np.zeros((buffer.steps, n), dtype=bool)
        sessions = np.zeros((buffer.steps, n), dtype=np.int64)
        obs_rows, action_rows, logp_rows = [], [], []
        session_now = np.arange(n)
        truncated: list[tuple[int, int, np.ndarray]] = []  # (t, slot, final observation)
        for t in range(buffer.steps):
            raw_obs.append(self.obs.reshape(n, -1))
            obs = self._norm(self.obs)
            action, logp = act(obs)
            obs_rows.append(obs)
            action_rows.append(action)
            logp_rows.append(logp)
            next_obs, reward, term, trunc, info = self.envs.step(policy.head.to_env(action))
            self.global_step += n
            reward = np.asarray(reward, dtype=np.float64)
            check_finite("reward", reward, self.global_step)
            check_finite("observation", np.asarray(next_obs), self.global_step)
            ended = np.logical_or(term, trunc)
            if trunc.any():
                for j in np.nonzero(trunc & ~term)[0]:
                    final = np.asarray(info["final_obs"][j])
                    check_finite("final observation", final[None], self.global_step, [int(j)])
                    truncated.append((t, int(j), final))
            rewards[t], terminated[t], ends[t], sessions[t] = reward, term, ended, session_now
            if self.reward_scaler is not None and not deferred:
                rewards[t] = self.reward_scaler(reward, ended)
            self.ep_return += reward
            self.ep_length += 1
            if ended.any():
                done = np.nonzero(ended)[0]
                returns += self.ep_return[done].tolist()
                lengths += self.ep_length[done].tolist()
                self.ep_return[done], self.ep_length[done] = 0.0, 0
                slots = torch.as_tensor(done)
                fresh = policy.new_noise(slots)
                self.slot_xi[slots] = fresh
                params[slots] = policy.session_params(fresh)
                table.append(fresh)
                session_now = session_now.copy()
                session_now[done] = np.arange(next_row, next_row + len(done))
                next_row += len(done)
            self.obs = next_obs
        if deferred:
            rewards = self.reward_scaler.scale_rollout(rewards, ends)
        buffer.fill(
            obs=torch.stack(obs_rows),
            actions=torch.stack(action_rows),
            logp=torch.stack(logp_rows),
            rewards=torch.from_numpy(rewards),
            terminated=torch.from_numpy(terminated),
            ends=torch.from_numpy(ends),
            session=torch.from_numpy(sessions),
        )
        self._values(truncated)
        if self.normalizer is not None:
            self.normalizer.update(np.concatenate(raw_obs))
        if distributed.is_distributed():
            returns, lengths = _gather(returns), [int(x) for x in _gather(lengths)]
        self.recent.extend(returns)
        return torch.cat(table), returns, lengths

    def _values(self, truncated: list[tuple[int, int, np.ndarray]]) -> None:
        """Fill the buffer's V(s_t) and V'_t (see :meth:`collect`) in one critic pass."""
        buffer, steps, n = self.buffer, self.buffer.steps, self.num_envs
        extra = [self._norm(self.obs)]  # s_T: the successor of the last stored step
        if truncated:
            extra.append(self._norm(np.stack([final for _, _, final in truncated])))
        states = torch.cat([buffer.obs.flatten(0, 1), *extra])
        values = self.critic(states).squeeze(-1)
        buffer.values = values[: steps * n].reshape(steps, n)
        following = values[steps * n : steps * n + n]
        next_values = torch.cat([buffer.values[1:], following[None]])
        next_values[buffer.terminated] = 0.0
        if truncated:
            rows = torch.tensor([t for t, _, _ in truncated])
            cols = torch.tensor([j for _, j, _ in truncated])
            next_values[rows, cols] = values[steps * n + n :]
        buffer.next_values = next_values

    def state_dict(self) -> dict:
        """This rank's collection state (obs, session noise, episode counters, scaler)."""
        return {
            "obs": self.obs,
            "slot_xi": self.slot_xi,
            "ep_return": self.ep_return,
            "ep_length": self.ep_length,
            "recent": list(self.recent),
            "global_step": self.global_step,
            "reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.obs, self.slot_xi = state["obs"], state["slot_xi"]
        self.ep_return, self.ep_length = state["ep_return"], state["ep_length"]
        self.recent.extend(state["recent"])
        self.global_step = int(state["global_step"])
        if self.reward_scaler is not None:
            self.reward_scaler.load_state_dict(state["reward_scaler"])


def _gather(values: list) -> list[float]:
    """``values`` of every rank, concatenated in rank order."""
    local = torch.tensor(values, dtype=torch.float64).reshape(-1)
    return distributed.all_gather_cat(local).tolist()
