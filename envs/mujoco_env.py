"""MuJoCo locomotion classes whose body masses and friction are constructor arguments (imports MuJoCo)."""

from __future__ import annotations

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


class HalfCheetahFamilyEnv(HalfCheetahEnv):
    def __init__(self, mass_scale: float = 1.0, friction_scale: float = 1.0, **kwargs: Any) -> None:
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
