"""Environment families: a dynamics class plus declared parameters and graded variants.

A family is data: parameter specs (name, default, bounds), named variants at graded
distances from the source, and a held-out band. Physical parameters are constructor
arguments of the family's environment class, never attributes set on a built env.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from rltransfer.envs.hints import did_you_mean
from rltransfer.envs.shift import STANDARD_SHIFTS, ObsShift, ObsShiftWrapper

# A name that names a directory (a variant's per-target run, an experiment's runs/<name>): never '',
# '.', '..' or hidden, no '/'.
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
SAFE_NAME_RULE = "may hold only letters, digits, '_', '.', '-', and start with neither '.' nor '-'"

# Which family registered each Gymnasium id in this process: a family loaded again after an edit
# replaces its own ids, never another's.
_OWNERS: dict[str, str] = {}

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
        hyperparams: PPO hyperparameters for the family (RL Zoo keys, as in ``rltransfer/ppo.yml``)
            over rltransfer's generic defaults; shipped families keep theirs in ``ppo.yml``.
        ref: where a user family was loaded from (``module:ATTRIBUTE`` or a YAML file; set by
            ``get_family``), so manifests say how to load it again.
        env_kwargs: fixed constructor arguments of every variant (a Gymnasium id's own, such as
            ``continuous=True``), under the parameters.
        base_id: the Gymnasium id a family written as data builds on (``MountainCar-v0``), if any;
            an RL Zoo hyperparameter file's block for it serves the family.
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
    hyperparams: Mapping[str, Any] = field(default_factory=dict)
    ref: str | None = None
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    base_id: str | None = None

    def __post_init__(self) -> None:
        # A user family is checked where it is built, not at its first environment step.
        where = f"family '{self.name}'"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name) or not re.fullmatch(r"[A-Za-z0-9_.]+", self.title):
            raise ValueError(
                f"{where}: name may hold letters, digits, '_', '.', '-' and title letters, digits, '_', '.'"
            )
        if ":" not in self.entry_point:
            raise ValueError(f"{where}: entry_point '{self.entry_point}' must look like module:Class")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: parameter names repeat ({', '.join(names)}); name each once")
        for p in self.params:
            if not (p.low <= p.default <= p.high):
                raise ValueError(f"{where}: parameter '{p.name}' default {p.default} lies outside [{p.low}, {p.high}]")
        if sum(v.distance == "source" for v in self.variants) != 1:
            raise ValueError(f"{where}: exactly one variant must have distance 'source'")
        seen = [v.name for v in self.variants]
        if len(set(seen)) != len(seen):
            raise ValueError(f"{where}: variant names repeat ({', '.join(seen)}); name each once")
        for v in self.variants:
            if not SAFE_NAME.fullmatch(v.name):
                raise ValueError(f"{where}: variant name '{v.name}' {SAFE_NAME_RULE}")
            self.resolve(v.params)
        for key, (low, high) in self.held_out.items():
            p = self.param(key)
            if not (p.low <= low <= high <= p.high):
                raise ValueError(f"{where}: held-out band {key} [{low}, {high}] must lie within [{p.low}, {p.high}]")
        for v in self.variants:  # the band is what generalisation plays as unseen: no variant trains there
            if self.in_held_out(v.params):
                raise ValueError(
                    f"{where}: variant '{v.name}' lies in the held-out band, which no variant may use; "
                    "move one of its parameters outside its interval, or narrow the band"
                )

    @property
    def available(self) -> bool:
        """Whether the simulator is installed (families of extras are registered either way)."""
        module = {"box2d": "Box2D", "mujoco": "mujoco"}.get(self.extra or "")
        return module is None or importlib.util.find_spec(module) is not None

    @property
    def modules(self) -> tuple[str, ...]:
        """The Python modules of the family's code: its environment's and, loaded by
        ``module:ATTRIBUTE``, its own."""
        found = [self.entry_point.partition(":")[0]]
        if self.ref and re.fullmatch(r"[\w.]+:[\w.]+", self.ref):
            found.append(self.ref.partition(":")[0])
        return tuple(dict.fromkeys(found))

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
        hint = did_you_mean(name, [p.name for p in self.params])
        raise ValueError(f"family '{self.name}' has no parameter '{name}'{hint}; known parameters: {known}")

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
        """A variant by its name (``long``) or its Gymnasium id (``rltransfer/CartPole-long-v0``)."""
        for v in self.all_variants():
            if name in (v.name, self.env_id(v)):
                return v
        known = ", ".join(v.name for v in self.variants)
        if name.startswith("rltransfer/"):
            raise ValueError(
                f"'{name}' is no Gymnasium id of family '{self.name}', whose ids are "
                f"rltransfer/{self.title}-<variant>-v0 for one of: {known}"
            )
        if re.fullmatch(rf"{re.escape(self.title)}-v\d+", name) or name == self.base_id:
            # The upstream id a user knows (CartPole-v1) is the family's defaults, not a variant name.
            src = self.source
            same = f"plays it as its variant '{src.name}' ({self.env_id(src)}); " if not src.params else ""
            raise ValueError(f"'{name}' is Gymnasium's own id; family '{self.name}' {same}choose one of: {known}")
        hint = did_you_mean(name, [v.name for v in self.all_variants()])
        raise ValueError(
            f"family '{self.name}' has no variant '{name}'{hint}; choose one of: {known} "
            "(or define one by parameter values)"
        )

    def custom(self, name: str, params: Mapping[str, Any], doc: str = "") -> Variant:
        """A user-defined variant by parameter values alone (validated now, not at first step)."""
        if not SAFE_NAME.fullmatch(name):
            raise ValueError(f"variant name '{name}' {SAFE_NAME_RULE}")
        if any(name == v.name for v in self.variants):
            raise ValueError(f"variant name '{name}' already exists in family '{self.name}'; choose another")
        resolved = self.resolve(params)
        return Variant(name, {k: resolved[k] for k in params}, "custom", doc)

    def in_held_out(self, params: Mapping[str, Any]) -> bool:
        """Whether a variant's parameters (overrides of the defaults) lie in the held-out band:
        every held-out parameter within its interval."""
        if not self.held_out:
            return False
        values = self.resolve(params)
        return all(low <= values[key] <= high for key, (low, high) in self.held_out.items())

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

    def register(self) -> None:
        """Register every variant (held-out ones included) as a Gymnasium id, once per process.

        Ids already registered for another environment class are an error: a user family titled
        like a shipped one would otherwise build the shipped environment without a word.
        """
        for variant in self.all_variants():
            env_id = self.env_id(variant)
            kwargs: dict[str, object] = {**self.env_kwargs, **variant.params}
            entry_point = self.entry_point
            if variant.shift is not None:
                kwargs = {"entry_point": self.entry_point, "shift": variant.shift.to_dict(), **kwargs}
                entry_point = "rltransfer.envs.shift:shifted_env"
            if env_id in gym.registry:
                known = gym.registry[env_id]
                mine = (entry_point, kwargs, self.max_episode_steps, self.threshold)
                if (known.entry_point, known.kwargs, known.max_episode_steps, known.reward_threshold) == mine:
                    continue
                if _OWNERS.get(env_id) != self.name:
                    owner = (known.kwargs or {}).get("entry_point", known.entry_point)
                    raise ValueError(
                        f"family '{self.name}' would register '{env_id}', already registered for "
                        f"another environment ({owner}); give the family another title"
                    )
                del gym.registry[env_id]  # this family's earlier definition, edited and loaded again
            _OWNERS[env_id] = self.name
            gym.register(
                id=env_id,
                entry_point=entry_point,
                max_episode_steps=self.max_episode_steps,
                reward_threshold=self.threshold,
                kwargs=kwargs,
            )

    def check(self) -> None:
        """Build the source environment once: its class takes every parameter, and its spaces are
        ones the trunk and heads take (a flat ``Box`` of observations; ``Discrete`` or flat ``Box``
        actions). User families are checked so when loaded, not at their first step."""
        try:
            env = self.make(self.source)
        except Exception as e:
            fix = {
                ImportError: "make the module importable (PYTHONPATH, or install it)",
                TypeError: "each parameter must be a constructor argument",
            }
            hint = next((h for kind, h in fix.items() if isinstance(e, kind)), "check the environment class")
            raise ValueError(
                f"family '{self.name}': building its source environment ({self.entry_point}) failed: "
                f"{type(e).__name__}: {e}; {hint}"
            ) from None
        obs, act = env.observation_space, env.action_space
        env.close()
        if not isinstance(obs, gym.spaces.Box) or len(obs.shape) != 1:
            raise ValueError(
                f"family '{self.name}': observations are {obs}; the trunk takes a flat Box "
                "(wrap the environment to flatten or one-hot them)"
            )
        if not isinstance(act, gym.spaces.Discrete | gym.spaces.Box) or len(act.shape or (1,)) != 1:
            raise ValueError(f"family '{self.name}': actions are {act}; the heads take Discrete or a flat Box")

    def to_dict(self) -> dict[str, Any]:
        """The definition manifests record for a user family (shipped ones are named by version)."""
        return {
            "name": self.name,
            "title": self.title,
            "ref": self.ref,
            "entry_point": self.entry_point,
            "params": [{"name": p.name, "default": p.default, "low": p.low, "high": p.high} for p in self.params],
            "variants": {v.name: {"distance": v.distance, "params": dict(v.params)} for v in self.variants},
            "held_out": {k: list(v) for k, v in self.held_out.items()},
            "max_episode_steps": self.max_episode_steps,
            "threshold": self.threshold,
            "hyperparams": dict(self.hyperparams),
            "env_kwargs": dict(self.env_kwargs),
        }

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
        # A user family reaches worker processes as an object, unregistered there until now.
        if self.env_id(self.source) not in gym.registry:
            self.register()
        env = gym.make(self.env_id(self.source), **{**params, **kwargs})
        return ObsShiftWrapper(env, v.shift) if v.shift is not None else env
