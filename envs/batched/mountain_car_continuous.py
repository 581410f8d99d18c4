"""MountainCarContinuous family stepped as arrays: ``Continuous_MountainCarEnv.step`` per sub-environment.

The single env mixes precisions, and its results depend on them: its state is a float64 array
after ``reset`` and a float32 array after every ``step``; SB3's actions are float32; Python
floats are "weak" under NumPy 2's promotion rules (``np.float32(x) + 0.07`` and
``np.float32(x) > 0.07`` run in float32, ``np.float64`` operands promote to float64), and
the clipping assigns Python floats. Each sub-environment's values here carry a flag for the
precision the single env would compute them in, step by step, so the results are the same bits.
"""

from __future__ import annotations

import numpy as np
from rltransfer.envs.batched.base import BatchedFamilyVecEnv, clip, scalar_square
from rltransfer.envs.mountain_car_continuous import MountainCarContinuousFamilyEnv

F32 = np.float32


def _add(a: np.ndarray, b: np.ndarray, wide: np.ndarray) -> np.ndarray:
    """``a + b`` in float64 where ``wide``, else in float32 (both operands rounded to float32 first)."""
    return np.where(wide, a + b, (a.astype(F32) + b.astype(F32)).astype(np.float64))


class BatchedMountainCarContinuous(BatchedFamilyVecEnv):
    """``MountainCarContinuousFamilyEnv`` sub-environments with per-sub-environment engine power."""

    env_class = MountainCarContinuousFamilyEnv
    state_dim = 2

    def _setup(self) -> None:
        self._power = self._constants("power")
        self._max_speed = float(self._shared("max_speed"))
        self._min_position = float(self._shared("min_position"))
        self._max_position = float(self._shared("max_position"))
        self._goal_position = float(self._shared("goal_position"))
        self._goal_velocity = float(self._shared("goal_velocity"))
        self._min_action = float(self._shared("min_action"))
        self._max_action = float(self._shared("max_action"))
        if self._min_action != -self._max_action:
            raise ValueError("BatchedMountainCarContinuous expects symmetric action bounds")
        # The same constants as float32, for the rows that run in float32 (NumPy 2's weak Python floats).
        self._power32 = self._power.astype(F32)
        self._max_speed32, self._goal_position32 = F32(self._max_speed), F32(self._goal_position)
        self._min_position32, self._max_position32 = F32(self._min_position), F32(self._max_position)

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        actions = super()._check_actions(actions)
        # The single env reads action[0]; integers promote as float64 would (exactly, at these sizes).
        return actions if actions.dtype in (np.float32, np.float64) else actions.astype(np.float64)

    def _dynamics(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = actions[:, 0]
        # Most rows, most steps: a step's float32 state and SB3's float32 actions inside the bounds.
        # There every operation runs in float32 (the hill's cosine in float64), and clipping to a
        # bound's float32 rounding is what the single env's Python-float assignment stores.
        state = self.state.astype(F32)
        position, velocity = state[:, 0], state[:, 1]
        hill = np.empty_like(position)
        np.multiply(np.cos(F32(3) * position, dtype=np.float64), 0.0025, out=hill, casting="same_kind")
        velocity = velocity + (a * self._power32 - hill)
        velocity = clip(velocity, -self._max_speed32, self._max_speed32)
        position = clip(position + velocity, self._min_position32, self._max_position32)
        velocity[(position == self._min_position32) & (velocity < 0)] = 0
        terminated = (position >= self._goal_position32) & (velocity >= self._goal_velocity)
        state = np.empty((len(a), 2))
        state[:, 0], state[:, 1] = position, velocity
        # The rest in each row's own precisions: after a reset (reset's float64 state), for actions
        # outside the bounds (a Python-float force) and for float64 actions.
        other = ((self._elapsed == 0) | (np.abs(a) > self._max_action)).nonzero()[0] if a.dtype == F32 else None
        if other is None or other.size:
            rows = np.arange(len(a)) if other is None else other
            state[rows], terminated[rows] = self._general(a[rows], self.state[rows], self._elapsed[rows] == 0, rows)
        # math.pow(action[0], 2): exact for float32 actions, libm's pow for float64 ones.
        square = np.square(a, dtype=np.float64) if a.dtype == F32 else scalar_square(a)
        return state, terminated * 100.0 - square * 0.1, terminated

    def _general(
        self, a: np.ndarray, state: np.ndarray, fresh: np.ndarray, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The step in each row's own precisions: after a reset (float64 state), for float64
        actions, and for actions outside the bounds (a Python-float force)."""
        position, velocity = state[:, 0], state[:, 1]
        power = self._power[rows]
        inside = (a >= self._min_action) & (a <= self._max_action)
        narrow = inside & (a.dtype == F32)  # force * power and what follows in float32
        force = np.clip(a, self._min_action, self._max_action)
        product = np.where(narrow, (force.astype(F32) * power.astype(F32)).astype(np.float64), force * power)
        # 3 * position in the position's precision, then math.cos in float64.
        x3 = np.where(fresh, 3.0 * position, (F32(3) * position.astype(F32)).astype(np.float64))
        hill = 0.0025 * np.cos(x3)
        rhs = np.where(narrow, (product.astype(F32) - hill.astype(F32)).astype(np.float64), product - hill)
        # velocity += rhs: float64 after reset or against a float64 scalar, float32 otherwise.
        wide_v = fresh | (inside & (a.dtype == np.float64))
        velocity = _add(velocity, rhs, wide_v)
        # The bounds are compared in float64 in every precision: a float32 value that equals a
        # bound's float32 rounding is clipped to the bound in float64 but not in float32, and
        # either way the stored float32 is that rounding (the same states, rewards and ends).
        clipped_v = np.abs(velocity) > self._max_speed  # then a Python float, weak against a float32
        velocity = np.clip(velocity, -self._max_speed, self._max_speed)
        wide_p = fresh | (wide_v & ~clipped_v)
        position = np.clip(_add(position, velocity, wide_p), self._min_position, self._max_position)
        velocity = np.where((position == self._min_position) & (velocity < 0), 0.0, velocity)
        # The goal is no clipping bound: a float32 position at 0.45's float32 rounding has arrived.
        reached = np.where(wide_p, position >= self._goal_position, position.astype(F32) >= F32(self._goal_position))
        terminated = reached & (velocity >= self._goal_velocity)
        return np.stack((position, velocity), axis=1).astype(F32).astype(np.float64), terminated

    def _observe(self) -> np.ndarray:
        return self.state.astype(F32)
