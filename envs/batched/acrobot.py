"""Acrobot family stepped as arrays: ``AcrobotEnv.step`` (RK4, "book" dynamics) per sub-environment."""

from __future__ import annotations

import numpy as np
from numpy import pi
from rltransfer.envs.acrobot import AcrobotFamilyEnv
from rltransfer.envs.batched.base import BatchedFamilyVecEnv, scalar_square

State = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class BatchedAcrobot(BatchedFamilyVecEnv):
    """``AcrobotFamilyEnv`` sub-environments with per-sub-environment link lengths and masses.

    The single env's reset state is float32 and its first step promotes it to float64
    (``np.append``); states are kept in float64, which holds the float32 values exactly.
    """

    env_class = AcrobotFamilyEnv
    state_dim = 4

    def _setup(self) -> None:
        if self._shared("book_or_nips") != "book" or self._shared("torque_noise_max") != 0.0:
            raise ValueError("BatchedAcrobot implements Acrobot-v1's 'book' dynamics without torque noise only")
        envs = [env.unwrapped for env in self.envs]
        g = 9.8
        rows = []
        for e in envs:
            m1, m2 = e.LINK_MASS_1, e.LINK_MASS_2
            l1, lc1, lc2 = e.LINK_LENGTH_1, e.LINK_COM_POS_1, e.LINK_COM_POS_2
            moi = e.LINK_MOI
            # Parameter-only prefixes of AcrobotEnv._dsdt's expressions, evaluated in its order.
            rows.append(
                (
                    m1 * lc1**2,  # d1 head
                    m2,
                    l1**2 + lc2**2,
                    2 * l1 * lc2,
                    moi,
                    lc2**2,  # d2
                    l1 * lc2,
                    m2 * lc2 * g,  # phi2
                    -m2 * l1 * lc2,  # phi1 terms
                    2 * m2 * l1 * lc2,
                    (m1 * lc1 + m2 * l1) * g,
                    m2 * l1 * lc2,  # ddtheta2
                    m2 * lc2**2 + moi,
                    e.LINK_LENGTH_2,
                    l1,
                )
            )
        cols = np.array(rows, dtype=np.float64).T
        (self._c_d1, self._m2, self._c_l1l2sq, self._c_2l1lc2, self._moi, self._c_lc2sq, self._c_l1lc2,
         self._c_phi2, self._c_t1, self._c_t2, self._c_t3, self._c_t4, self._c_den,
         self._l2, self._l1) = cols  # fmt: skip
        self._torques = np.asarray(self._shared("AVAIL_TORQUE"), dtype=np.float64)
        self._dt = float(self._shared("dt"))
        self._max_vel_1 = float(self._shared("MAX_VEL_1"))
        self._max_vel_2 = float(self._shared("MAX_VEL_2"))

    def _dsdt(self, s: State, a: np.ndarray) -> State:
        theta1, theta2, dtheta1, dtheta2 = s
        m2, moi = self._m2, self._moi
        cos2, sin2 = np.cos(theta2), np.sin(theta2)
        d1 = self._c_d1 + m2 * (self._c_l1l2sq + self._c_2l1lc2 * cos2) + moi + moi
        d2 = m2 * (self._c_lc2sq + self._c_l1lc2 * cos2) + moi
        phi2 = self._c_phi2 * np.cos(theta1 + theta2 - pi / 2.0)
        phi1 = (
            self._c_t1 * scalar_square(dtheta2) * sin2
            - self._c_t2 * dtheta2 * dtheta1 * sin2
            + self._c_t3 * np.cos(theta1 - pi / 2)
            + phi2
        )
        ddtheta2 = (a + d2 / d1 * phi1 - self._c_t4 * scalar_square(dtheta1) * sin2 - phi2) / (
            self._c_den - scalar_square(d2) / d1
        )
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return dtheta1, dtheta2, ddtheta1, ddtheta2

    def _dynamics(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        torque = self._torques[actions]
        y0: State = (self.state[:, 0], self.state[:, 1], self.state[:, 2], self.state[:, 3])
        # rk4 over t = [0, dt]; the torque (fifth state component) has derivative 0.
        dt = self._dt - 0
        dt2 = dt / 2.0
        k1 = self._dsdt(y0, torque)
        k2 = self._dsdt(tuple(y + dt2 * k for y, k in zip(y0, k1, strict=True)), torque)  # type: ignore[arg-type]
        k3 = self._dsdt(tuple(y + dt2 * k for y, k in zip(y0, k2, strict=True)), torque)  # type: ignore[arg-type]
        k4 = self._dsdt(tuple(y + dt * k for y, k in zip(y0, k3, strict=True)), torque)  # type: ignore[arg-type]
        ns = [y + dt / 6.0 * (a + 2 * b + 2 * c + d) for y, a, b, c, d in zip(y0, k1, k2, k3, k4, strict=True)]
        ns[0] = _wrap(ns[0], -pi, pi)
        ns[1] = _wrap(ns[1], -pi, pi)
        ns[2] = np.minimum(np.maximum(ns[2], -self._max_vel_1), self._max_vel_1)
        ns[3] = np.minimum(np.maximum(ns[3], -self._max_vel_2), self._max_vel_2)
        # AcrobotFamilyEnv._terminal: the tip above the first link's length.
        tip = -self._l1 * np.cos(ns[0]) - self._l2 * np.cos(ns[1] + ns[0])
        terminated = tip > self._l1
        return np.stack(ns, axis=1), np.where(terminated, 0.0, -1.0), terminated

    def _observe(self) -> np.ndarray:
        s = self.state
        cols = (np.cos(s[:, 0]), np.sin(s[:, 0]), np.cos(s[:, 1]), np.sin(s[:, 1]), s[:, 2], s[:, 3])
        return np.stack(cols, axis=1).astype(np.float32)


def _wrap(x: np.ndarray, m: float, big_m: float) -> np.ndarray:
    """Gymnasium's ``wrap`` element-wise: subtract or add ``big_m - m`` until inside."""
    diff = big_m - m
    while (x > big_m).any():
        x = np.where(x > big_m, x - diff, x)
    while (x < m).any():
        x = np.where(x < m, x + diff, x)
    return x
