"""A family written as data (YAML): a Gymnasium id or entry point, its parameters and its variants.

Any registered environment whose physical parameters are constructor arguments becomes a family
without Python code, e.g. in a spec or a ``--family wind.yaml`` file::

    name: windy-lander
    env: LunarLander-v3               # a gym.make id (``module:Id`` imports the module first)
    env_kwargs: {enable_wind: true}   # fixed constructor arguments, over the id's own
    params:                           # the varied ones: [default, low, high] or {default, low, high, doc}
      wind_power: [15.0, 0.0, 20.0]
    source: {}                        # the source's parameters (the defaults when empty)
    near: {calm: {wind_power: 5.0}}
    far: {storm: {wind_power: 19.0}}
    threshold: 200                    # default: the id's reward_threshold
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
from rltransfer.envs.family import Family, Param, Variant

KEYS = (
    "name",
    "title",
    "env",
    "entry_point",
    "env_kwargs",
    "params",
    "source",
    "near",
    "far",
    "held_out",
    "max_episode_steps",
    "threshold",
    "hyperparams",
    "doc",
)


class DefinitionError(ValueError):
    """A mistake in a family definition, at ``path`` (``params.g``) within it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"family definition{f' at {path}' if path else ''}: {message}")
        self.path, self.message = path, message


def family_from_mapping(raw: Any, ref: str | None = None) -> Family:
    """The ``Family`` a mapping describes; ``ref`` says where it was read (manifests record it)."""
    if not isinstance(raw, Mapping):
        raise DefinitionError("", "must be a mapping with name, env (or entry_point), params and variants")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise DefinitionError(unknown[0], f"unknown key '{unknown[0]}'; known keys: {', '.join(KEYS)}")
    for key in ("name", "params"):
        if key not in raw:
            raise DefinitionError("", f"missing required key '{key}'")
    name = str(raw["name"])
    entry_point, id_kwargs, id_steps, id_threshold = _environment(raw)
    params = tuple(_param(str(k), v) for k, v in _mapping(raw, "params").items())
    variants = [Variant("source", _values(raw.get("source") or {}, "source"), "source", "the source task")]
    for distance in ("near", "far"):
        for vname, values in _mapping(raw, distance).items():
            variants.append(Variant(str(vname), _values(values, f"{distance}.{vname}"), distance))
    held_out = {str(k): _interval(v, f"held_out.{k}") for k, v in _mapping(raw, "held_out").items()}
    threshold = raw.get("threshold", id_threshold)
    if threshold is None:
        raise DefinitionError("threshold", "the environment declares no reward_threshold; give threshold: <return>")
    steps = raw.get("max_episode_steps", id_steps)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
        raise DefinitionError("max_episode_steps", f"must be a positive integer (the time limit), got {steps!r}")
    try:
        return Family(
            name=name,
            title=str(raw.get("title") or "".join(p[:1].upper() + p[1:] for p in re.split(r"[-_.]", name))),
            entry_point=entry_point,
            params=params,
            variants=tuple(variants),
            held_out=held_out,
            max_episode_steps=steps,
            threshold=_number(threshold, "threshold"),
            hyperparams=dict(_mapping(raw, "hyperparams")),
            env_kwargs={**id_kwargs, **_mapping(raw, "env_kwargs")},
            ref=ref,
            base_id=str(raw["env"]).rpartition(":")[2] if "env" in raw else None,
        )
    except ValueError as e:
        raise DefinitionError("", str(e)) from None


def _environment(raw: Mapping[str, Any]) -> tuple[str, dict[str, Any], int | None, float | None]:
    """Entry point, fixed kwargs, time limit and threshold: from the Gymnasium id, or given."""
    if ("env" in raw) == ("entry_point" in raw):
        raise DefinitionError("env", "give either env (a Gymnasium id) or entry_point (module:Class), not both")
    if "entry_point" in raw:
        return str(raw["entry_point"]), {}, None, None
    env_id = str(raw["env"])
    module, sep, env_id = env_id.rpartition(":")
    if sep:
        try:
            importlib.import_module(module)  # Gymnasium's own convention: the module registers the id
        except ImportError as e:
            raise DefinitionError("env", f"cannot import '{module}' to register '{env_id}': {e}") from None
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as e:
        raise DefinitionError("env", f"{e}; give a registered Gymnasium id, e.g. Pendulum-v1") from None
    if not isinstance(spec.entry_point, str):
        raise DefinitionError(
            "env", f"'{env_id}' is registered with a callable; give its class as entry_point: module:Class"
        )
    return spec.entry_point, dict(spec.kwargs or {}), spec.max_episode_steps, spec.reward_threshold


def _mapping(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise DefinitionError(key, f"must be a mapping, got {value!r}")
    return value


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DefinitionError(path, f"must be a number, got {value!r}")
    return float(value)


def _param(name: str, spec: Any) -> Param:
    path = f"params.{name}"
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"default", "low", "high", "doc"})
        if unknown or not {"default", "low", "high"} <= set(spec):
            raise DefinitionError(path, "give {default, low, high} (and optionally doc), or [default, low, high]")
        values, doc = [spec["default"], spec["low"], spec["high"]], str(spec.get("doc", ""))
    elif isinstance(spec, list | tuple) and len(spec) == 3:
        values, doc = list(spec), ""
    else:
        raise DefinitionError(path, f"give [default, low, high] or {{default, low, high}}, got {spec!r}")
    default, low, high = (_number(v, path) for v in values)
    return Param(name, default, low, high, doc)


def _values(values: Any, path: str) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise DefinitionError(path, f"a variant is a mapping of parameter values, got {values!r}")
    return {str(k): _number(v, f"{path}.{k}") for k, v in values.items()}


def _interval(value: Any, path: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise DefinitionError(path, f"give [low, high], got {value!r}")
    low, high = (_number(v, path) for v in value)
    return low, high
