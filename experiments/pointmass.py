"""A user-defined family, as a user would write one: a point mass pushed to the origin.

rltransfer ships no such family; ``experiments/pointmass.yaml`` loads this one with
``family: experiments.pointmass:POINT_MASS`` (a ``module:ATTRIBUTE`` reference, imported from
the working directory or ``PYTHONPATH``). Any Gymnasium environment whose physical parameters
are constructor arguments works the same way.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from rltransfer.envs import Family, Param, Variant

# Push left, right, down, up, or coast.
FORCES = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0], [0.0, 0.0]])


class PointMassEnv(gym.Env[np.ndarray, int]):
    """A 2-D point mass that starts at a random spot and is pushed towards the origin.

    The observation is position and velocity; the reward is minus the distance to the origin
    per step, so an episode's return says how fast (and how steadily) the mass got there.
    """

    metadata = {"render_modes": []}

    def __init__(self, mass: float = 1.0, damping: float = 0.5, force: float = 1.0, dt: float = 0.1) -> None:
        self.mass, self.damping, self.force, self.dt = mass, damping, force, dt
        high = np.array([2.0, 2.0, np.inf, np.inf], dtype=np.float32)
        self.observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.action_space = spaces.Discrete(len(FORCES))
        self.state = np.zeros(4)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.state = np.concatenate([self.np_random.uniform(-1.0, 1.0, 2), np.zeros(2)])
        return self.state.astype(np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        pos, vel = self.state[:2], self.state[2:]
        acc = (self.force * FORCES[int(action)] - self.damping * vel) / self.mass
        vel = vel + self.dt * acc
        pos = np.clip(pos + self.dt * vel, -2.0, 2.0)
        self.state = np.concatenate([pos, vel])
        return self.state.astype(np.float32), -float(np.linalg.norm(pos)), False, False, {}


POINT_MASS = Family(
    name="pointmass",
    title="PointMass",
    entry_point="experiments.pointmass:PointMassEnv",
    params=(
        Param("mass", 1.0, 0.1, 10.0, "mass [kg]"),
        Param("damping", 0.5, 0.0, 5.0, "linear drag [N s/m]"),
        Param("force", 1.0, 0.1, 5.0, "push of one action [N]"),
    ),
    variants=(
        Variant("source", {}, "source", "unit mass"),
        Variant("heavy", {"mass": 2.0}, "near", "twice the mass"),
        Variant("slippery", {"damping": 0.1}, "near", "a fifth of the drag"),
        Variant("weak", {"force": 0.3}, "far", "under a third of the push"),
        Variant("heavier", {"mass": 5.0}, "far", "five times the mass"),
    ),
    held_out={"mass": (3.0, 3.5)},
    max_episode_steps=100,
    threshold=-12.0,
    # Over rltransfer's generic defaults (SB3's PPO defaults): shorter rollouts for a short task.
    hyperparams={"n_timesteps": 100_000, "n_envs": 8, "n_steps": 128, "batch_size": 256, "eval_freq": 10_000},
)
