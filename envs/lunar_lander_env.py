"""LunarLander environment classes with per-instance physics (imports Box2D)."""

from __future__ import annotations

from typing import Any

from gymnasium.envs.box2d import lunar_lander as _ll
from rltransfer.envs.lunar_lander import LUNAR_LANDER, LUNAR_LANDER_CONTINUOUS, Family


class _FamilyLander(_ll.LunarLander):
    FAMILY: Family = LUNAR_LANDER
    CONTINUOUS = False

    def __init__(
        self,
        gravity: float = -10.0,
        wind_power: float = 0.0,
        turbulence_power: float = 0.0,
        main_engine_power: float = 13.0,
        side_engine_power: float = 0.6,
        render_mode: str | None = None,
    ) -> None:
        p = self.FAMILY.resolve(
            dict(
                gravity=gravity,
                wind_power=wind_power,
                turbulence_power=turbulence_power,
                main_engine_power=main_engine_power,
                side_engine_power=side_engine_power,
            )
        )
        windy = p["wind_power"] > 0 or p["turbulence_power"] > 0
        super().__init__(
            render_mode=render_mode,
            continuous=self.CONTINUOUS,
            gravity=p["gravity"],
            enable_wind=windy,
            wind_power=p["wind_power"],
            turbulence_power=p["turbulence_power"],
        )
        self.main_engine_power = p["main_engine_power"]
        self.side_engine_power = p["side_engine_power"]

    def step(self, action: Any) -> Any:
        # Gymnasium reads the engine powers from module constants at step time; this env's own
        # values stand in for them during its step (envs step one at a time in a process).
        saved = _ll.MAIN_ENGINE_POWER, _ll.SIDE_ENGINE_POWER
        _ll.MAIN_ENGINE_POWER, _ll.SIDE_ENGINE_POWER = self.main_engine_power, self.side_engine_power
        try:
            return super().step(action)
        finally:
            _ll.MAIN_ENGINE_POWER, _ll.SIDE_ENGINE_POWER = saved


class LunarLanderFamilyEnv(_FamilyLander):
    """Discrete LunarLander with gravity, wind, turbulence and engine powers as constructor arguments."""


class LunarLanderContinuousFamilyEnv(_FamilyLander):
    """Continuous LunarLander with the same parameters."""

    FAMILY = LUNAR_LANDER_CONTINUOUS
    CONTINUOUS = True
