"""Environment families: a dynamics class plus declared parameters and graded variants.

A family is data: parameter specs (name, default, bounds), named variants at graded
distances from the source, and a held-out band. Physical parameters are constructor
arguments of the family's environment class, never attributes set on a built env.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from rltransfer.envs.shift import STANDARD_SHIFTS, ObsShift, ObsShiftWrapper

Distance = Literal["source", "near", "far", "held-out", "shift", "custom"]


@dataclass(frozen=True)
class Param:
    """One physical parameter of a family: its default and valid closed interval."""

    name: str
    default: float
    low: float
    high: float
    doc: str = ""


@dataclass(frozen=True)
class Variant:
    """A named point in a family's parameter space; unlisted parameters take their defaults."""

    name: str
    params: Mapping[str, float]
    distance: Distance = "custom"
    doc: str = ""
    shift: ObsShift | None = None


@dataclass(frozen=True)
class Family:
    """A family of related tasks sharing observation and action spaces.

    Args:
        name: lower-case key used on the command line (``cartpole``).
        title: CamelCase name used in Gymnasium ids (``CartPole``).
        entry_point: ``module:Class`` of the environment; parameters are its keyword arguments.
        params: declared physical parameters.
        variants: source, near and far targets (exactly one ``source``).
        held_out: parameter intervals reserved for generalisation tests, never used as targets.
        max_episode_steps: time limit applied by ``gym.make``.
        threshold: evaluation return regarded as "solved" (RL Zoo reference).
        extra: the install extra the family's simulator needs (``box2d``, ``mujoco``), if any.
    """

    name: str
    title: str
    entry_point: str
    params: tuple[Param, ...]
    variants: tuple[Variant, ...]
    held_out: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    max_episode_steps: int = 500
    threshold: float = 0.0
    extra: str | None = None

    @property
    def available(self) -> bool:
        """Whether the simulator is installed (families of extras are registered either way)."""
        module = {"box2d": "Box2D", "mujoco": "mujoco"}.get(self.extra or "")
        return module is None or importlib.util.find_spec(module) is not None

    @property
    def source(self) -> Variant:
        return next(v for v in self.variants if v.distance == "source")

    @property
    def targets(self) -> tuple[Variant, ...]:
        return tuple(v for v in self.variants if v.distance in ("near", "far"))

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.params)
        raise ValueError(f"family '{self.name}' has no parameter '{name}'; known parameters: {known}")

    def defaults(self) -> dict[str, float]:
        return {p.name: p.default for p in self.params}

    def resolve(self, overrides: Mapping[str, Any]) -> dict[str, float]:
        """Full parameter dict: defaults updated by ``overrides``, each validated against its bounds."""
        values = self.defaults()
        for key, raw in overrides.items():
            p = self.param(key)
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{self.name}.{key} must be a number, got {raw!r}; give a value in [{p.low}, {p.high}]"
                ) from None
            if not (np.isfinite(value) and p.low <= value <= p.high):
                raise ValueError(
                    f"{self.name}.{key}={raw!r} is outside its valid range [{p.low}, {p.high}]; "
                    f"pick a value inside it (default {p.default})"
                )
            values[key] = value
        return values

    def shift_variants(self) -> tuple[Variant, ...]:
        """The source dynamics with each standard observation shift (``noisy``, ``scaled``, ...)."""
        return tuple(
            Variant(name, {}, "shift", f"source dynamics, observation shift: {s.kind}", s)
            for name, s in STANDARD_SHIFTS.items()
        )

    def all_variants(self) -> tuple[Variant, ...]:
        """Every registered variant: declared, held-out and observation-shift ones."""
        return (*self.variants, *self.held_out_variants(), *self.shift_variants())

    def variant(self, name: str) -> Variant:
        for v in self.all_variants():
            if v.name == name:
                return v
        known = ", ".join(v.name for v in self.variants)
        raise ValueError(
            f"family '{self.name}' has no variant '{name}'; choose one of: {known} (or define one by parameter values)"
        )

    def custom(self, name: str, params: Mapping[str, Any], doc: str = "") -> Variant:
        """A user-defined variant by parameter values alone (validated now, not at first step)."""
        if any(name == v.name for v in self.variants):
            raise ValueError(f"variant name '{name}' already exists in family '{self.name}'; choose another")
        resolved = self.resolve(params)
        return Variant(name, {k: resolved[k] for k in params}, "custom", doc)

    def held_out_variants(self, n: int = 3) -> tuple[Variant, ...]:
        """``n`` evenly spaced points through the held-out band (deterministic, so ids are stable)."""
        if not self.held_out:
            return ()
        out = []
        for i in range(n):
            frac = (i + 0.5) / n
            params = {k: round(lo + frac * (hi - lo), 6) for k, (lo, hi) in self.held_out.items()}
            out.append(Variant(f"heldout{i}", params, "held-out", "sampled from the held-out band"))
        return tuple(out)

    def env_id(self, variant: str | Variant) -> str:
        name = variant.name if isinstance(variant, Variant) else variant
        return f"rltransfer/{self.title}-{name}-v0"

    def make(self, variant: str | Variant, **kwargs: Any) -> gym.Env:
        """Build one variant (registered or custom) with the family's time limit."""
        v = self.variant(variant) if isinstance(variant, str) else variant
        params = self.resolve(v.params)
        if not self.available:
            raise ValueError(
                f"family '{self.name}' needs the {self.extra} simulator; install it with "
                f'pip install "rltransfer[{self.extra}]"'
            )
        # Through the registered source id, so the time limit and checkers are Gymnasium's own.
        env = gym.make(self.env_id(self.source), **{**params, **kwargs})
        return ObsShiftWrapper(env, v.shift) if v.shift is not None else env
