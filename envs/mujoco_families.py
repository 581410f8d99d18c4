"""MuJoCo locomotion families (``mujoco`` extra): body-mass and friction scales.

Declarations only; the environment classes live in ``mujoco_env`` so that listing families
never imports MuJoCo.
"""

from __future__ import annotations

from rltransfer.envs.family import Family, Param, Variant

_PARAMS = (
    Param("mass_scale", 1.0, 0.5, 2.0, "every body's mass (and inertia) times this"),
    Param("friction_scale", 1.0, 0.3, 2.0, "every geom's sliding friction times this"),
)
_VARIANTS = (
    Variant("source", {}, "source", "Gymnasium v5 model"),
    Variant("heavy", {"mass_scale": 1.25}, "near", "bodies 1.25x heavier"),
    Variant("slippery", {"friction_scale": 0.7}, "near", "friction 0.7x"),
    Variant("heavy-far", {"mass_scale": 1.6}, "far", "bodies 1.6x heavier"),
    Variant("ice", {"friction_scale": 0.4}, "far", "friction 0.4x"),
)


def _family(name: str, title: str, threshold: float) -> Family:
    return Family(
        name=name,
        title=title,
        entry_point=f"rltransfer.envs.mujoco_env:{title}FamilyEnv",
        params=_PARAMS,
        variants=_VARIANTS,
        held_out={"mass_scale": (1.05, 1.15)},
        max_episode_steps=1000,
        threshold=threshold,
        extra="mujoco",
    )


# Thresholds are moderate returns reachable with short PPO budgets, not the RL Zoo's 1M-step scores.
HALF_CHEETAH = _family("halfcheetah", "HalfCheetah", 1500.0)
HOPPER = _family("hopper", "Hopper", 1000.0)
WALKER2D = _family("walker2d", "Walker2d", 1000.0)
