"""The normalisation saved beside a plain SB3 model (``VecNormalize.save``), read without running it.

An RL Zoo agent trained with ``normalize: true`` saw normalised observations: its weights mean
something only with the statistics it was trained with, which SB3 pickles into a separate file
(``<run>/<env_id>/vecnormalize.pkl`` in the RL Zoo's layout, ``vec_normalize.pkl`` in the
Hugging Face ``sb3/`` repositories). A pickle runs whatever callables it names, so this reads
it with an unpickler that builds numpy arrays and nothing else: every other class the file
names becomes an inert record of its arguments and state, from which the options (whether
observations and rewards were normalised, the clips) and the statistics are taken.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rltransfer.errors import UserError

# Relative to the model zip: the RL Zoo's layout, then Hugging Face's sb3/ repositories.
CANDIDATES = ("{stem}/vecnormalize.pkl", "vecnormalize.pkl", "vec_normalize.pkl")

# The only callables the file may run: numpy's array, dtype and scalar reconstruction
# (``numpy.core`` before numpy 2, ``numpy._core`` since), the set torch's ``weights_only`` loading allows too.
_NUMPY = {"_reconstruct", "scalar", "_frombuffer", "ndarray", "dtype"}
_NUMPY_MODULES = {"numpy", *(f"numpy.{core}.{m}" for core in ("core", "_core") for m in ("multiarray", "numeric"))}


class Inert:
    """Stands in for a class named in the file: keeps its constructor arguments and state, runs nothing."""

    name: ClassVar[str] = ""
    args: tuple[Any, ...]
    state: Any

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = super().__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module in _NUMPY_MODULES and name in _NUMPY:
            if module.startswith("numpy.core.") and hasattr(np, "_core"):  # a numpy 1 file under numpy 2
                module = module.replace("numpy.core.", "numpy._core.", 1)
            return super().find_class(module, name)
        return type(name, (Inert,), {"name": f"{module}.{name}"})


def candidates(zip_path: Path) -> list[Path]:
    """Where SB3 users keep the ``VecNormalize`` file of the model at ``zip_path``, the RL Zoo's layout first."""
    return [zip_path.parent / pattern.format(stem=zip_path.stem) for pattern in CANDIDATES]


def find_stats_file(zip_path: Path) -> Path | None:
    """The ``VecNormalize`` file saved with the model at ``zip_path``, if one lies in ``candidates``."""
    return next((path for path in candidates(zip_path) if path.is_file()), None)


@dataclass(frozen=True)
class SavedNormalization:
    """What a ``VecNormalize`` file says about the policy saved with it."""

    options: dict[str, Any]  # norm_obs, norm_reward, clip_obs, clip_reward: ``hp["normalize"]`` spelling
    obs_stats: dict[str, Any] | None  # as ``normalization.stats_of`` writes them; None without norm_obs


def read_file(path: Path) -> SavedNormalization:
    """The normalisation a ``VecNormalize`` file holds: its options, and its observation statistics."""

    def bad(why: str) -> UserError:
        return UserError(f"'{path}' is not a VecNormalize file saved by SB3 ({why}); remove it or replace it")

    try:
        root = _Unpickler(io.BytesIO(path.read_bytes())).load()
    except Exception as e:  # any malformed pickle: truncated, unknown opcode, bad arguments
        raise bad(type(e).__name__) from None
    if not isinstance(root, Inert) or not root.name.endswith("VecNormalize") or not isinstance(root.state, dict):
        raise bad(f"it holds {getattr(root, 'name', type(root).__name__)}")
    state = root.state
    try:
        options = {
            "norm_obs": bool(state.get("norm_obs", True)),
            "norm_reward": bool(state.get("norm_reward", True)),
            "clip_obs": float(state.get("clip_obs", 10.0)),
            "clip_reward": float(state.get("clip_reward", 10.0)),
        }
    except (TypeError, ValueError):
        raise bad("options that are not numbers") from None
    if not options["norm_obs"]:
        return SavedNormalization(options, None)
    rms = state.get("obs_rms")
    if isinstance(rms, dict):
        raise UserError(
            f"'{path}' normalises dictionary observations; a transfer source must be an MlpPolicy on a Box space"
        )
    rms_state = rms.state if isinstance(rms, Inert) else None
    if not isinstance(rms_state, dict) or not {"mean", "var", "count"} <= set(rms_state):
        raise bad("no observation statistics")
    mean = np.asarray(rms_state["mean"], dtype=np.float64)
    var = np.asarray(rms_state["var"], dtype=np.float64)
    count = float(rms_state["count"])
    if mean.ndim != 1 or mean.shape != var.shape or not (np.isfinite(mean).all() and np.isfinite(var).all()):
        raise bad(f"observation statistics of shapes {mean.shape} and {var.shape}")
    if (var < 0).any() or not count > 0:
        raise bad("negative variance or count")
    stats = {
        "mean": mean.tolist(),
        "var": var.tolist(),
        "count": count,
        "clip_obs": options["clip_obs"],
        "epsilon": float(state.get("epsilon", 1e-8)),
    }
    return SavedNormalization(options, stats)
