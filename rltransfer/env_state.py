"""The state of a training ``VecEnv`` chain, saved and put back so that training continues exactly.

A chain is rltransfer's wrappers (``VecNormalize``, ``FiniteGuard``) over a batched family env
or a ``DummyVecEnv``. Batched envs save their arrays and RNGs (``get_state``). A
``DummyVecEnv``'s sub-environments are pickled whole, wrappers and RNGs included, when they
pickle as themselves. Gymnasium's MuJoCo envs pickle as their constructor arguments
(``EzPickle``: a fresh env), so their simulation is saved apart: a copy of its ``MjData`` (the
whole simulation state, put back with ``mj_copyData``) and its RNG; the wrappers around it are
pickled. Box2D envs (LunarLander) hold a Box2D world that cannot be saved: such a chain's
wrappers are still saved, and ``restore`` starts new episodes (``EnvState.base`` is ``None``).
"""

from __future__ import annotations

import copy
import io
import pickle
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper, VecNormalize

from rltransfer.envs import FiniteGuard
from rltransfer.envs.batched.base import BatchedFamilyVecEnv

# VecNormalize's running statistics and per-env discounted returns (its ``__getstate__`` drops the returns).
_NORMALIZE_FIELDS = ("obs_rms", "ret_rms", "returns", "old_obs", "old_reward")


@dataclass
class EnvState:
    """Per layer of the chain, outermost first; ``base`` is ``None`` where the episodes cannot be saved."""

    layers: list[dict[str, Any] | None]
    base: dict[str, Any] | None
    why_not: str | None = None  # why ``base`` is None

    def to_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "base": self.base, "why_not": self.why_not}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EnvState:
        return cls(d["layers"], d["base"], d.get("why_not"))


def _chain(venv: VecEnv) -> tuple[list[VecEnvWrapper], VecEnv]:
    wrappers = []
    while isinstance(venv, VecEnvWrapper):
        wrappers.append(venv)
        venv = venv.venv
    return wrappers, venv


def _wrapper_state(w: VecEnvWrapper) -> dict[str, Any] | None:
    """A wrapper's state; ``None`` for one rltransfer does not know (it is left as it is on restore)."""
    if isinstance(w, VecNormalize):
        return {f: copy.deepcopy(getattr(w, f, None)) for f in _NORMALIZE_FIELDS}
    if isinstance(w, FiniteGuard):
        return {"steps": w.steps}
    return None


def _set_wrapper_state(w: VecEnvWrapper, saved: dict[str, Any] | None) -> None:
    for name, value in (saved or {}).items():
        setattr(w, name, copy.deepcopy(value))


def _simulation(env: gym.Env) -> Any | None:
    """``env``'s unwrapped MuJoCo env (its state: ``data`` and ``np_random``), or ``None``."""
    inner = env.unwrapped
    return inner if type(getattr(inner, "data", None)).__name__ == "MjData" else None


def _unpicklable(env: gym.Env) -> str | None:
    """Why pickling ``env`` (its MuJoCo simulation apart) would not keep its episode (``None``: it would)."""
    layer: Any = env
    while layer is not None and layer is not _simulation(env):
        if isinstance(layer, gym.utils.EzPickle):
            return f"{type(env.unwrapped).__name__} pickles as its constructor arguments (a fresh env)"
        layer = getattr(layer, "env", None)
    return None


class _Pickler(pickle.Pickler):
    """Pickles the MuJoCo simulations in ``sims`` as references, by index (their state is saved apart)."""

    def __init__(self, file: io.BytesIO, sims: list[Any]) -> None:
        super().__init__(file)
        self.index = {id(s): i for i, s in enumerate(sims) if s is not None}

    def persistent_id(self, obj: Any) -> Any:
        i = self.index.get(id(obj))
        return None if i is None else ("simulation", i)


class _Unpickler(pickle.Unpickler):
    """Resolves ``_Pickler``'s references to the simulations of the env being restored."""

    def __init__(self, file: io.BytesIO, sims: list[Any]) -> None:
        super().__init__(file)
        self.sims = sims

    def persistent_load(self, pid: Any) -> Any:
        return self.sims[pid[1]]


def _dummy_state(base: DummyVecEnv) -> dict[str, Any]:
    sims = [_simulation(env) for env in base.envs]
    buf = io.BytesIO()
    _Pickler(buf, sims).dump(base.envs)
    return {
        "dummy": buf.getvalue(),
        "simulations": [None if s is None else (copy.deepcopy(s.data), s.np_random.bit_generator.state) for s in sims],
        "seeds": list(base._seeds),
        "options": list(base._options),
    }


def _set_dummy_state(base: DummyVecEnv, saved: dict[str, Any]) -> None:
    sims = [_simulation(env) for env in base.envs]
    if len(saved["simulations"]) != len(sims):
        raise ValueError(f"{len(saved['simulations'])} saved sub-environments for {len(sims)}")
    for sim, kept in zip(sims, saved["simulations"], strict=True):
        if kept is not None:
            import mujoco

            if sim is None:
                raise ValueError("a saved MuJoCo simulation for a sub-environment that has none")

            mujoco.mj_copyData(sim.data, sim.model, kept[0])
            sim.np_random.bit_generator.state = kept[1]
    # The wrappers (Monitor, TimeLimit, task ids...) as saved, around this env's own simulations.
    base.envs = _Unpickler(io.BytesIO(saved["dummy"]), sims).load()
    base._seeds, base._options = list(saved["seeds"]), list(saved["options"])


def capture(venv: VecEnv) -> EnvState:
    """The chain's state now (copies: later steps do not change it)."""
    wrappers, base = _chain(venv)
    layers = [_wrapper_state(w) for w in wrappers]
    unknown = [type(w).__name__ for w, layer in zip(wrappers, layers, strict=True) if layer is None]
    if unknown:  # its state cannot be put back: the episodes restart rather than continue half-restored
        return EnvState(layers, None, f"{unknown[0]} has no saved state")
    if isinstance(base, BatchedFamilyVecEnv):
        return EnvState(layers, {"batched": base.get_state()})
    if isinstance(base, DummyVecEnv):
        why = next((w for w in map(_unpicklable, base.envs) if w is not None), None)
        if why is None:
            try:
                return EnvState(layers, _dummy_state(base))
            except Exception as e:  # an attribute that does not pickle: a lock, a handle, a C object
                why = f"{type(base.envs[0].unwrapped).__name__} does not pickle ({type(e).__name__}: {e})"
        return EnvState(layers, None, why)
    return EnvState(layers, None, f"{type(base).__name__} has no saved state")


def restore(venv: VecEnv, saved: EnvState, reset_seed: int) -> Any | None:
    """Put ``saved`` back into a chain built like the saved one.

    Returns the observation to continue from when the episodes could not be saved (new
    episodes, seeded ``reset_seed + i``), else ``None``: training goes on with its own last
    observation.
    """
    wrappers, base = _chain(venv)
    if len(wrappers) != len(saved.layers):
        raise ValueError(f"the env has {len(wrappers)} wrappers, the saved state {len(saved.layers)}")
    for w, layer in zip(wrappers, saved.layers, strict=True):
        _set_wrapper_state(w, layer)
    if saved.base is None:
        venv.seed(reset_seed)
        return venv.reset()
    if "batched" in saved.base:
        assert isinstance(base, BatchedFamilyVecEnv)
        base.set_state(saved.base["batched"])
    else:
        assert isinstance(base, DummyVecEnv)
        _set_dummy_state(base, saved.base)
    return None
