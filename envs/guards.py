"""A VecEnv wrapper that stops at the first non-finite observation or reward, with a clear message."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn


class NonFiniteError(RuntimeError):
    """An environment produced NaN or inf: its parameters or code are at fault, not the learner."""


def _finite(obs: VecEnvObs) -> bool:
    if isinstance(obs, dict):
        return all(np.isfinite(v).all() for v in obs.values())
    if isinstance(obs, tuple):
        return all(np.isfinite(v).all() for v in obs)
    return bool(np.isfinite(obs).all())


class FiniteGuard(VecEnvWrapper):
    """Raise ``NonFiniteError`` naming the step and sub-environment instead of training on NaN."""

    def __init__(self, venv: VecEnv, name: str) -> None:
        super().__init__(venv)
        self.name = name
        self.steps = 0

    def reset(self) -> VecEnvObs:
        obs = self.venv.reset()
        if not _finite(obs):
            raise NonFiniteError(
                f"environment '{self.name}' returned a non-finite observation on reset; check its parameters or code"
            )
        return obs

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        self.steps += 1
        if not (_finite(obs) and np.isfinite(rewards).all()):
            what = "reward" if _finite(obs) else "observation"
            bad = int(np.flatnonzero(~np.isfinite(rewards))[0]) if what == "reward" else -1
            where = f" (sub-env {bad})" if bad >= 0 else ""
            raise NonFiniteError(
                f"environment '{self.name}' returned a non-finite {what} at step {self.steps}{where}; "
                "check its parameters or code"
            )
        return obs, rewards, dones, infos
