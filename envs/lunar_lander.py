"""LunarLander families (``box2d`` extra): gravity, wind, turbulence and engine powers.

This module declares the families only; the environment classes live in
``lunar_lander_env`` so that listing families never imports Box2D.
"""

from __future__ import annotations

from rltransfer.envs.family import Family, Param, Variant

_PARAMS = (
    Param("gravity", -10.0, -11.99, -1.0, "gravitational acceleration (negative) [m/s^2]"),
    Param("wind_power", 0.0, 0.0, 20.0, "maximum linear wind (0 disables wind)"),
    Param("turbulence_power", 0.0, 0.0, 2.0, "maximum rotational turbulence"),
    Param("main_engine_power", 13.0, 5.0, 20.0, "main engine power"),
    Param("side_engine_power", 0.6, 0.2, 1.2, "side engine power"),
)
_VARIANTS = (
    Variant("source", {}, "source", "Gymnasium LunarLander-v3 physics"),
    Variant("low-gravity", {"gravity": -8.0}, "near", "gravity 0.8x"),
    Variant("breeze", {"wind_power": 5.0, "turbulence_power": 0.5}, "near", "light wind"),
    Variant("heavy", {"gravity": -11.5}, "far", "gravity 1.15x"),
    Variant("storm", {"wind_power": 15.0, "turbulence_power": 1.5}, "far", "strong wind and turbulence"),
    Variant("weak-engine", {"main_engine_power": 9.0}, "far", "main engine 0.7x"),
)


def _lander(name: str, title: str, env_class: str) -> Family:
    return Family(
        name=name,
        title=title,
        entry_point=f"rltransfer.envs.lunar_lander_env:{env_class}",
        params=_PARAMS,
        variants=_VARIANTS,
        held_out={"gravity": (-9.5, -9.0)},
        max_episode_steps=1000,
        threshold=200.0,
        extra="box2d",
    )


LUNAR_LANDER = _lander("lunarlander", "LunarLander", "LunarLanderFamilyEnv")
LUNAR_LANDER_CONTINUOUS = _lander("lunarlandercontinuous", "LunarLanderContinuous", "LunarLanderContinuousFamilyEnv")
