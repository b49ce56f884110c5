"""PPO and V-PPO (§5): clipped or adaptive-KL-penalty surrogate, minibatch Adam epochs.

V-PPO minimises α·KL(q_φ‖p) with log p̃ built from J_ppo by the adapter:
−∂KL/∂φ = E_ξ[(1/α) ∂J_ppo/∂θ ∂θ/∂φ + ∂/∂φ log|det ∂h_φ/∂ξ|]; PPO is the point-mass case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rl.adapter import clipped_objective, kl_penalty_objective
from rl.algorithms.base import Algorithm, adam, adam_step, global_group_means
from rl.buffer import Batch
from rl.config import TrainConfig, check_ranges, nonnegative_finite, positive_finite
from rl.policy_api import PolicyFamily
from rl.temperature import AutoTemperature
from rl.value import reduce_value_loss
from rl.written_out import clip_step, policy_parameters, unsupported
from vi_flows import distributed

__all__ = ["PPOConfig", "PPO"]


@dataclass(frozen=True)
class PPOConfig(TrainConfig):
    """PPO / V-PPO settings."""

    objective: str = "clip"
    """Surrogate: clip (PPO-clip) or kl-penalty (adaptive β·KL(π_old‖π_θ))."""
    clip_coef: float = 0.2
    """Clipping ε of the ratio."""
    kl_coef: float = 1.0
    """Initial penalty β (kl-penalty)."""
    kl_target: float = 0.01
    """Target KL d: β doubles when KL > 1.5 d and halves when KL < d / 1.5 (kl-penalty)."""
    epochs: int = 10
    """Passes over each batch."""
    minibatch_size: int = 256
    """Samples per Adam step (one larger than the batch is the whole batch)."""
    rpo_alpha: float = 0.0
    """RPO (Rahman & Xue 2022): in the update, Box action means get U(−ρ, ρ) noise (0: plain PPO;
    rollouts and evaluation are unperturbed). The paper and CleanRL use ρ = 0.5."""
    anneal_lr: bool = False
    """Decay lr linearly to 0 over the run (CleanRL's anneal_lr; a preset's lr: lin_X)."""
    target_kl: float = 0.0
    """KL guard (0: none). After each epoch, the mean of its minibatches' KL̂(π_old‖π_θ), each
    measured before the minibatch's step (so over the whole batch, a little behind the epoch's
    last steps), is compared with this; above it the update ends. CleanRL compares the last
    minibatch's estimate and SB3 every minibatch's (against 1.5×): a 64-sample estimate is
    noisy, and under the constant-lr (1e-3) Pendulum preset SB3's rule at 0.03 ended most
    updates after 2–30 % of their steps (benchmarks/results/rl-autoalpha/kl-stats.md). With
    ``rpo_alpha`` > 0 the estimate is taken under the perturbed head, as in CleanRL's RPO."""
    hand_gradients: bool = True
    """Where :mod:`rl.written_out` covers the configuration (a BNN policy with a learned-σ Box
    head, the point mass or the gaussian posterior, clip without RPO, one process), take each
    minibatch's gradients from its written-out chain rule instead of autograd: the same loss's
    gradients to float rounding, at about 70% of the step's time. False: autograd
    everywhere (the reference)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self, _RANGES)

    @property
    def timed_by_total_steps(self) -> bool:
        """lr · (1 − update / num_updates) under ``anneal_lr``."""
        return self.anneal_lr


_RANGES = {
    "objective": (lambda s: s in ("clip", "kl-penalty"), "clip or kl-penalty"),
    "clip_coef": (positive_finite, "> 0 and finite"),
    "kl_coef": (nonnegative_finite, ">= 0 and finite"),
    "kl_target": (positive_finite, "> 0 and finite"),
    "epochs": (lambda x: x >= 1, "an integer >= 1"),
    "minibatch_size": (lambda x: x >= 1, "an integer >= 1"),
    "rpo_alpha": (nonnegative_finite, ">= 0 and finite (0: plain PPO)"),
    "target_kl": (nonnegative_finite, ">= 0 and finite (0: no guard)"),
}


class PPO(Algorithm):
    """The update of ppo and vppo."""

    def __init__(self, cfg: PPOConfig, policy: PolicyFamily, critic: nn.Module) -> None:
        super().__init__(cfg, policy, critic)
        if cfg.objective not in {"clip", "kl-penalty"}:
            raise ValueError(f"unknown PPO objective {cfg.objective!r}: clip or kl-penalty")
        self.opt = adam(policy.parameters(), lr=cfg.lr, eps=1e-5)
        self.beta = cfg.kl_coef
        self.updates = 0
        #: Whether the minibatch gradients come from rl.written_out (one process only).
        self.written_out = cfg.hand_gradients and not unsupported(
            policy, critic, cfg.objective, cfg.rpo_alpha
        )
        # the parameters the written-out gradients go to, listed once (~10 µs a minibatch)
        self._params = (
            (policy_parameters(policy), list(critic.parameters())) if self.written_out else None
        )

    def update(
        self, batch: Batch, alpha: float, temperature: AutoTemperature | None = None
    ) -> dict[str, float]:
        cfg = self.cfg
        dual: dict[str, float] = {}
        if cfg.anneal_lr:  # CleanRL: lr · (1 − (update − 1) / num_updates) for updates 1, 2, …
            for group in self.opt.param_groups:
                group["lr"] = cfg.lr * (1.0 - self.updates / cfg.num_updates)
        # the last minibatch's policy loss, evaluated when logged (the written-out step's value
        # costs work the step itself does not need)
        loss_value: Callable[[], Tensor] = torch.zeros(()).detach
        norm = 0.0
        clipped: list[float] = []
        steps = per_epoch = 0
        # The critic's epochs ride along the policy's while their minibatches have one size: one
        # backward for both losses (Algorithm.joint_step); the rest run after, on their own.
        joint = cfg.value_epochs if cfg.value_minibatch_size == cfg.minibatch_size else 0
        joint_done = 0
        # the last joint minibatch's value loss, evaluated when logged
        value: Callable[[], Tensor | None] | None = None
        written_out = self.written_out and not distributed.is_distributed()
        for epoch in range(cfg.epochs):
            moved: list[Tensor] = []  # each minibatch's log π_θ − log π_old before its step
            for mb in batch.minibatches(cfg.minibatch_size, self.generator):
                with_value = epoch < joint
                if written_out:  # the same loss's gradients by hand (rl.written_out)
                    policy_params, critic_params = self._params
                    step = clip_step(
                        self.policy,
                        self.critic,
                        mb,
                        alpha,
                        cfg.clip_coef,
                        with_value,
                        critic_params,
                    )
                    norm = self.apply_gradients(*step.pairs(policy_params, critic_params))
                    loss_value, logp, mb_value = step.policy_loss, step.logp, step.value_loss
                else:
                    loss, logp, norm, value_loss = self._autograd_step(mb, alpha, with_value)
                    loss_value = loss.detach
                    mb_value = None if value_loss is None else value_loss.detach
                value = mb_value if with_value else value
                steps += 1
                if temperature is not None:  # auto α reacts within the update (rl.temperature)
                    dual = self.dual_step(temperature, mb.obs)
                    alpha = temperature.alpha
                moved.append(logp - mb.logp)
            # The epoch's clip fractions and KL̂s, per minibatch, in one pass after it (nothing
            # below needs them sooner); global means under several ranks, so every rank takes
            # the same decision.
            sizes = [len(log_ratio) for log_ratio in moved]
            log_ratio = torch.cat(moved)
            ratio_m1 = log_ratio.exp() - 1.0
            clipped += global_group_means((ratio_m1.abs() > cfg.clip_coef).float(), sizes)
            if epoch == 0:  # the first epoch always runs whole: the minibatches of an epoch
                per_epoch = steps
            joint_done += epoch < joint
            if cfg.target_kl > 0:
                epoch_kl = global_group_means(ratio_m1 - log_ratio, sizes)
                if sum(epoch_kl) / len(epoch_kl) > cfg.target_kl:
                    break
        self.updates += 1
        stats = self.diagnostics(batch)
        if cfg.objective == "kl-penalty":
            if stats["kl"] > 1.5 * cfg.kl_target:
                self.beta *= 2.0
            elif stats["kl"] < cfg.kl_target / 1.5:
                self.beta /= 2.0
        if value is None or joint_done < cfg.value_epochs:  # the critic's remaining epochs
            value_loss = self.fit_value(batch, cfg.value_epochs - joint_done)
        else:
            value_loss = reduce_value_loss(value())
        return {
            **stats,
            **dual,
            "policy_loss": float(distributed.all_reduce_sum(loss_value().clone())),
            "value_loss": value_loss,
            "kl_coef": self.beta,
            "grad_norm": norm,
            "clipfrac": sum(clipped) / len(clipped),
            "step_frac": steps / (cfg.epochs * per_epoch),
        }

    def _autograd_step(
        self, mb: Batch, alpha: float, with_value: bool
    ) -> tuple[Tensor, Tensor, float, Tensor | None]:
        """One minibatch step through the adapter and autograd; returns the policy loss, the
        samples' log π before the step, the pre-clipping gradient norm and (``with_value``: the
        critic steps on the same backward, :meth:`joint_step`) the value loss."""
        cfg = self.cfg
        if cfg.objective == "clip":
            surrogate = clipped_objective(mb.logp, mb.advantages, cfg.clip_coef)
        else:
            surrogate = kl_penalty_objective(mb.logp, mb.advantages, self.beta)
        seen: dict[str, Tensor] = {}

        def objective(logp: Tensor) -> Tensor:
            seen["logp"] = logp.detach()  # for the clip fraction and the KL guard
            return surrogate(logp)

        with self.policy.head.perturbed(cfg.rpo_alpha):
            loss = self.loss(mb, objective, alpha)
        if with_value:
            norm, value = self.joint_step(loss, mb)
            return loss, seen["logp"], norm, value
        return loss, seen["logp"], adam_step(loss, self.opt, cfg.max_grad_norm), None

    def state_dict(self) -> dict:
        return {**super().state_dict(), "beta": self.beta, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.beta = float(state["beta"])
        self.updates = int(state.get("updates", 0))
