"""The one rollout buffer and generalised advantage estimation (Schulman et al. 2016).

Storage is time-major, (T, N) for T steps of N vector-env slots. For every step t the collector
stores V(s_t) and V'_t, the value of the *successor state within the same episode*:

* V'_t = V(s_{t+1}) while the episode goes on,
* V'_t = 0 when the episode terminated at t (absorbing state),
* V'_t = V(s_final) when it was truncated at t (time limit): the bootstrap for truncation.

Then, with end_t = terminated_t or truncated_t,

.. math::

    δ_t = r_t + γ V'_t − V(s_t), \\qquad Â_t = δ_t + γ λ (1 − end_t) Â_{t+1},

and Â past the last stored step is 0 (its V'_{T−1} already bootstraps the unfinished episode).
The value target is R̂_t = Â_t + V(s_t).

Under several ranks (torchrun) each rank holds its own rollout; together they form the *global
batch*, the concatenation of the ranks' batches in rank order. Advantages are normalised with the
global batch's mean and standard deviation, and :meth:`Batch.minibatches` draws one permutation
of the global batch from a generator that every rank keeps in step (same seed, same draws): each
rank takes the rows of each global minibatch that it holds. So the minibatches are exactly those
one process would draw from the concatenated batch; a rank's share of a minibatch varies (it may
even be empty) and the losses weight it by global counts (:mod:`rl.algorithms.base`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor

from vi_flows import distributed

__all__ = ["gae", "Batch", "RolloutBuffer", "global_mean_std"]


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    episode_ends: Tensor,
    gamma: float,
    lam: float,
) -> Tensor:
    """Generalised advantage estimates Â of shape (T, N) (see the module docstring).

    >>> one = torch.ones(3, 1)
    >>> gae(one, 0 * one, 0 * one, torch.zeros(3, 1, dtype=torch.bool), 0.5, 1.0).flatten()
    tensor([1.7500, 1.5000, 1.0000])
    """
    deltas = rewards + gamma * next_values - values
    decay = gamma * lam * (~episode_ends).to(rewards.dtype)
    # The backward recursion runs over numpy rows: the same float32 arithmetic as torch's, about
    # 8× faster than indexing tensors T times.
    d, c = deltas.detach().cpu().numpy(), decay.detach().cpu().numpy()
    adv = np.empty_like(d)
    running = np.zeros_like(d[0])
    for t in range(d.shape[0] - 1, -1, -1):
        running = d[t] + c[t] * running
        adv[t] = running
    return torch.from_numpy(adv).to(rewards.device)


@dataclass
class Batch:
    """A flattened rollout of M = T·N samples, ready for an update.

    ``session[i]`` indexes ``xi``: sample i was collected under θ = h_φ(ξ_session[i]) (one session
    = one episode in one slot, or the part of it inside this rollout).
    """

    obs: Tensor
    """Normalised observations (M, obs_dim)."""
    actions: Tensor
    """Actions as sampled, before clipping to the action bounds (M,) or (M, act_dim)."""
    logp: Tensor
    """Behaviour log π(a|s) at collection time (M,)."""
    advantages: Tensor
    """GAE advantages Â (M,), normalised when the config asks for it."""
    returns: Tensor
    """Value targets Â + V(s) (M,), from the unnormalised advantages."""
    values: Tensor
    """V(s) at collection time (M,)."""
    session: Tensor
    """Session index into ``xi`` (M,), long."""
    xi: Tensor
    """Base noise of each session (K, noise_dim)."""

    def __len__(self) -> int:
        return self.obs.shape[0]

    def subset(self, rows: Tensor) -> Batch:
        """The samples ``rows``, with the session table cut to the sessions they hold.

        A minibatch of short episodes holds a fraction of the rollout's sessions (DeepSea's
        10-step episodes: ~150 of ~200 in 256 samples of 2 048), and every θ row costs a d-vector
        through the flow and back, so only the sessions present are kept (``session`` is
        renumbered into the cut table, in the table's order: all present → the same batch).
        """
        # index_select: the same copy as ``tensor[rows]`` at half its per-call cost (~2 µs).
        per_sample = {
            f.name: getattr(self, f.name).index_select(0, rows)
            for f in fields(self)
            if f.name != "xi"
        }
        if self.xi.shape[-1] == 0:  # a point mass: the table holds no noise to cut
            return replace(self, **per_sample)
        num = self.xi.shape[0]
        # numpy for the few hundred indices of a minibatch: ~1 µs a call where torch's kernels
        # cost ~10 µs each, and this runs once per minibatch
        session = per_sample["session"].cpu().numpy()
        counts = np.bincount(session, minlength=num)
        if counts.all():  # every session present: keep the table
            return replace(self, **per_sample)
        present = np.flatnonzero(counts)
        renumber = np.cumsum(counts > 0, dtype=np.int64) - 1
        device = self.xi.device
        per_sample["session"] = torch.from_numpy(renumber[session]).to(device)
        present_rows = torch.from_numpy(present).to(device)
        return replace(self, **per_sample, xi=self.xi.index_select(0, present_rows))

    def minibatches(self, size: int, generator: torch.Generator) -> Iterator[Batch]:
        """Shuffled minibatches of ``size`` samples (the last one may be smaller): the
        :meth:`minibatch_rows` of this batch, as batches."""
        for rows in self.minibatch_rows(size, generator):
            yield self.subset(rows)

    def minibatch_rows(self, size: int, generator: torch.Generator) -> Iterator[Tensor]:
        """The rows of each shuffled minibatch of ``size`` samples (for a loss that needs a few
        fields only; :meth:`minibatches` indexes them all).

        Under several ranks: this rank's rows of each minibatch of the global batch (see the
        module docstring), in the order the global permutation lists them.
        """
        if not distributed.is_distributed():
            order = torch.randperm(len(self), generator=generator)
            for start in range(0, len(self), size):
                yield order[start : start + size]
            return
        sizes = distributed.all_gather_cat(torch.tensor([len(self)]))
        offset, total = int(sizes[: distributed.rank()].sum()), int(sizes.sum())
        order = torch.randperm(total, generator=generator)
        for start in range(0, total, size):
            rows = order[start : start + size]
            yield rows[(rows >= offset) & (rows < offset + len(self))] - offset


class RolloutBuffer:
    """Time-major storage of T steps × N slots and the GAE that turns it into a :class:`Batch`."""

    def __init__(self, steps: int, num_envs: int, obs_dim: int, act_shape: tuple[int, ...]):
        self.steps, self.num_envs = steps, num_envs
        shape = (steps, num_envs)
        self.obs = torch.zeros(*shape, obs_dim)
        self.actions = torch.zeros(*shape, *act_shape)
        self.logp = torch.zeros(shape)
        self.rewards = torch.zeros(shape)
        self.values = torch.zeros(shape)
        self.next_values = torch.zeros(shape)
        self.ends = torch.zeros(shape, dtype=torch.bool)
        self.terminated = torch.zeros(shape, dtype=torch.bool)
        self.session = torch.zeros(shape, dtype=torch.long)
        self.t = 0

    def fill(self, **rollout: Tensor) -> None:
        """Store whole-rollout fields, each (T, N, ...), at once (cast to the buffer's dtypes);
        the fields not given keep their contents. The buffer then holds T steps."""
        for name, value in rollout.items():
            getattr(self, name).copy_(value)
        self.t = self.steps

    def batch(
        self, xi: Tensor, gamma: float, lam: float, normalize_advantages: bool = True
    ) -> Batch:
        """GAE over the full buffer, flattened to M = T·N samples."""
        if self.t != self.steps:
            raise RuntimeError(f"buffer holds {self.t} of {self.steps} steps")
        adv = gae(self.rewards, self.values, self.next_values, self.ends, gamma, lam)
        returns = adv + self.values
        if normalize_advantages and distributed.is_distributed():
            mean, std = global_mean_std(adv)
            adv = (adv - mean) / (std + 1e-8)
        elif normalize_advantages and adv.numel() > 1:  # one sample has no spread (SB3 too)
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        self.t = 0
        return Batch(
            obs=self.obs.flatten(0, 1),
            actions=self.actions.flatten(0, 1),
            logp=self.logp.flatten(),
            advantages=adv.flatten(),
            returns=returns.flatten(),
            values=self.values.flatten(),
            session=self.session.flatten(),
            xi=xi,
        )


def global_mean_std(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (unbiased) standard deviation of ``x`` concatenated over all ranks.

    Two passes (sum and count, then the squared deviations from the global mean), each one
    all-reduce of two numbers in float64, so every rank gets the same values.
    """
    acc = torch.stack([x.sum().double(), torch.tensor(float(x.numel()), dtype=torch.float64)])
    total, count = distributed.all_reduce_sum(acc).unbind()
    mean = total / count
    sq = distributed.all_reduce_sum((x.double() - mean).square().sum().reshape(1))[0]
    return mean.to(x.dtype), (sq / (count - 1)).sqrt().to(x.dtype)
