"""Multi-task vectorised environments: several variants of a family in one SB3 VecEnv."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from rltransfer.envs.family import Family, Variant
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv


class TaskIdWrapper(gym.ObservationWrapper):
    """Observation becomes ``{"obs": obs, "task_id": k}`` with a ``Discrete(K)`` task id."""

    def __init__(self, env: gym.Env, task_id: int, n_tasks: int) -> None:
        super().__init__(env)
        if not 0 <= task_id < n_tasks:
            raise ValueError(f"task_id {task_id} outside [0, {n_tasks})")
        self.task_id = task_id
        self.observation_space = gym.spaces.Dict(
            {"obs": env.observation_space, "task_id": gym.spaces.Discrete(n_tasks)}
        )

    def observation(self, observation: Any) -> dict[str, Any]:
        return {"obs": observation, "task_id": self.task_id}


def make_multitask_vec_env(
    family: Family,
    variants: Sequence[Variant | str],
    n_envs_per_task: int = 1,
    seed: int | None = None,
    monitor: bool = True,
) -> VecEnv:
    """One ``DummyVecEnv`` holding ``n_envs_per_task`` sub-envs of each variant, task-id tagged.

    Sub-environments are ordered task-major (task 0's envs first). The returned env has
    ``task_names`` and ``env_task_ids`` attributes for per-task logging.
    """
    resolved = [family.variant(v) if isinstance(v, str) else v for v in variants]
    if not resolved:
        raise ValueError("a multi-task env needs at least one target variant")
    names = [v.name for v in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"target variants must be distinct, got {names}")
    if n_envs_per_task < 1:
        raise ValueError(f"n_envs_per_task must be >= 1, got {n_envs_per_task}")
    n_tasks = len(resolved)

    def factory(variant: Variant, task_id: int) -> Callable[[], gym.Env]:
        def _make() -> gym.Env:
            env = family.make(variant)
            if monitor:
                env = Monitor(env)
            return TaskIdWrapper(env, task_id, n_tasks)

        return _make

    fns = [factory(v, k) for k, v in enumerate(resolved) for _ in range(n_envs_per_task)]
    vec_env = DummyVecEnv(fns)
    vec_env.task_names = names  # type: ignore[attr-defined]
    vec_env.env_task_ids = np.repeat(np.arange(n_tasks), n_envs_per_task)  # type: ignore[attr-defined]
    if seed is not None:
        vec_env.seed(seed)
    return vec_env


def make_eval_env(
    family: Family,
    variant: Variant | str,
    n_envs: int,
    task_id: int | None = None,
    n_tasks: int | None = None,
) -> VecEnv:
    """``n_envs`` copies of one variant for batched evaluation (one episode per env).

    With ``task_id`` the observations are tagged for a multi-task policy; without, they are
    the plain Box observations a single-task (source) policy expects.
    """
    v = family.variant(variant) if isinstance(variant, str) else variant

    def _make() -> gym.Env:
        env: gym.Env = Monitor(family.make(v))
        if task_id is not None:
            env = TaskIdWrapper(env, task_id, n_tasks if n_tasks is not None else task_id + 1)
        return env

    return DummyVecEnv([_make] * n_envs)
