"""CartPole with pole length, masses, gravity and force as constructor arguments."""

from __future__ import annotations

from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from rltransfer.envs.family import Family, Param, Variant


class CartPoleFamilyEnv(CartPoleEnv):
    """Gymnasium's CartPole with its physics set at construction.

    CartPole caches ``total_mass`` and ``polemass_length`` in ``__init__``; both are
    recomputed here, which is why parameters must never be set on a built env.
    """

    def __init__(
        self,
        length: float = 0.5,
        masspole: float = 0.1,
        masscart: float = 1.0,
        gravity: float = 9.8,
        force_mag: float = 10.0,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(render_mode=render_mode)
        p = CARTPOLE.resolve(
            dict(length=length, masspole=masspole, masscart=masscart, gravity=gravity, force_mag=force_mag)
        )
        self.length = p["length"]
        self.masspole = p["masspole"]
        self.masscart = p["masscart"]
        self.gravity = p["gravity"]
        self.force_mag = p["force_mag"]
        self.total_mass = self.masspole + self.masscart
        self.polemass_length = self.masspole * self.length


CARTPOLE = Family(
    name="cartpole",
    title="CartPole",
    entry_point="rltransfer.envs.cartpole:CartPoleFamilyEnv",
    params=(
        Param("length", 0.5, 0.1, 2.0, "half the pole's length [m]"),
        Param("masspole", 0.1, 0.01, 2.0, "pole mass [kg]"),
        Param("masscart", 1.0, 0.1, 5.0, "cart mass [kg]"),
        Param("gravity", 9.8, 1.0, 40.0, "gravitational acceleration [m/s^2]"),
        Param("force_mag", 10.0, 1.0, 30.0, "push force [N]"),
    ),
    variants=(
        Variant("source", {}, "source", "Gymnasium CartPole-v1 physics"),
        Variant("long", {"length": 0.75}, "near", "pole 1.5x longer"),
        Variant("heavy", {"masspole": 0.5, "masscart": 2.0}, "near", "heavier pole and cart"),
        Variant("gravity15", {"gravity": 15.0}, "near", "1.5x gravity"),
        Variant("longer", {"length": 1.0}, "far", "pole 2x longer (source fails zero-shot)"),
        Variant("gravity30", {"gravity": 30.0}, "far", "3x gravity"),
        Variant("weak", {"force_mag": 4.0, "masscart": 2.0}, "far", "weak push on a heavy cart"),
    ),
    held_out={"length": (0.55, 0.7), "gravity": (10.5, 14.0)},
    max_episode_steps=500,
    threshold=475.0,
)
