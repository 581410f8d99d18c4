"""Families of related Gymnasium environments, registered as ``rltransfer/<Family>-<variant>-v0``.

>>> import gymnasium as gym
>>> import rltransfer.envs
>>> env = gym.make("rltransfer/CartPole-long-v0")
>>> env.unwrapped.length
0.75
"""

from rltransfer.envs.crossspace import PaddedSpaces, Task, make_cross_vec_env, padded_spaces
from rltransfer.envs.definition import DefinitionError, family_from_mapping
from rltransfer.envs.family import Distance, Family, Param, Variant
from rltransfer.envs.guards import FiniteGuard, NonFiniteError
from rltransfer.envs.multitask import TaskIdWrapper, make_eval_env, make_multitask_vec_env
from rltransfer.envs.registry import (
    FAMILIES,
    get_family,
    load_family,
    read_family,
    register_family,
    split_env_id,
    split_short_id,
    user_family,
)
from rltransfer.envs.shift import STANDARD_SHIFTS, ObsShift, ObsShiftWrapper

for _family in FAMILIES.values():
    register_family(_family)

__all__ = [
    "FAMILIES",
    "STANDARD_SHIFTS",
    "DefinitionError",
    "Distance",
    "Family",
    "FiniteGuard",
    "NonFiniteError",
    "ObsShift",
    "ObsShiftWrapper",
    "PaddedSpaces",
    "Param",
    "Task",
    "TaskIdWrapper",
    "Variant",
    "family_from_mapping",
    "get_family",
    "load_family",
    "make_cross_vec_env",
    "make_eval_env",
    "make_multitask_vec_env",
    "padded_spaces",
    "read_family",
    "register_family",
    "split_env_id",
    "split_short_id",
    "user_family",
]
