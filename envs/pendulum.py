"""Pendulum with gravity, mass and length as constructor arguments."""

from __future__ import annotations

from gymnasium.envs.classic_control.pendulum import PendulumEnv
from rltransfer.envs.family import Family, Param, Variant


class PendulumFamilyEnv(PendulumEnv):
    """Gymnasium's Pendulum with ``g``, ``m`` and ``l`` set at construction.

    The physical gravity parameter is ``g`` (an attribute named ``gravity`` would be a no-op).
    """

    def __init__(
        self,
        g: float = 10.0,
        m: float = 1.0,
        l: float = 1.0,  # noqa: E741 - Gymnasium's own name for the length
        render_mode: str | None = None,
    ) -> None:
        p = PENDULUM.resolve(dict(g=g, m=m, l=l))
        super().__init__(render_mode=render_mode, g=p["g"])
        self.m = p["m"]
        self.l = p["l"]


PENDULUM = Family(
    name="pendulum",
    title="Pendulum",
    entry_point="rltransfer.envs.pendulum:PendulumFamilyEnv",
    params=(
        Param("g", 10.0, 1.0, 30.0, "gravitational acceleration [m/s^2]"),
        Param("m", 1.0, 0.2, 3.0, "pendulum mass [kg]"),
        Param("l", 1.0, 0.3, 2.0, "pendulum length [m]"),
    ),
    variants=(
        Variant("source", {}, "source", "Gymnasium Pendulum-v1 physics"),
        Variant("g12", {"g": 12.0}, "near", "1.2x gravity"),
        Variant("m1.2", {"m": 1.2}, "near", "1.2x mass"),
        Variant("g15", {"g": 15.0}, "far", "1.5x gravity"),
        Variant("m1.5", {"m": 1.5}, "far", "1.5x mass"),
        Variant("l1.3", {"l": 1.3}, "far", "1.3x length"),
    ),
    held_out={"g": (10.5, 11.5), "m": (1.05, 1.15)},
    max_episode_steps=200,
    threshold=-250.0,
)
