"""Observation-shift variants: same dynamics, shifted inputs (for domain adaptation).

Kinds: ``noise`` (Gaussian sensor noise of standard deviation ``amount``), ``scale``
(``obs * amount + offset``), ``permute`` (a fixed permutation of the observation entries),
``delay`` (the observation from ``amount`` steps ago).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np

ShiftKind = Literal["noise", "scale", "permute", "delay"]


@dataclass(frozen=True)
class ObsShift:
    kind: ShiftKind
    amount: float = 0.0
    offset: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("noise", "scale", "permute", "delay"):
            raise ValueError(f"unknown observation shift '{self.kind}'; use noise, scale, permute or delay")
        if self.kind == "delay" and (self.amount < 1 or int(self.amount) != self.amount):
            raise ValueError(f"a delay must be a whole number of steps >= 1, got {self.amount}")
        if self.kind in ("noise", "scale") and not self.amount > 0:
            raise ValueError(f"shift '{self.kind}' needs amount > 0, got {self.amount}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Standard shifts every family offers as variants ``noisy``, ``scaled``, ``permuted``, ``delayed``.
STANDARD_SHIFTS: dict[str, ObsShift] = {
    "noisy": ObsShift("noise", 0.1),
    "scaled": ObsShift("scale", 2.0, 0.5),
    "permuted": ObsShift("permute", seed=0),
    "delayed": ObsShift("delay", 1),
}


def permutation(dim: int, seed: int) -> np.ndarray:
    """A fixed permutation that moves at least one entry (the reversal if the draw is the identity)."""
    perm = np.random.default_rng(seed).permutation(dim)
    return perm[::-1].copy() if dim > 1 and np.array_equal(perm, np.arange(dim)) else perm


class ObsShiftWrapper(gym.ObservationWrapper):
    """Applies an ``ObsShift`` to a flat Box observation; noise is seeded by ``reset(seed=...)``."""

    def __init__(self, env: gym.Env, shift: ObsShift) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"observation shifts need a flat Box observation, got {space}")
        self.shift = shift
        self._perm = permutation(space.shape[0], shift.seed)
        self._rng = np.random.default_rng(shift.seed)
        self._history: deque[np.ndarray] = deque(maxlen=int(shift.amount) + 1 if shift.kind == "delay" else 1)
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        if shift.kind == "noise":
            low, high = np.full_like(low, -np.inf), np.full_like(high, np.inf)
        elif shift.kind == "scale":
            low, high = low * shift.amount + shift.offset, high * shift.amount + shift.offset
        elif shift.kind == "permute":
            low, high = low[self._perm], high[self._perm]
        self.observation_space = gym.spaces.Box(low.astype(space.dtype), high.astype(space.dtype), dtype=space.dtype)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng([self.shift.seed, seed])
        obs, info = self.env.reset(seed=seed, options=options)
        self._history.clear()
        if self.shift.kind == "delay":
            self._history.extend([obs] * self._history.maxlen)  # type: ignore[operator]
        return self.observation(obs), info

    def observation(self, observation: Any) -> Any:
        obs = np.asarray(observation)
        kind = self.shift.kind
        if kind == "noise":
            out = obs + self._rng.normal(0.0, self.shift.amount, size=obs.shape)
        elif kind == "scale":
            out = obs * self.shift.amount + self.shift.offset
        elif kind == "permute":
            out = obs[self._perm]
        else:
            self._history.append(obs)
            out = self._history[0]
        return np.array(out, dtype=self.observation_space.dtype)  # a copy: delayed obs are reused


def shifted_env(entry_point: str, shift: dict[str, Any], **params: Any) -> gym.Env:
    """Registered entry point of shift variants: the family's env class, then the shift."""
    from gymnasium.envs.registration import load_env_creator

    return ObsShiftWrapper(load_env_creator(entry_point)(**params), ObsShift(**shift))  # type: ignore[arg-type]
