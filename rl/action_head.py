"""The action head: network outputs → π(·|s), and π's actions → what the env receives.

Box actions get a diagonal Gaussian with a learned or fixed log-std, Discrete actions a categorical
over the logits. Acting draws an action and its log-probability every env step, so the head also
offers :meth:`ActionHead.sampler`, which does that without building a distribution object per step
(the same arithmetic, and the same random draws, as ``dist.sample()`` then ``dist.log_prob``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution

from rl.distributions import DiagGaussian, DiagGaussianSampler

__all__ = ["RESCALE", "Action", "ActionHead", "box_rescale", "check_action_space"]

#: Acting: network outputs (n, n_out) ↦ (action, log π(action)) of the n rows.
Action = Callable[[Tensor], tuple[Tensor, Tensor]]


def check_action_space(space: gym.Space) -> None:
    """Raise ``ValueError`` unless :class:`ActionHead` represents ``space`` exactly.

    Representable: ``Discrete(n, start)`` with n >= 1, and a 1-D floating ``Box`` (shape (n,)).
    """
    if isinstance(space, gym.spaces.Discrete):
        if int(space.n) < 1:
            raise ValueError(f"action space {space} has no actions")
        return
    if isinstance(space, gym.spaces.Box):
        if (
            len(space.shape) == 1
            and space.shape[0] >= 1
            and np.issubdtype(space.dtype, np.floating)
        ):
            return
        raise ValueError(
            f"action space {space} cannot be represented exactly: vi-rl needs a 1-D float Box "
            "(shape (n,)) or a Discrete space; flatten or wrap the env's actions"
        )
    raise ValueError(
        f"unsupported action space {type(space).__name__}; vi-rl supports Box (continuous, 1-D) "
        "and Discrete actions"
    )


#: The ``action_rescale`` settings: on, off, or auto (on when the unit start fits the Box badly).
RESCALE = ("auto", "on", "off")


def box_rescale(space: gym.Space, how: str = "auto") -> str:
    """Why Box actions are mapped from [−1, 1] onto ``space`` (``""``: they are not).

    The policy starts with action means near 0 and unit noise (log σ = 0). That start suits a
    Box around [−1, 1]; on Box(10, 11) every action is clipped to 10 and every return is the
    same, and on Box(−100, 100) the noise explores a hundredth of the range. ``how="auto"``
    maps a bounded Box affinely onto [−1, 1] exactly then: when 0 is not strictly inside it
    (a bound at 0 clips half the start) or a half-width is outside [0.1, 10]. ``"on"`` maps any
    bounded Box, ``"off"`` none (actions in the env's units, clipped to the bounds). Unbounded
    Boxes and Discrete spaces never map.

    >>> box_rescale(gym.spaces.Box(10.0, 11.0, (1,)))
    'action_rescale=auto: 0 is not strictly inside the Box'
    >>> pendulum = gym.spaces.Box(-2.0, 2.0, (1,))
    >>> box_rescale(pendulum), box_rescale(pendulum, "on")
    ('', 'action_rescale=on')
    """
    if how not in RESCALE:
        raise ValueError(f"action_rescale must be one of {', '.join(RESCALE)}, got {how!r}")
    if not isinstance(space, gym.spaces.Box) or how == "off":
        return ""
    low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        return ""
    if how == "on":
        return "action_rescale=on"
    half = (high - low) / 2
    if not ((low < 0) & (0 < high)).all():
        return "action_rescale=auto: 0 is not strictly inside the Box"
    if not ((0.1 <= half) & (half <= 10)).all():
        return (
            f"action_rescale=auto: half-widths {half.min():.3g}-{half.max():.3g} (not in [0.1, 10])"
        )
    return ""


class ActionHead(nn.Module):
    """Turns network outputs into π(·|s): Categorical(logits) or N(mean, exp(log_std)²).

    A Discrete(n, start) action is the categorical index i ∈ [0, n) (what the buffer stores and
    log π is taken of); the env receives start + i. A Box action a is what the buffer stores;
    the env receives clip(c + h a, low, high), with c and h the Box's centre and half-widths
    when :func:`box_rescale` maps it (``rescale``), else c = 0 and h = 1.
    """

    def __init__(
        self,
        space: gym.Space,
        init_log_std: float = 0.0,
        learn_log_std: bool = True,
        rescale: str = "auto",
    ):
        super().__init__()
        check_action_space(space)
        self.rescaled = box_rescale(space, rescale)
        self.discrete = isinstance(space, gym.spaces.Discrete)
        if self.discrete:
            self.num_outputs, self.shape = int(space.n), ()
            self.start = int(space.start)
        else:
            self.num_outputs, self.shape = int(np.prod(space.shape)), tuple(space.shape)
            self.low, self.high = space.low, space.high
            self.centre = (self.high + self.low) / 2 if self.rescaled else None
            self.half = (self.high - self.low) / 2 if self.rescaled else None
            log_std = torch.full((self.num_outputs,), float(init_log_std))
            if learn_log_std:
                self.log_std = nn.Parameter(log_std)
            else:
                self.register_buffer("log_std", log_std)
        self.mean_noise = 0.0

    @contextmanager
    def perturbed(self, rho: float) -> Iterator[None]:
        """Inside, Box action means get U(−ρ, ρ) noise (RPO, Rahman & Xue 2022); ρ = 0: none."""
        previous, self.mean_noise = self.mean_noise, float(rho)
        try:
            yield
        finally:
            self.mean_noise = previous

    def forward(self, out: Tensor) -> Distribution:
        if self.discrete:
            return Categorical(logits=out, validate_args=False)
        if self.mean_noise > 0:
            out = out + torch.empty_like(out).uniform_(-self.mean_noise, self.mean_noise)
        # No argument validation: the inputs are network outputs, and the checks showed up in
        # the trainer's profile; a non-finite output still fails loudly in the loss.
        return DiagGaussian(out, self.log_std)

    def sampler(self, rows: int) -> Action:
        """out (rows, n_out) ↦ (a ~ π(·|out), log π(a|out)), equal to ``dist = head(out)``,
        ``a = dist.sample()``, ``dist.log_prob(a)`` (the same draws from the torch RNG).

        For a Box head σ is read once, here: it is valid while log σ does not change (a rollout;
        log σ only changes in updates), and acting is unperturbed (RPO's noise is for updates).
        """
        if self.discrete or self.mean_noise > 0:

            def draw(out: Tensor) -> tuple[Tensor, Tensor]:
                dist = self(out)
                action = dist.sample()
                return action, dist.log_prob(action)

            return draw
        return DiagGaussianSampler(self.log_std, (rows, self.num_outputs))

    def mode(self, dist: Distribution) -> Tensor:
        """The most likely action."""
        return dist.probs.argmax(-1) if self.discrete else dist.mean

    def to_env(self, action: Tensor) -> np.ndarray:
        """The action the env receives (Box actions mapped if rescaled, clipped to the bounds)."""
        a = action.numpy()
        if self.discrete:
            return a.astype(np.int64) + self.start
        if self.half is not None:
            a = (self.centre + self.half * a).astype(self.low.dtype)
        # np.clip's Python wrappers cost more than the clipping at a rollout's sizes; this is the
        # same min(max(a, low), high), NaN included.
        return np.minimum(np.maximum(a, self.low), self.high)
