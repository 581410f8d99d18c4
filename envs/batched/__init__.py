"""Batched family environments: all sub-environments of a family stepped as numpy arrays.

Each class is an SB3 ``VecEnv`` whose trajectories are identical to ``DummyVecEnv`` over
``Monitor``-wrapped single envs of the same family (same seeds and actions), with
per-sub-environment physical parameters, so a K-task multi-task env is one array step.

>>> from rltransfer.envs import get_family
>>> from rltransfer.envs.batched import make_batched_vec_env
>>> family = get_family("cartpole")
>>> env = make_batched_vec_env(family, [family.variant("long"), family.variant("heavy")], [0, 1])
>>> env.reset()["obs"].shape
(2, 4)
"""

from __future__ import annotations

from collections.abc import Sequence

from rltransfer.envs.batched.acrobot import BatchedAcrobot
from rltransfer.envs.batched.base import BatchedFamilyVecEnv, scalar_square
from rltransfer.envs.batched.cartpole import BatchedCartPole
from rltransfer.envs.batched.mountain_car import BatchedMountainCar
from rltransfer.envs.batched.mountain_car_continuous import BatchedMountainCarContinuous
from rltransfer.envs.batched.pendulum import BatchedPendulum
from rltransfer.envs.family import Family, Variant

BATCHED: dict[str, type[BatchedFamilyVecEnv]] = {
    f"{cls.env_class.__module__}:{cls.env_class.__name__}": cls
    for cls in (BatchedCartPole, BatchedAcrobot, BatchedMountainCar, BatchedMountainCarContinuous, BatchedPendulum)
}


def batched_class(family: Family) -> type[BatchedFamilyVecEnv] | None:
    """The batched env for ``family``'s entry point, or ``None`` when it has none."""
    return BATCHED.get(family.entry_point)


def make_batched_vec_env(
    family: Family,
    variants: Sequence[Variant],
    task_ids: Sequence[int] | None = None,
    n_tasks: int | None = None,
    monitor: bool = True,
) -> BatchedFamilyVecEnv:
    """One sub-environment per entry of ``variants`` (repeat a variant for several copies).

    Raises:
        ValueError: ``family`` has no batched implementation, or a variant shifts observations
            (the batched classes step the raw physics only).
    """
    cls = batched_class(family)
    if cls is None:
        raise ValueError(f"family '{family.name}' has no batched environment; use a DummyVecEnv")
    shifted = [v.name for v in variants if getattr(v, "shift", None) is not None]
    if shifted:
        raise ValueError(f"observation-shift variants {shifted} cannot be batched; use a DummyVecEnv")
    params = [family.resolve(v.params) for v in variants]
    return cls(params, family.max_episode_steps, task_ids=task_ids, n_tasks=n_tasks, monitor=monitor)


__all__ = [
    "BATCHED",
    "BatchedAcrobot",
    "BatchedCartPole",
    "BatchedFamilyVecEnv",
    "BatchedMountainCar",
    "BatchedMountainCarContinuous",
    "BatchedPendulum",
    "batched_class",
    "make_batched_vec_env",
    "scalar_square",
]
