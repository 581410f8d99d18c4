"""MountainCarContinuous with engine power as a constructor argument."""

from __future__ import annotations

from gymnasium.envs.classic_control.continuous_mountain_car import Continuous_MountainCarEnv
from rltransfer.envs.family import Family, Param, Variant


class MountainCarContinuousFamilyEnv(Continuous_MountainCarEnv):
    """Gymnasium's MountainCarContinuous with its engine power set at construction."""

    def __init__(self, power: float = 0.0015, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode)
        self.power = MOUNTAIN_CAR_CONTINUOUS.resolve({"power": power})["power"]


MOUNTAIN_CAR_CONTINUOUS = Family(
    name="mountaincarcontinuous",
    title="MountainCarContinuous",
    entry_point="rltransfer.envs.mountain_car_continuous:MountainCarContinuousFamilyEnv",
    params=(Param("power", 0.0015, 0.0005, 0.004, "engine power per unit of action"),),
    variants=(
        Variant("source", {}, "source", "Gymnasium MountainCarContinuous-v0 physics"),
        Variant("strong", {"power": 0.0018}, "near", "engine 1.2x stronger"),
        Variant("weak", {"power": 0.0012}, "near", "engine 0.8x weaker"),
        Variant("very-weak", {"power": 0.0009}, "far", "engine 0.6x weaker"),
    ),
    held_out={"power": (0.0016, 0.0017)},
    max_episode_steps=999,
    threshold=90.0,
)
