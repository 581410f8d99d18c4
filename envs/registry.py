"""The families shipped with rltransfer, their lookup, and Gymnasium registration."""

from __future__ import annotations

import gymnasium as gym
from rltransfer.envs.acrobot import ACROBOT
from rltransfer.envs.cartpole import CARTPOLE
from rltransfer.envs.family import Family
from rltransfer.envs.lunar_lander import LUNAR_LANDER, LUNAR_LANDER_CONTINUOUS
from rltransfer.envs.mountain_car import MOUNTAIN_CAR
from rltransfer.envs.mountain_car_continuous import MOUNTAIN_CAR_CONTINUOUS
from rltransfer.envs.mujoco_families import HALF_CHEETAH, HOPPER, WALKER2D
from rltransfer.envs.pendulum import PENDULUM

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        CARTPOLE,
        ACROBOT,
        MOUNTAIN_CAR,
        PENDULUM,
        MOUNTAIN_CAR_CONTINUOUS,
        LUNAR_LANDER,
        LUNAR_LANDER_CONTINUOUS,
        HALF_CHEETAH,
        HOPPER,
        WALKER2D,
    )
}


def get_family(name: str) -> Family:
    """Look a family up by its lower-case name (``cartpole``) or title (``CartPole``)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key in FAMILIES:
        return FAMILIES[key]
    raise ValueError(f"unknown family '{name}'; choose one of: {', '.join(FAMILIES)}")


def register_family(family: Family) -> None:
    """Register every variant of ``family`` (held-out ones included) as a Gymnasium id."""
    for variant in family.all_variants():
        env_id = family.env_id(variant)
        if env_id in gym.registry:
            continue
        kwargs: dict[str, object] = dict(variant.params)
        entry_point = family.entry_point
        if variant.shift is not None:
            kwargs = {"entry_point": family.entry_point, "shift": variant.shift.to_dict(), **kwargs}
            entry_point = "rltransfer.envs.shift:shifted_env"
        gym.register(
            id=env_id,
            entry_point=entry_point,
            max_episode_steps=family.max_episode_steps,
            reward_threshold=family.threshold,
            kwargs=kwargs,
        )
