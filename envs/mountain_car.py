"""MountainCar with engine force and gravity as constructor arguments."""

from __future__ import annotations

from gymnasium.envs.classic_control.mountain_car import MountainCarEnv
from rltransfer.envs.family import Family, Param, Variant


class MountainCarFamilyEnv(MountainCarEnv):
    """Gymnasium's MountainCar (discrete) with its engine force and gravity set at construction."""

    def __init__(
        self,
        force: float = 0.001,
        gravity: float = 0.0025,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(render_mode=render_mode)
        p = MOUNTAIN_CAR.resolve(dict(force=force, gravity=gravity))
        self.force = p["force"]
        self.gravity = p["gravity"]


MOUNTAIN_CAR = Family(
    name="mountaincar",
    title="MountainCar",
    entry_point="rltransfer.envs.mountain_car:MountainCarFamilyEnv",
    params=(
        Param("force", 0.001, 0.0003, 0.003, "engine force per step"),
        Param("gravity", 0.0025, 0.001, 0.005, "gravity coefficient of the hill"),
    ),
    variants=(
        Variant("source", {}, "source", "Gymnasium MountainCar-v0 physics"),
        Variant("strong", {"force": 0.0012}, "near", "engine 1.2x stronger"),
        Variant("light-gravity", {"gravity": 0.0022}, "near", "gravity 0.88x"),
        Variant("weak", {"force": 0.0008}, "far", "engine 0.8x weaker"),
        Variant("steep", {"gravity": 0.003}, "far", "gravity 1.2x"),
    ),
    held_out={"force": (0.00105, 0.00115)},
    max_episode_steps=200,
    threshold=-110.0,
)
