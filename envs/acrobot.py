"""Acrobot with link lengths and masses as constructor arguments."""

from __future__ import annotations

import numpy as np
from gymnasium.envs.classic_control.acrobot import AcrobotEnv
from rltransfer.envs.family import Family, Param, Variant


class AcrobotFamilyEnv(AcrobotEnv):
    """Gymnasium's Acrobot with per-link length and mass.

    Derived quantities follow the parameters: each link's centre of mass sits at half its
    length and its moment of inertia scales as ``m * l**2`` (both equal Acrobot-v1's
    constants at the defaults). The goal height scales with the links too, so
    ``link_length_2`` matters to dynamics and termination, not only to rendering.
    """

    def __init__(
        self,
        link_length_1: float = 1.0,
        link_length_2: float = 1.0,
        link_mass_1: float = 1.0,
        link_mass_2: float = 1.0,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(render_mode=render_mode)
        p = ACROBOT.resolve(
            dict(
                link_length_1=link_length_1,
                link_length_2=link_length_2,
                link_mass_1=link_mass_1,
                link_mass_2=link_mass_2,
            )
        )
        self.LINK_LENGTH_1 = p["link_length_1"]
        self.LINK_LENGTH_2 = p["link_length_2"]
        self.LINK_MASS_1 = p["link_mass_1"]
        self.LINK_MASS_2 = p["link_mass_2"]
        self.LINK_COM_POS_1 = 0.5 * self.LINK_LENGTH_1
        self.LINK_COM_POS_2 = 0.5 * self.LINK_LENGTH_2
        # AcrobotEnv uses one inertia for both links; the mean keeps the defaults exact.
        self.LINK_MOI = 0.5 * (self.LINK_MASS_1 * self.LINK_LENGTH_1**2 + self.LINK_MASS_2 * self.LINK_LENGTH_2**2)

    def _terminal(self) -> bool:
        s = self.state
        assert s is not None, "Call reset before using AcrobotEnv object."
        tip_height = -self.LINK_LENGTH_1 * np.cos(s[0]) - self.LINK_LENGTH_2 * np.cos(s[1] + s[0])
        # Acrobot-v1: tip above the height of link 1's length (1.0 with unit links).
        return bool(tip_height > self.LINK_LENGTH_1)


ACROBOT = Family(
    name="acrobot",
    title="Acrobot",
    entry_point="rltransfer.envs.acrobot:AcrobotFamilyEnv",
    params=(
        Param("link_length_1", 1.0, 0.5, 2.0, "length of the first link [m]"),
        Param("link_length_2", 1.0, 0.5, 2.0, "length of the second link [m]"),
        Param("link_mass_1", 1.0, 0.2, 3.0, "mass of the first link [kg]"),
        Param("link_mass_2", 1.0, 0.2, 3.0, "mass of the second link [kg]"),
    ),
    variants=(
        Variant("source", {}, "source", "Gymnasium Acrobot-v1 physics"),
        Variant("long1", {"link_length_1": 1.25}, "near", "first link 1.25x longer"),
        Variant("heavy1", {"link_mass_1": 1.5}, "near", "first link 1.5x heavier"),
        Variant("long1-far", {"link_length_1": 1.5}, "far", "first link 1.5x longer"),
        Variant("heavy1-far", {"link_mass_1": 2.0}, "far", "first link 2x heavier"),
        Variant("heavy2", {"link_mass_2": 2.0}, "far", "second link 2x heavier"),
    ),
    held_out={"link_length_2": (1.1, 1.3)},
    max_episode_steps=500,
    threshold=-100.0,
)
