"""MountainCar family stepped as arrays: ``MountainCarEnv.step`` per sub-environment."""

from __future__ import annotations

import numpy as np
from rltransfer.envs.batched.base import BatchedFamilyVecEnv, clip
from rltransfer.envs.mountain_car import MountainCarFamilyEnv


class BatchedMountainCar(BatchedFamilyVecEnv):
    """``MountainCarFamilyEnv`` sub-environments with per-sub-environment engine force and gravity."""

    env_class = MountainCarFamilyEnv
    state_dim = 2

    def _setup(self) -> None:
        self._force = self._constants("force")
        self._gravity = self._constants("gravity")
        self._max_speed = float(self._shared("max_speed"))
        self._min_position = float(self._shared("min_position"))
        self._max_position = float(self._shared("max_position"))
        self._goal_position = float(self._shared("goal_position"))
        self._goal_velocity = float(self._shared("goal_velocity"))

    def _dynamics(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        position, velocity = self.state[:, 0], self.state[:, 1]
        # ``velocity += a + b`` adds the right-hand side's sum; math.cos and np.cos agree (libm).
        velocity = velocity + ((actions - 1) * self._force + np.cos(3 * position) * (-self._gravity))
        velocity = clip(velocity, -self._max_speed, self._max_speed)
        position = position + velocity
        position = clip(position, self._min_position, self._max_position)
        velocity = np.where((position == self._min_position) & (velocity < 0), 0.0, velocity)
        terminated = (position >= self._goal_position) & (velocity >= self._goal_velocity)
        return np.stack((position, velocity), axis=1), np.full(self.num_envs, -1.0), terminated

    def _observe(self) -> np.ndarray:
        return self.state.astype(np.float32)
