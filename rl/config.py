"""Run configuration: frozen dataclasses whose fields document themselves.

Every field carries an attribute docstring (the string literal right after it); :func:`field_docs`
reads them back for ``vi-rl train --help-config``. Overrides come from the command line as
``--set name=value`` or ``--name value`` and are parsed by the field's type
(:func:`with_overrides`).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import textwrap
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vi_flows.schedules import Constant, ExponentialSchedule, LinearSchedule, Schedule

__all__ = [
    "TrainConfig",
    "field_docs",
    "with_overrides",
    "alpha_schedule",
    "save",
    "load_dict",
]


@dataclass(frozen=True)
class TrainConfig:
    """Settings shared by every algorithm."""

    algo: str = "vppo"
    """Algorithm: vreinforce, vtrpo, vppo, reinforce, trpo, ppo or svpg."""
    env_id: str = "Pendulum-v1"
    """Gymnasium environment id (Box or Discrete actions, flat Box observations)."""
    seed: int = 0
    """Seed of torch, the environments and the minibatch shuffling."""
    total_steps: int = 200_000
    """Environment steps to train for (rounded up to whole rollouts)."""
    num_envs: int = 8
    """Parallel environment slots (gymnasium SyncVectorEnv)."""
    rollout_steps: int = 256
    """Steps per slot between updates (T); a batch holds num_envs × rollout_steps samples."""
    gamma: float = 0.99
    """Discount γ."""
    gae_lambda: float = 0.95
    """GAE λ."""
    normalize_advantages: bool = True
    """Standardise Â over each batch."""
    normalize_obs: bool = False
    """Normalise observations with running statistics (updated after each rollout)."""
    normalize_reward: bool = False
    """Train on rewards divided by the running std of the discounted return (as SB3's
    VecNormalize); logged and evaluated returns stay unscaled."""
    policy: str = "bnn"
    """Policy family: bnn (§2), action-mean (§3.1), auxiliary (§3.2); svpg uses particles."""
    posterior: str = "gaussian"
    """vi_flows family of the weight posterior (bnn), or point for the plain algorithms."""
    posterior_init_scale: float = 0.01
    """Initial scale σ₀ of the weight posterior around the initial weights θ₀."""
    posterior_options: str = "{}"
    """Extra options for vi_flows.flows.build as a JSON object, e.g. {"rank": 8}."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden widths of the policy, value and posterior networks."""
    activation: str = "tanh"
    """Hidden activation: tanh or relu."""
    init_log_std: float = 0.0
    """Initial log-std of the Gaussian action noise ζ (Box actions)."""
    learn_log_std: bool = True
    """Learn the action log-std by the policy gradient (else keep it fixed)."""
    latent_dim: int = 4
    """Size m of the latent θ(s, ξ) of the auxiliary policy (§3.2)."""
    lr: float = 3e-4
    """Adam learning rate of the policy / posterior parameters."""
    max_grad_norm: float = 0.5
    """Gradient-norm clipping for Adam steps (0 disables)."""
    value_lr: float = 1e-3
    """Adam learning rate of the value baseline V(s)."""
    value_epochs: int = 5
    """Epochs of value regression per update."""
    value_minibatch_size: int = 256
    """Minibatch size of the value regression."""
    alpha: float = 1e-3
    """Temperature α of p(θ) ∝ exp(R(θ)/α), R measured per step (ignored by the plain forms)."""
    alpha_schedule: str = "constant"
    """α over updates: constant, linear (alpha → alpha_end over alpha_updates) or exponential."""
    alpha_end: float = 1e-4
    """Final α (linear) or floor (exponential)."""
    alpha_updates: int = 100
    """Length of the linear α ramp, in updates."""
    alpha_rate: float = 0.98
    """Factor per update of the exponential α schedule."""
    target_return: float = float("inf")
    """Stop early once the mean return of the last 20 training episodes reaches this."""
    checkpoint_every: int = 10
    """Write checkpoint.pt every this many updates (and after the last)."""
    tensorboard: bool = True
    """Also write TensorBoard scalars (skipped if tensorboard is not installed)."""

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.rollout_steps

    @property
    def num_updates(self) -> int:
        return -(-self.total_steps // self.batch_size)


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass and its bases, by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, nxt in zip(body, body[1:], strict=False):
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr):
                if isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                    docs[node.target.id] = nxt.value.value
    return docs


def _parse(kind: Any, text: str) -> Any:
    origin = typing.get_origin(kind)
    if kind is bool:
        if text.lower() in {"1", "true", "yes", "on"}:
            return True
        if text.lower() in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if origin is tuple:
        inner = typing.get_args(kind)[0]
        parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
        return tuple(inner(p.strip()) for p in parts)
    if kind is int:
        return int(float(text)) if "e" in text.lower() else int(text)
    return kind(text)


def with_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """A copy of ``cfg`` with fields replaced; string values are parsed by the field's type.

    Raises:
        ValueError: for a field that does not exist (the message lists the valid ones) or a value
            that does not parse.
    """
    hints = typing.get_type_hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    changes = {}
    for name, value in overrides.items():
        key = name.replace("-", "_")
        if key not in names:
            raise ValueError(
                f"config field {name!r} does not exist for {type(cfg).__name__}; "
                f"valid fields: {', '.join(names)}"
            )
        if isinstance(value, str) and hints[key] is not str:
            try:
                value = _parse(hints[key], value)
            except ValueError as err:
                raise ValueError(f"bad value for {key}: {err}") from None
        changes[key] = value
    return dataclasses.replace(cfg, **changes)


def alpha_schedule(cfg: TrainConfig) -> Schedule:
    """The α schedule over update indices (vi_flows.schedules)."""
    if cfg.alpha_schedule == "constant":
        return Constant(cfg.alpha)
    if cfg.alpha_schedule == "linear":
        return LinearSchedule(cfg.alpha, cfg.alpha_end, steps=cfg.alpha_updates)
    if cfg.alpha_schedule == "exponential":
        return ExponentialSchedule(cfg.alpha, cfg.alpha_end, rate=cfg.alpha_rate)
    raise ValueError(f"unknown alpha_schedule {cfg.alpha_schedule!r}: constant/linear/exponential")


def save(cfg: Any, path: Path) -> None:
    """Write the config as JSON (``config.json`` beside the run)."""
    path.write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")


def load_dict(path: Path) -> dict[str, Any]:
    """Read a saved config (tuples come back as lists; :func:`with_overrides` accepts both)."""
    data = json.loads(path.read_text())
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
