"""MuJoCo locomotion classes whose body masses and friction are constructor arguments (imports MuJoCo)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import mujoco
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv
from rltransfer.envs.family import Family
from rltransfer.envs.mujoco_families import HALF_CHEETAH, HOPPER, WALKER2D


def _scale_model(env: Any, family: Family, mass_scale: float, friction_scale: float) -> None:
    """Scale the loaded model in place and recompute MuJoCo's derived constants."""
    p = family.resolve({"mass_scale": mass_scale, "friction_scale": friction_scale})
    model = env.model
    model.body_mass[:] = model.body_mass * p["mass_scale"]
    model.body_inertia[:] = model.body_inertia * p["mass_scale"]
    model.geom_friction[:, 0] = model.geom_friction[:, 0] * p["friction_scale"]
    mujoco.mj_setConst(model, env.data)
    env.mass_scale, env.friction_scale = p["mass_scale"], p["friction_scale"]


@contextmanager
def settotalmass_muted() -> Iterator[None]:
    """MuJoCo >= 4 warns, on every compile, that Gymnasium's ``half_cheetah.xml`` uses the deprecated
    ``settotalmass``: the model compiles the same, the fix is Gymnasium's asset, and a grid builds
    hundreds of envs, so that one warning is dropped while an env is built; any other goes where it went."""
    previous: Callable[[str], None] | None = mujoco.get_mju_user_warning()

    def warn(message: str) -> None:
        if "'settotalmass' is deprecated" in message:
            return
        if previous is not None:
            previous(message)
        else:  # MuJoCo's own default
            print(f"WARNING: {message}\n", file=sys.stderr)

    mujoco.set_mju_user_warning(warn)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


class HalfCheetahFamilyEnv(HalfCheetahEnv):
    def __init__(self, mass_scale: float = 1.0, friction_scale: float = 1.0, **kwargs: Any) -> None:
        with settotalmass_muted():
            super().__init__(**kwargs)
        _scale_model(self, HALF_CHEETAH, mass_scale, friction_scale)


class HopperFamilyEnv(HopperEnv):
    def __init__(self, mass_scale: float = 1.0, friction_scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _scale_model(self, HOPPER, mass_scale, friction_scale)


class Walker2dFamilyEnv(Walker2dEnv):
    def __init__(self, mass_scale: float = 1.0, friction_scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _scale_model(self, WALKER2D, mass_scale, friction_scale)
