"""Tasks with different observation or action spaces in one VecEnv, padded to a common space.

Observations are zero-padded to the largest size; discrete actions to the largest count
(the policy masks the padding, see ``rltransfer.policies.crossspace``); continuous actions
live in ``[-1, 1]^D`` for the largest ``D``, each task using its first ``d_k`` dimensions
rescaled to its own bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from rltransfer.envs.family import Family, Variant
from rltransfer.envs.multitask import TaskIdWrapper
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv


@dataclass(frozen=True)
class Task:
    """One target task: a family and one of its variants."""

    family: Family
    variant: Variant

    @property
    def name(self) -> str:
        return f"{self.family.name}/{self.variant.name}"

    def spaces(self) -> tuple[gym.spaces.Space, gym.spaces.Space]:
        env = self.family.make(self.variant)
        spaces = (env.observation_space, env.action_space)
        env.close()
        return spaces


@dataclass(frozen=True)
class PaddedSpaces:
    observation: gym.spaces.Box
    action: gym.spaces.Space
    obs_dims: list[int]
    action_dims: list[int]

    @property
    def differ(self) -> bool:
        return len(set(self.obs_dims)) > 1 or len(set(self.action_dims)) > 1


def describe(space: gym.spaces.Space) -> str:
    return f"Discrete({space.n})" if isinstance(space, gym.spaces.Discrete) else f"Box{space.shape}"


def padded_spaces(tasks: Sequence[Task]) -> PaddedSpaces:
    """The common space of ``tasks``; discrete and continuous actions cannot be mixed."""
    pairs = [t.spaces() for t in tasks]
    for t, (obs, _) in zip(tasks, pairs, strict=True):
        if not isinstance(obs, gym.spaces.Box) or len(obs.shape) != 1:
            raise ValueError(f"task {t.name}: only flat Box observations can be padded, got {describe(obs)}")
    obs_dims = [int(obs.shape[0]) for obs, _ in pairs]  # type: ignore[index]
    kinds = {type(act) for _, act in pairs}
    if kinds == {gym.spaces.Discrete}:
        action_dims = [int(act.n) for _, act in pairs]  # type: ignore[attr-defined]
        action: gym.spaces.Space = gym.spaces.Discrete(max(action_dims))
    elif kinds == {gym.spaces.Box}:
        action_dims = [int(act.shape[0]) for _, act in pairs]  # type: ignore[index]
        action = gym.spaces.Box(-1.0, 1.0, (max(action_dims),), np.float32)
    else:
        spaces = ", ".join(f"{t.name}: {describe(a)}" for t, (_, a) in zip(tasks, pairs, strict=True))
        raise ValueError(f"targets mix discrete and continuous actions ({spaces}); train them in separate experiments")
    observation = gym.spaces.Box(-np.inf, np.inf, (max(obs_dims),), np.float32)
    return PaddedSpaces(observation, action, obs_dims, action_dims)


class PadTask(gym.Wrapper):
    """Pads one task's observations and maps padded actions back onto its own action space."""

    def __init__(self, env: gym.Env, spaces: PaddedSpaces) -> None:
        super().__init__(env)
        self.observation_space = spaces.observation
        self.action_space = spaces.action
        self._obs_dim = int(env.observation_space.shape[0])  # type: ignore[index]
        self._width = int(spaces.observation.shape[0])

    def _pad(self, obs: np.ndarray) -> np.ndarray:
        out = np.zeros(self._width, dtype=np.float32)
        out[: self._obs_dim] = obs
        return out

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return self._pad(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, Any, bool, bool, dict[str, Any]]:
        inner = self.env.action_space
        if isinstance(inner, gym.spaces.Discrete):
            a = int(np.asarray(action).item())
            if not 0 <= a < inner.n:
                raise ValueError(f"action {a} is padding for this task's {describe(inner)} (the policy must mask it)")
            act: Any = a
        else:
            assert isinstance(inner, gym.spaces.Box)
            d = int(inner.shape[0])
            unit = np.clip(np.asarray(action, dtype=np.float64)[:d], -1.0, 1.0)
            act = (inner.low + (unit + 1.0) * 0.5 * (inner.high - inner.low)).astype(inner.dtype)
        obs, reward, terminated, truncated, info = self.env.step(act)
        return self._pad(obs), reward, terminated, truncated, info


def make_cross_vec_env(
    tasks: Sequence[Task],
    n_envs_per_task: int = 1,
    seed: int | None = None,
    task_id: int | Sequence[int] | None = None,
) -> VecEnv:
    """All ``tasks`` (or only ``task_id``'s, or those listed, for evaluation) padded into one
    task-tagged ``DummyVecEnv``, task-major.

    The env has ``task_names``, ``env_task_ids`` and ``spaces`` (``PaddedSpaces``) attributes.
    """
    spaces = padded_spaces(tasks)
    ids = range(len(tasks)) if task_id is None else [task_id] if isinstance(task_id, int) else list(task_id)

    def factory(k: int) -> Callable[[], gym.Env]:
        return lambda: TaskIdWrapper(PadTask(Monitor(tasks[k].family.make(tasks[k].variant)), spaces), k, len(tasks))

    env = DummyVecEnv([factory(k) for k in ids for _ in range(n_envs_per_task)])
    env.task_names = [t.name for t in tasks]  # type: ignore[attr-defined]
    env.env_task_ids = np.repeat(np.asarray(list(ids)), n_envs_per_task)  # type: ignore[attr-defined]
    env.spaces = spaces  # type: ignore[attr-defined]
    if seed is not None:
        env.seed(seed)
    return env
