"""Vectorised environments of a family: multi-task training, single-task training, evaluation.

Families with a batched implementation (``rltransfer.envs.batched``) get one array-stepped
``VecEnv`` by default; ``batched=False`` (or a family without one) gives the equivalent
``DummyVecEnv`` of ``Monitor``-wrapped single envs. Both produce identical trajectories.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from rltransfer.envs.batched import batched_class, make_batched_vec_env
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


def _vec_env(
    family: Family,
    variants: Sequence[Variant],
    task_ids: Sequence[int] | None,
    n_tasks: int | None,
    monitor: bool,
    batched: bool,
) -> VecEnv:
    """One sub-environment per entry of ``variants``: batched when possible and asked for."""
    # Observation-shift variants wrap single envs; the batched classes step raw physics only.
    if batched and batched_class(family) is not None and not any(v.shift for v in variants):
        return make_batched_vec_env(family, variants, task_ids, n_tasks, monitor)

    def factory(variant: Variant, task_id: int | None) -> Callable[[], gym.Env]:
        def _make() -> gym.Env:
            env = family.make(variant)
            if monitor:
                env = Monitor(env)
            if task_id is not None:
                env = TaskIdWrapper(env, task_id, n_tasks if n_tasks is not None else task_id + 1)
            return env

        return _make

    ids: Sequence[int | None] = task_ids if task_ids is not None else [None] * len(variants)
    return DummyVecEnv([factory(v, k) for v, k in zip(variants, ids, strict=True)])


def make_multitask_vec_env(
    family: Family,
    variants: Sequence[Variant | str],
    n_envs_per_task: int = 1,
    seed: int | None = None,
    monitor: bool = True,
    batched: bool = True,
    n_tasks: int | None = None,
) -> VecEnv:
    """``n_envs_per_task`` task-id tagged sub-envs of each variant in one ``VecEnv``.

    Sub-environments are ordered task-major (task 0's envs first). The returned env has
    ``task_names`` and ``env_task_ids`` attributes for per-task logging. ``batched=False``
    forces a ``DummyVecEnv`` (identical trajectories, slower). ``n_tasks``: the size of the
    task-id space when it holds more tasks than ``variants`` (default: one per variant).
    """
    resolved = [family.variant(v) if isinstance(v, str) else v for v in variants]
    if not resolved:
        raise ValueError("a multi-task env needs at least one target variant")
    names = [v.name for v in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"target variants must be distinct, got {names}")
    if n_envs_per_task < 1:
        raise ValueError(f"n_envs_per_task must be >= 1, got {n_envs_per_task}")
    if n_tasks is not None and n_tasks < len(resolved):
        raise ValueError(f"n_tasks {n_tasks} is fewer than the {len(resolved)} variants")
    n_tasks = len(resolved) if n_tasks is None else n_tasks
    task_ids = np.repeat(np.arange(len(resolved)), n_envs_per_task)
    per_env = [resolved[k] for k in task_ids]
    vec_env = _vec_env(family, per_env, task_ids.tolist(), n_tasks, monitor, batched)
    vec_env.task_names = names  # type: ignore[attr-defined]
    vec_env.env_task_ids = task_ids  # type: ignore[attr-defined]
    if seed is not None:
        vec_env.seed(seed)
    return vec_env


def make_task_vec_env(
    family: Family,
    variant: Variant | str,
    n_envs: int,
    seed: int | None = None,
    batched: bool = True,
) -> VecEnv:
    """``n_envs`` Monitor-wrapped copies of one variant with plain Box observations, for training.

    Equivalent to SB3's ``make_vec_env(lambda: family.make(variant), n_envs, seed=seed)``.
    """
    v = family.variant(variant) if isinstance(variant, str) else variant
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    vec_env = _vec_env(family, [v] * n_envs, None, None, True, batched)
    if seed is not None:
        vec_env.seed(seed)
    return vec_env


def make_eval_env(
    family: Family,
    variant: Variant | str,
    n_envs: int,
    task_id: int | None = None,
    n_tasks: int | None = None,
    batched: bool = True,
) -> VecEnv:
    """``n_envs`` copies of one variant for batched evaluation (one episode per env).

    With ``task_id`` the observations are tagged for a multi-task policy; without, they are
    the plain Box observations a single-task (source) policy expects.
    """
    v = family.variant(variant) if isinstance(variant, str) else variant
    task_ids = None if task_id is None else [task_id] * n_envs
    k = None if task_id is None else (n_tasks if n_tasks is not None else task_id + 1)
    if task_id is not None and not 0 <= task_id < k:  # type: ignore[operator]
        raise ValueError(f"task_id {task_id} outside [0, {k})")
    return _vec_env(family, [v] * n_envs, task_ids, k, True, batched)
