"""Run configuration: frozen dataclasses whose fields document themselves.

Every field carries an attribute docstring (the string literal right after it); :func:`field_docs`
reads them back for ``vi-rl config ALGO``. Overrides come from the command line as
``--set name=value`` or ``--name value`` and are parsed by the field's type
(:func:`with_overrides`).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import math
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rl.action_head import RESCALE
from rl.envs import ENV_BACKENDS
from rl.temperature import AutoTemperature
from vi_flows.runfiles import write_text
from vi_flows.schedules import Constant, ExponentialSchedule, LinearSchedule, Schedule

__all__ = [
    "TrainConfig",
    "check_ranges",
    "nonnegative_finite",
    "positive_finite",
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
    """Parallel environment slots (one synchronous vector env)."""
    env_backend: str = "gymnasium"
    """Vector env: gymnasium (its SyncVectorEnv, rl.envs.SameStepSyncVectorEnv; any registered
    id) or envpool (EnvPool's C++ pool on one thread, for the tasks it implements; needs
    ``pip install envpool``). Evaluation always uses gymnasium."""
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
    """Initial scale σ₀ of the weight posterior around the initial weights θ₀ (constant, linear
    and exponential α; under auto α the posterior starts at posterior_std_target instead)."""
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
    action_rescale: str = "auto"
    """Box actions: on (the policy acts in [−1, 1], mapped affinely onto a bounded Box), off
    (actions in the env's units, clipped to the Box) or auto: on when the policy's unit-scale
    start fits the Box badly, i.e. 0 is not strictly inside it or a half-width is outside
    [0.1, 10] (rl.action_head.box_rescale). Every env with a preset stays off under auto; a run
    saved before this field existed reloads with off."""
    latent_dim: int = 4
    """Size m of the latent θ(s, ξ) of the auxiliary policy (§3.2)."""
    lr: float = 3e-4
    """Adam learning rate of the policy / posterior parameters."""
    max_grad_norm: float = 0.5
    """Gradient-norm clipping for Adam steps (0 disables)."""
    value_lr: float = 1e-3
    """Adam learning rate of the value baseline V(s)."""
    value_epochs: int = 5
    """Epochs of value regression per update. In PPO / V-PPO, while ``value_minibatch_size``
    equals ``minibatch_size``, the first min(value_epochs, epochs run) of them ride along the
    policy's epochs on the same minibatches (one backward for both losses, as SB3's joint loss;
    each network keeps its own clipping and Adam step); the rest follow on their own."""
    value_minibatch_size: int = 256
    """Minibatch size of the value regression."""
    alpha: float = 1e-3
    """Temperature α of p(θ) ∝ exp(R(θ)/α), R measured per step (ignored by the plain forms);
    under alpha_schedule=auto the initial α (the dual step moves it from there)."""
    alpha_schedule: str = "auto"
    """α over updates: auto (the default of the variational algorithms: α is the Lagrange
    multiplier of a posterior entropy of at least that of N(0, posterior_std_target²) per weight,
    moved by a dual step after every optimizer step, starting from alpha; rl.temperature),
    constant, linear (alpha → alpha_end over alpha_updates) or exponential. The plain forms and
    svpg (no posterior density) default to constant."""
    posterior_std_target: float | None = None
    """auto α: the per-weight std σ* the posterior keeps at least (target entropy
    ½ log(2πe σ*²) per weight; for action-mean / auxiliary policies per coordinate of θ(s)); a
    bnn posterior also starts at this width. None (the default): calibrated at the start of a
    bnn run so that the initial posterior moves the policy by policy_spread_target
    (rl.calibration; config.json records the σ* found), 0.01 for the other policies. A fixed
    σ* = 0.01 is right for a 64-64 tanh network with unit action noise (Pendulum) and 10× too
    wide for a 256-256 ReLU one with action noise e^-2 (HalfCheetah:
    benchmarks/results/rl-dense/README.md)."""
    policy_spread_target: float = 0.025
    """auto α with posterior_std_target unset: ρ*, the spread √(2 E KL(π_θ ‖ π_θ̄)) by which
    the initial weight posterior moves the policy (for Gaussian actions the rms shift of the
    action mean in units of the action noise) that calibrates σ*. 0.025 is the spread of σ* =
    0.01 on Pendulum, where σ* from 0.003 to 0.03 learned (rl.calibration)."""
    alpha_lr: float = 0.5
    """auto α: integral gain η, the step on the integral part of log α per optimizer step (per
    natural step for vtrpo) per nat of entropy-per-weight gap."""
    alpha_kp: float = 20.0
    """auto α: proportional gain κ, log α = I − κ (h − h*): α falls e-fold as soon as the entropy
    per weight exceeds its target by 1/κ nats (damps the integral step; 0: SAC's pure integral
    step)."""
    alpha_min: float = 1e-8
    """auto α: lower clamp of α (reached when the return does not narrow the posterior: the
    entropy constraint is slack)."""
    alpha_max: float = 1.0
    """auto α: upper clamp of α."""
    alpha_end: float = 1e-4
    """Final α (linear) or floor (exponential)."""
    alpha_updates: int = 100
    """Length of the linear α ramp, in updates."""
    alpha_rate: float = 0.98
    """Factor per update of the exponential α schedule."""
    preset: str = ""
    """The rl/presets entry vi-rl train applied (its env id), or empty when none was."""
    target_return: float = float("inf")
    """Stop early once the mean return of the last 20 training episodes reaches this."""
    checkpoint_every: int = 10
    """Write checkpoint.pt every this many updates (and after the last)."""
    tensorboard: bool = True
    """Also write TensorBoard scalars (skipped if tensorboard is not installed)."""

    def __post_init__(self) -> None:
        """One clear error per out-of-range field (subclasses check their own fields too)."""
        check_ranges(self, _RANGES)
        try:
            options = json.loads(self.posterior_options)
        except (TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"posterior_options must be a JSON object, got {err}") from None
        if not isinstance(options, dict):
            raise ValueError(f"posterior_options must be a JSON object, got {options!r}")
        if self.alpha_schedule == "auto":
            if self.posterior == "point":
                raise ValueError(
                    f"alpha_schedule='auto' needs a posterior with a density, and {self.algo!r} "
                    "uses a point mass (posterior='point'): use a constant alpha_schedule, or a "
                    "variational algorithm (vppo, vtrpo, vreinforce)"
                )
            if not self.alpha_min <= self.alpha <= self.alpha_max:
                raise ValueError(
                    f"alpha must lie in [alpha_min, alpha_max] = [{self.alpha_min}, "
                    f"{self.alpha_max}] when alpha_schedule='auto', got {self.alpha}"
                )

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.rollout_steps

    @property
    def num_updates(self) -> int:
        return -(-self.total_steps // self.batch_size)

    @property
    def timed_by_total_steps(self) -> bool:
        """Whether a schedule of the run is timed by ``total_steps`` (so a resume keeps them)."""
        return False


def _positive(x: Any) -> bool:
    return x > 0


def positive_finite(x: Any) -> bool:
    """``0 < x < inf`` (NaN fails)."""
    return 0 < x < float("inf")


def nonnegative_finite(x: Any) -> bool:
    """``0 <= x < inf`` (NaN fails)."""
    return 0 <= x < float("inf")


#: (check, what is valid) per field; NaN fails every check.
_RANGES: dict[str, tuple[Any, str]] = {
    "seed": (lambda x: 0 <= x < 2**32, "an integer in [0, 2³²)"),
    "total_steps": (lambda x: x >= 1, "an integer >= 1"),
    "num_envs": (lambda x: x >= 1, "an integer >= 1"),
    "env_backend": (lambda s: s in ENV_BACKENDS, " or ".join(ENV_BACKENDS.names())),
    "rollout_steps": (lambda x: x >= 1, "an integer >= 1"),
    "gamma": (lambda x: 0 < x <= 1, "in (0, 1]"),
    "gae_lambda": (lambda x: 0 <= x <= 1, "in [0, 1]"),
    "posterior_init_scale": (_positive, "> 0"),
    "hidden": (lambda h: all(w >= 1 for w in h), "widths >= 1"),
    "activation": (lambda a: a in ("tanh", "relu"), "tanh or relu"),
    "latent_dim": (lambda x: x >= 1, "an integer >= 1"),
    "init_log_std": (lambda x: abs(x) < float("inf"), "finite"),
    "action_rescale": (lambda s: s in RESCALE, ", ".join(RESCALE)),
    "lr": (positive_finite, "> 0 and finite"),
    "max_grad_norm": (nonnegative_finite, ">= 0 and finite (0 disables clipping)"),
    "value_lr": (positive_finite, "> 0 and finite"),
    "value_epochs": (lambda x: x >= 0, "an integer >= 0"),
    "value_minibatch_size": (lambda x: x >= 1, "an integer >= 1"),
    "alpha": (positive_finite, "> 0 and finite"),
    "alpha_schedule": (
        lambda s: s in ("constant", "linear", "exponential", "auto"),
        "constant, linear, exponential or auto",
    ),
    "posterior_std_target": (
        lambda x: x is None or 0 < x < float("inf"),
        "> 0 and finite, or None (calibrated from policy_spread_target)",
    ),
    "policy_spread_target": (lambda x: 0 < x < float("inf"), "> 0 and finite"),
    "alpha_lr": (lambda x: 0 < x < float("inf"), "> 0 and finite"),
    "alpha_kp": (lambda x: 0 <= x < float("inf"), ">= 0 and finite"),
    "alpha_min": (lambda x: 0 < x < float("inf"), "> 0 and finite"),
    "alpha_max": (lambda x: 0 < x < float("inf"), "> 0 and finite"),
    "alpha_end": (_positive, "> 0"),
    "alpha_updates": (lambda x: x >= 1, "an integer >= 1"),
    "alpha_rate": (lambda x: 0 < x <= 1, "in (0, 1]"),
    "checkpoint_every": (lambda x: x >= 0, "an integer >= 0 (0: only at the end)"),
}


def check_ranges(cfg: Any, ranges: dict[str, tuple[Any, str]]) -> None:
    """Raise one ``ValueError`` naming the first field of ``cfg`` outside its range: ``ranges``
    maps a field to (check, what is valid), and NaN fails every check."""
    for name, (ok, valid) in ranges.items():
        value = getattr(cfg, name)
        try:
            good = bool(ok(value))
        except TypeError:
            good = False
        if not good:
            raise ValueError(f"{name} must be {valid}, got {value!r}")


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
    args = typing.get_args(kind)
    if origin is types.UnionType and type(None) in args:  # ``X | None``: "none" or an X
        if text.strip().lower() in {"none", "null", ""}:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse(inner, text)
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
        if "e" not in text.lower():
            return int(text)
        value = float(text)  # 1e6 is an integer; 1e400 and 1.5e0 are not
        if not (math.isfinite(value) and value == int(value)):
            raise ValueError(f"expected an integer, got {text!r}")
        return int(value)
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
    """The α schedule over update indices (vi_flows.schedules); for auto an
    :class:`~rl.temperature.AutoTemperature`, which the trainer steps after every update."""
    if cfg.alpha_schedule == "auto":
        if cfg.posterior_std_target is None:
            raise ValueError(
                "posterior_std_target is None (calibrated by the trainer when a run starts); "
                "build auto α from a run's resolved config or set posterior_std_target"
            )
        return AutoTemperature(
            cfg.posterior_std_target,
            init_alpha=cfg.alpha,
            lr=cfg.alpha_lr,
            kp=cfg.alpha_kp,
            min_alpha=cfg.alpha_min,
            max_alpha=cfg.alpha_max,
        )
    if cfg.alpha_schedule == "constant":
        return Constant(cfg.alpha)
    if cfg.alpha_schedule == "linear":
        return LinearSchedule(cfg.alpha, cfg.alpha_end, steps=cfg.alpha_updates)
    if cfg.alpha_schedule == "exponential":
        return ExponentialSchedule(cfg.alpha, cfg.alpha_end, rate=cfg.alpha_rate)
    raise ValueError(
        f"unknown alpha_schedule {cfg.alpha_schedule!r}: constant, linear, exponential or auto"
    )


def save(cfg: Any, path: Path) -> None:
    """Write the config as JSON (``config.json`` beside the run), atomically."""
    write_text(path, json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")


def load_dict(path: Path) -> dict[str, Any]:
    """Read a saved config (tuples come back as lists; :func:`with_overrides` accepts both).

    Raises:
        FileNotFoundError / ValueError: a missing file, or one that is not a JSON object (the
            message names the file, and the line and column of a syntax error).
    """
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (not a vi-rl run directory?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected a JSON object of config fields, got {type(data).__name__}"
        )
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
