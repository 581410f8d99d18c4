"""CartPole family stepped as arrays: ``CartPoleEnv.step`` (Euler integrator) per sub-environment."""

from __future__ import annotations

import numpy as np
from rltransfer.envs.batched.base import BatchedFamilyVecEnv
from rltransfer.envs.cartpole import CartPoleFamilyEnv


class BatchedCartPole(BatchedFamilyVecEnv):
    """``CartPoleFamilyEnv`` sub-environments with per-sub-environment length, masses, gravity, force."""

    env_class = CartPoleFamilyEnv
    state_dim = 4

    def _setup(self) -> None:
        for name in ("gravity", "masspole", "total_mass", "length", "polemass_length", "force_mag"):
            setattr(self, f"_{name}", self._constants(name))
        if self._shared("kinematics_integrator") != "euler" or self._shared("_sutton_barto_reward"):
            raise ValueError("BatchedCartPole implements CartPole-v1's Euler integrator and reward only")
        self._tau = float(self._shared("tau"))
        self._x_threshold = float(self._shared("x_threshold"))
        self._theta_threshold = float(self._shared("theta_threshold_radians"))
        self._rewards = np.ones(self.num_envs, dtype=np.float64)  # every step's (read, never written)

    def _dynamics(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s, tau = self.state, self._tau
        x, x_dot, theta, theta_dot = s[:, 0], s[:, 1], s[:, 2], s[:, 3]
        force = np.where(actions == 1, self._force_mag, -self._force_mag)
        costheta = np.cos(theta)
        sintheta = np.sin(theta)
        # The single env's expressions, term by term, so every result is bit-identical.
        temp = (force + self._polemass_length * np.square(theta_dot) * sintheta) / self._total_mass
        thetaacc = (self._gravity * sintheta - costheta * temp) / (
            self._length * (4.0 / 3.0 - self._masspole * np.square(costheta) / self._total_mass)
        )
        xacc = temp - self._polemass_length * thetaacc * costheta / self._total_mass
        x = x + tau * x_dot
        x_dot = x_dot + tau * xacc
        theta = theta + tau * theta_dot
        theta_dot = theta_dot + tau * thetaacc
        terminated = (
            (x < -self._x_threshold)
            | (x > self._x_threshold)
            | (theta < -self._theta_threshold)
            | (theta > self._theta_threshold)
        )
        state = np.empty_like(s)  # column by column: a third of np.stack's time on 64 rows
        state[:, 0], state[:, 1], state[:, 2], state[:, 3] = x, x_dot, theta, theta_dot
        return state, self._rewards, terminated

    def _observe(self) -> np.ndarray:
        return self.state.astype(np.float32)
