"""A family's sub-environments stepped together as numpy arrays, as one SB3 ``VecEnv``.

``BatchedFamilyVecEnv`` reproduces what ``DummyVecEnv`` gives for the same sub-environments
built as ``Monitor(gym.make(variant))`` (optionally tagged with ``TaskIdWrapper``): identical
observations, rewards, terminations, time-limit truncations, auto-resets with
``info["terminal_observation"]``, ``info["TimeLimit.truncated"]`` and Monitor's
``info["episode"]`` (``"r"``, ``"l"``, ``"t"``), and the same seeding (``seed(s)`` then
``reset()`` seeds sub-environment ``i`` with ``s + i``).

How exactness is kept: every sub-environment keeps one instance of the single-env class
(``envs[i]``). It supplies the physical constants (derived quantities computed by its own
constructor) and performs every reset with its own ``np_random``, so initial states and RNG
streams are the single env's by construction. Only the dynamics are vectorised, written in
the single env's exact operation order, so each sub-environment's floating-point results are
bit-identical. One numpy quirk matters: ``x ** 2`` on a numpy *scalar* calls libm ``pow``,
which differs from the array path's exact square in the last bit for ~0.1 % of inputs;
``scalar_square`` reproduces the scalar behaviour on arrays.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn


def scalar_square(x: np.ndarray) -> np.ndarray:
    """``x ** 2`` element-wise as numpy scalars compute it (libm ``pow``/``powf``), not as ``x * x``."""
    if x.dtype == np.float64:
        return np.float_power(x, 2.0)  # float64 float_power loops over libm pow
    return np.fromiter((v**2 for v in x), dtype=x.dtype, count=x.shape[0])


def clip(x: np.ndarray, low: Any, high: Any) -> np.ndarray:
    """``np.clip(x, low, high)`` as two ufunc calls: the same values, a third of the time on 64 rows."""
    return np.minimum(np.maximum(x, low), high)


class BatchedFamilyVecEnv(VecEnv):
    """``N`` sub-environments of one family with per-sub-environment physical parameters.

    Subclasses set ``env_class`` (the single-env class) and implement ``_setup`` (constants
    as arrays), ``_dynamics`` (one step for every sub-environment) and ``_observe``.

    Args:
        params: one keyword-argument mapping of ``env_class`` per sub-environment.
        max_episode_steps: the time limit (``TimeLimit``) of every sub-environment.
        task_ids: with them, observations are ``{"obs": Box, "task_id": Discrete(n_tasks)}``
            as ``TaskIdWrapper`` makes them; without, the plain Box observation.
        n_tasks: size of the task-id space (default: ``max(task_ids) + 1``).
        monitor: add Monitor's ``info["episode"]`` at every episode end.

    Attributes:
        envs: sub-environment ``i``'s single-env instance: it owns the RNG, performs resets and
            holds the constants; its ``state`` is only current right after a reset.
        state: ``(N, state_dim)`` float64 dynamics state of every sub-environment.
    """

    env_class: ClassVar[type[gym.Env]]
    state_dim: ClassVar[int]
    state: np.ndarray

    def __init__(
        self,
        params: Sequence[Mapping[str, float]],
        max_episode_steps: int,
        task_ids: Sequence[int] | None = None,
        n_tasks: int | None = None,
        monitor: bool = True,
    ) -> None:
        if not params:
            raise ValueError("a batched env needs at least one sub-environment")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.envs: list[gym.Env] = [self.env_class(**p) for p in params]
        n = len(self.envs)
        obs_space = self.envs[0].observation_space
        self.task_ids: np.ndarray | None = None
        if task_ids is not None:
            if len(task_ids) != n:
                raise ValueError(f"{len(task_ids)} task ids for {n} sub-environments")
            k = int(n_tasks) if n_tasks is not None else int(max(task_ids)) + 1
            if min(task_ids) < 0 or max(task_ids) >= k:
                raise ValueError(f"task ids must lie in [0, {k}), got {sorted(set(task_ids))}")
            self.task_ids = np.asarray(task_ids, dtype=np.int64)
            obs_space = gym.spaces.Dict({"obs": obs_space, "task_id": gym.spaces.Discrete(k)})
        super().__init__(n, obs_space, self.envs[0].action_space)
        self.max_episode_steps = int(max_episode_steps)
        self.monitor = monitor
        self.state = np.zeros((n, self.state_dim), dtype=np.float64)
        self._elapsed = np.zeros(n, dtype=np.int64)
        self._returns = np.zeros(n, dtype=np.float64)
        self._actions = np.zeros(0)
        self._needs_reset = True
        self._t_start = time.time()
        self._setup()

    # -- family-specific parts -------------------------------------------------------------

    def _setup(self) -> None:
        """Read the constants of every sub-environment from ``self.envs`` into arrays."""
        raise NotImplementedError

    def _dynamics(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One step of every sub-environment from ``self.state``: next state, float64 rewards, terminations."""
        raise NotImplementedError

    def _observe(self) -> np.ndarray:
        """``(N, obs_dim)`` float32 observations of ``self.state``."""
        raise NotImplementedError

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        """Actions as the dynamics expect them; reject what the single env would reject."""
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            actions = actions.reshape(self.num_envs)
            if actions.dtype.kind not in "iu":  # np.issubdtype's integer test, ~20x cheaper
                raise ValueError(f"discrete actions must be integers, got dtype {actions.dtype}")
            if actions.min() < space.start or actions.max() >= space.start + space.n:
                raise ValueError(f"actions outside {space}: {actions}")
            return actions
        assert space.shape is not None
        return actions.reshape(self.num_envs, *space.shape)

    def _constants(self, name: str) -> np.ndarray:
        """Attribute ``name`` of every sub-environment as a float64 array."""
        return np.array([float(getattr(env.unwrapped, name)) for env in self.envs], dtype=np.float64)

    def _shared(self, name: str) -> Any:
        """Attribute ``name``, which must be equal for all sub-environments (a class constant)."""
        values = [getattr(env.unwrapped, name) for env in self.envs]
        if any(v != values[0] for v in values[1:]):
            raise ValueError(f"{type(self).__name__} needs one '{name}' for all sub-environments, got {values}")
        return values[0]

    # -- VecEnv API --------------------------------------------------------------------------

    def _reset_one(self, i: int, seed: int | None, options: dict[str, Any]) -> np.ndarray:
        env = self.envs[i]
        obs, self.reset_infos[i] = env.reset(seed=seed, **({"options": options} if options else {}))
        self.state[i] = np.asarray(env.unwrapped.state, dtype=np.float64)  # type: ignore[attr-defined]
        self._elapsed[i] = 0
        self._returns[i] = 0.0
        return np.asarray(obs, dtype=np.float32)

    def _wrap_obs(self, obs: np.ndarray) -> VecEnvObs:
        if self.task_ids is None:
            return obs
        return {"obs": obs, "task_id": self.task_ids.copy()}

    def _single_obs(self, obs: np.ndarray, i: int) -> Any:
        if self.task_ids is None:
            return obs
        return {"obs": obs, "task_id": int(self.task_ids[i])}

    def reset(self) -> VecEnvObs:
        obs = np.stack([self._reset_one(i, self._seeds[i], self._options[i]) for i in range(self.num_envs)])
        self._reset_seeds()
        self._reset_options()
        self._needs_reset = False
        return self._wrap_obs(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        self.state, rewards, terminated = self._dynamics(self._check_actions(self._actions))
        self._elapsed += 1
        self._returns += rewards
        truncated = self._elapsed >= self.max_episode_steps
        dones = terminated | truncated
        obs = self._observe()
        infos: list[dict[str, Any]] = [{"TimeLimit.truncated": False} for _ in range(self.num_envs)]
        for i in dones.nonzero()[0].tolist():
            info: dict[str, Any] = {}
            if self.monitor:
                t = round(time.time() - self._t_start, 6)
                info["episode"] = {"r": round(float(self._returns[i]), 6), "l": int(self._elapsed[i]), "t": t}
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            info["terminal_observation"] = self._single_obs(obs[i].copy(), i)
            infos[i] = info
            obs[i] = self._reset_one(i, None, {})
        return self._wrap_obs(obs), rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attribute of each sub-environment's single-env instance (physical parameters, ``render_mode``)."""
        return [getattr(self.envs[i].unwrapped, attr_name) for i in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(
            f"cannot set '{attr_name}' on a batched env: physical parameters are fixed at construction; "
            "build a new env with the parameters you want"
        )

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        raise NotImplementedError(
            f"a batched env has no per-sub-environment '{method_name}'; use batched=False for a DummyVecEnv"
        )

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """As if each sub-environment were ``Monitor(TimeLimit(env))`` (Monitor only with ``monitor``)."""
        wrappers: list[type[gym.Wrapper]] = [TimeLimit, *([Monitor] if self.monitor else [])]
        wrapped = any(issubclass(w, wrapper_class) for w in wrappers)
        return [wrapped for _ in self._indices(indices)]

    def get_state(self) -> dict[str, Any]:
        """Everything a step or reset depends on, to continue later exactly where this env is now.

        The physics, episode counters, pending seeds, and each sub-environment's RNG (the single
        env's other attributes are constants, or current only right after a reset).
        """
        return {
            "state": self.state.copy(),
            "elapsed": self._elapsed.copy(),
            "returns": self._returns.copy(),
            "needs_reset": self._needs_reset,
            "rngs": [env.unwrapped.np_random.bit_generator.state for env in self.envs],
            "seeds": list(self._seeds),
            "options": list(self._options),
        }

    def set_state(self, saved: Mapping[str, Any]) -> None:
        """Continue from ``get_state()``'s result, taken from an env built with the same parameters."""
        if saved["state"].shape != self.state.shape:
            raise ValueError(f"a saved state of shape {saved['state'].shape} does not fit {self.state.shape}")
        self.state = saved["state"].copy()
        self._elapsed = saved["elapsed"].copy()
        self._returns = saved["returns"].copy()
        self._needs_reset = bool(saved["needs_reset"])
        for env, rng in zip(self.envs, saved["rngs"], strict=True):
            env.unwrapped.np_random.bit_generator.state = rng
        self._seeds, self._options = list(saved["seeds"]), list(saved["options"])

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]
