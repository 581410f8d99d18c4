"""Pendulum family stepped as arrays: ``PendulumEnv.step`` per sub-environment."""

from __future__ import annotations

import numpy as np
from rltransfer.envs.batched.base import BatchedFamilyVecEnv, clip, scalar_square
from rltransfer.envs.pendulum import PendulumFamilyEnv


class BatchedPendulum(BatchedFamilyVecEnv):
    """``PendulumFamilyEnv`` sub-environments with per-sub-environment ``g``, ``m`` and ``l``."""

    env_class = PendulumFamilyEnv
    state_dim = 2

    def _setup(self) -> None:
        envs = [env.unwrapped for env in self.envs]
        # The single env's parameter-only subexpressions, evaluated as it evaluates them.
        self._gravity_coef = np.array([3 * e.g / (2 * e.l) for e in envs])
        self._torque_coef = np.array([3.0 / (e.m * e.l**2) for e in envs])
        self._max_speed = self._shared("max_speed")
        self._max_torque = float(self._shared("max_torque"))
        self._dt = float(self._shared("dt"))

    def _dynamics(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        th, thdot = self.state[:, 0], self.state[:, 1]
        # The single env keeps the action's dtype (float32 from SB3): a Python float times a
        # float32 scalar is a float32 product, so the torque term is computed in that dtype.
        u = clip(actions[:, 0], -self._max_torque, self._max_torque)
        if not np.issubdtype(u.dtype, np.floating):
            u = u.astype(np.float64)
        angle = ((th + np.pi) % (2 * np.pi)) - np.pi
        costs = scalar_square(angle) + 0.1 * scalar_square(thdot) + 0.001 * scalar_square(u)
        torque_term = self._torque_coef.astype(u.dtype) * u
        newthdot = thdot + (self._gravity_coef * np.sin(th) + torque_term) * self._dt
        newthdot = clip(newthdot, -self._max_speed, self._max_speed)
        newth = th + newthdot * self._dt
        return np.stack((newth, newthdot), axis=1), -costs, np.zeros(self.num_envs, dtype=bool)

    def _observe(self) -> np.ndarray:
        th, thdot = self.state[:, 0], self.state[:, 1]
        return np.stack((np.cos(th), np.sin(th), thdot), axis=1).astype(np.float32)
