"""Value checks for resolved hyperparameters: a bad value is one line naming the key and its
valid range when the run is set up, not an assertion or an ``IndexError`` deep inside SB3's
constructor or the policy's (``n_steps: 0``, ``learning_rate: -1``, ``trunk_arch: []``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rltransfer.errors import UserError

POSITIVE_INTS = ("n_steps", "batch_size", "n_epochs")
# Keys that may be a schedule (``lin_<initial>``): the initial value is checked.
POSITIVE = ("learning_rate", "clip_range", "max_grad_norm")
NON_NEGATIVE = ("vf_coef",)
OPTIONAL_POSITIVE = ("clip_range_vf", "target_kl")
BOOLS = ("normalize_advantage", "use_sde", "use_sde_at_warmup")
# What SB3's PPO takes as a schedule; any other key given one would fail at the first update.
SCHEDULABLE = ("learning_rate", "clip_range", "clip_range_vf")


def check_values(hp: Mapping[str, Any]) -> None:
    """Raise ``UserError`` for the first value of ``hp`` outside what PPO and rltransfer's policy take."""
    for key, value in hp.items():
        if isinstance(value, str) and value.startswith("lin_") and key not in SCHEDULABLE:
            raise UserError(
                f"{key}={value!r}: SB3's PPO takes a schedule for {', '.join(SCHEDULABLE)} only; give a number"
            )
    for key in POSITIVE_INTS:
        if key in hp and not (_is_int(hp[key]) and hp[key] >= 1):
            raise UserError(f"{key} must be a positive integer, got {hp[key]!r}")
    if "sde_sample_freq" in hp and not (_is_int(hp["sde_sample_freq"]) and hp["sde_sample_freq"] >= -1):
        raise UserError(
            f"sde_sample_freq must be an integer >= -1 (-1: only at a rollout's start), got {hp['sde_sample_freq']!r}"
        )
    for key in POSITIVE + NON_NEGATIVE + OPTIONAL_POSITIVE:
        if key not in hp or (hp[key] is None and key in OPTIONAL_POSITIVE):
            continue
        value = _initial(hp[key], key)
        low_ok = value >= 0 if key in NON_NEGATIVE else value > 0
        if not (math.isfinite(value) and low_ok):
            bound = ">= 0" if key in NON_NEGATIVE else "> 0"
            raise UserError(f"{key} must be a number {bound}, got {hp[key]!r}")
    if "ent_coef" in hp:
        _initial(hp["ent_coef"], "ent_coef")
    if "gamma" in hp and not 0 < _initial(hp["gamma"], "gamma") <= 1:
        raise UserError(f"gamma must lie in (0, 1], got {hp['gamma']!r}")
    if "gae_lambda" in hp and not 0 <= _initial(hp["gae_lambda"], "gae_lambda") <= 1:
        raise UserError(f"gae_lambda must lie in [0, 1], got {hp['gae_lambda']!r}")
    for key in BOOLS:
        if key in hp and not isinstance(hp[key], bool):
            raise UserError(f"{key} must be true or false, got {hp[key]!r}")
    if "n_steps" in hp and "n_envs" in hp and hp["n_steps"] * hp["n_envs"] < 2:
        raise UserError(
            f"a rollout needs at least 2 samples: raise n_steps ({hp['n_steps']}) or n_envs ({hp['n_envs']})"
        )
    if "trunk_arch" in hp:
        _widths(hp["trunk_arch"], "trunk_arch", allow_empty=False)
    if "head_arch" in hp:
        heads = hp["head_arch"]
        if not isinstance(heads, Mapping) or set(heads) - {"pi", "vf"}:
            raise UserError(f"head_arch must be a mapping {{pi: [...], vf: [...]}} of hidden widths, got {heads!r}")
        for part in ("pi", "vf"):
            _widths(heads.get(part, []), f"head_arch.{part}", allow_empty=True)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def whole_number(value: Any) -> int | None:
    """A count as users write it: an int, a whole float (the RL Zoo's ``!!float 1e5``) or text
    such as ``1e5`` (YAML reads an exponent without a dot as a string) or ``100_000``; else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else None


def _initial(value: Any, key: str = "value") -> float:
    """A number, or a ``lin_<x>`` schedule's initial value ``x``."""
    if isinstance(value, str) and value.startswith("lin_"):
        value = value[4:]
    if isinstance(value, bool):
        raise UserError(f"{key} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"{key} must be a number, got {value!r}") from None


def _widths(value: Any, key: str, allow_empty: bool) -> None:
    if not isinstance(value, list | tuple) or not all(_is_int(w) and w >= 1 for w in value):
        raise UserError(f"{key} must be a list of positive layer widths, e.g. [64, 64], got {value!r}")
    if not value and not allow_empty:
        raise UserError(f"{key} must hold at least one layer width, e.g. [64, 64]: the trunk is what transfers")
