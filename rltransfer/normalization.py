"""Observation normalisation (SB3 ``VecNormalize``) whose statistics travel with a source policy.

Statistics are stored as plain numbers in the checkpoint manifest (never pickled), and the
task id of a multi-task observation is never normalised (``norm_obs_keys=["obs"]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from copy import deepcopy
from typing import Any, Literal

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize

from rltransfer.errors import UserError

OPTION_KEYS = {"norm_obs", "norm_reward", "clip_obs", "clip_reward"}
# The RL Zoo's ``normalize: true`` is ``VecNormalize()`` with its defaults: observations and rewards.
ZOO_DEFAULTS = {"norm_obs": True, "norm_reward": True}


def canonical(value: Any) -> Literal[False] | dict[str, Any]:
    """``normalize`` as resolved hyperparameters hold it: ``False``, or every ``VecNormalize`` option
    set explicitly. As in the RL Zoo, ``true`` and the keys a mapping leaves out take
    ``VecNormalize``'s defaults (observations and rewards normalised)."""
    if value is False or value is None:
        return False
    if value is True:
        return dict(ZOO_DEFAULTS)
    if isinstance(value, Mapping) and set(value) <= OPTION_KEYS:
        for key, option in value.items():  # checked here, not when a worker builds its VecNormalize
            if key.startswith("norm_") and not isinstance(option, bool):
                raise UserError(f"normalize.{key} must be true or false, got {option!r}")
            if key.startswith("clip_") and (
                isinstance(option, bool) or not isinstance(option, int | float) or option <= 0
            ):
                raise UserError(f"normalize.{key} must be a positive number, got {option!r}")
        return {**ZOO_DEFAULTS, **value}
    raise UserError(f"normalize must be true, false or a mapping with keys {sorted(OPTION_KEYS)}; got {value!r}")


def written_by_older(value: Any) -> Literal[False] | dict[str, Any]:
    """A source manifest's ``normalize`` as the rltransfer that wrote it meant it. Manifests now hold
    both ``norm_obs`` and ``norm_reward``; before the RL Zoo's meaning was adopted, ``true`` and a
    mapping without ``norm_reward`` normalised observations only."""
    if value is True or (isinstance(value, Mapping) and "norm_reward" not in value):
        return canonical({**(value if isinstance(value, Mapping) else {}), "norm_reward": False})
    return canonical(value)


def normalize_options(hp: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``VecNormalize`` options ``hp["normalize"]`` asks for, or ``None`` without normalisation."""
    return canonical(hp.get("normalize", False)) or None


def wrap(venv: VecEnv, hp: Mapping[str, Any], dict_obs: bool, training: bool = True) -> VecEnv:
    """``venv`` inside ``VecNormalize`` when the hyperparameters ask for it (eval envs: ``training=False``)."""
    options = normalize_options(hp)
    if options is None:
        return venv
    if not training:
        options = {**options, "norm_reward": False}
    keys = ["obs"] if dict_obs else None
    return VecNormalize(venv, training=training, gamma=hp.get("gamma", 0.99), norm_obs_keys=keys, **options)


def find(venv: VecEnv) -> VecNormalize | None:
    while isinstance(venv, VecEnvWrapper):
        if isinstance(venv, VecNormalize):
            return venv
        venv = venv.venv
    return None


def sync(train_env: VecEnv, eval_env: VecEnv) -> None:
    """Copy observation statistics from the training env's ``VecNormalize`` to the eval env's.

    Unlike SB3's ``sync_envs_normalization`` the two wrapper stacks need not be alike.
    """
    source, target = find(train_env), find(eval_env)
    if source is not None and target is not None and source.norm_obs:  # rewards only: no statistics
        target.obs_rms = deepcopy(source.obs_rms)


def _rms(vn: VecNormalize) -> RunningMeanStd:
    rms = vn.obs_rms
    return rms["obs"] if isinstance(rms, dict) else rms


def stats_of(venv: VecEnv) -> dict[str, Any] | None:
    """The observation statistics of ``venv`` as JSON-ready numbers, or ``None`` without normalisation."""
    vn = find(venv)
    if vn is None or not vn.norm_obs:
        return None
    rms = _rms(vn)
    return {"mean": rms.mean.tolist(), "var": rms.var.tolist(), "count": float(rms.count),
            "clip_obs": vn.clip_obs, "epsilon": vn.epsilon}  # fmt: skip


def load_stats(venv: VecEnv, stats: Mapping[str, Any], padded: bool = False) -> None:
    """Start ``venv``'s observation statistics from a source's (they keep updating while training).

    With ``padded`` (targets of several spaces padded into one) the source's statistics fill the
    first entries; one ``VecNormalize`` then serves every task, so they are a starting point only.
    """
    vn = find(venv)
    if vn is None or not vn.norm_obs:
        raise UserError(
            "the source carries observation normalisation but the target env has none; set normalize "
            "(with norm_obs true)"
        )
    rms = _rms(vn)
    mean = np.asarray(stats["mean"], dtype=np.float64)
    var = np.asarray(stats["var"], dtype=np.float64)
    if padded and mean.ndim == 1 and mean.shape[0] <= rms.mean.shape[0]:
        mean, var = _fill(rms.mean, mean), _fill(rms.var, var)
    if mean.shape != rms.mean.shape:
        raise UserError(
            f"source normalisation statistics have shape {mean.shape}, target observations {rms.mean.shape}"
        )
    rms.mean, rms.var, rms.count = mean, var, float(stats["count"])


def _fill(base: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    out = np.array(base, dtype=np.float64)
    out[: prefix.shape[0]] = prefix
    return out
