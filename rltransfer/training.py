"""What pretraining and fine-tuning share: logger set-up, the learn loop, a NaN guard."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import HParam, configure


class DivergenceError(RuntimeError):
    """Training produced non-finite weights or losses."""


class NanGuard(BaseCallback):
    """Stop a diverging run with a clear message instead of letting NaN become a score."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        loss = self.logger.name_to_value.get("train/loss")
        bad = [n for n, p in self.model.policy.named_parameters() if not th.isfinite(p).all()]
        if bad or (loss is not None and not math.isfinite(loss)):
            raise DivergenceError(
                f"training diverged at step {self.num_timesteps}: loss={loss}, non-finite parameters: "
                f"{bad[:3] or 'none'}; lower the learning rate or check the environment's rewards"
            )


def attach_logger(model: BaseAlgorithm, log_dir: Path | None, verbose: int = 0) -> None:
    """CSV + TensorBoard under ``log_dir`` (stdout too when verbose); nothing on disk without it."""
    formats = ["stdout"] if verbose else []
    if log_dir is not None:
        formats += ["csv", "tensorboard"]
    model.set_logger(configure(str(log_dir) if log_dir is not None else None, formats))


def record_hparams(model: BaseAlgorithm, hparams: Mapping[str, Any]) -> None:
    """Hyperparameters into TensorBoard's HParams tab (written with the first dump)."""
    flat = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in hparams.items()}
    model.logger.record("hparams", HParam(flat, {"eval/mean_return": 0.0}), exclude=("stdout", "log", "json", "csv"))


def learn(
    model: BaseAlgorithm,
    timesteps: int,
    callbacks: Sequence[BaseCallback],
    progress: bool = False,
) -> None:
    """``model.learn`` with the NaN guard; ``timesteps`` counted from zero. Closes the log files."""
    try:
        model.learn(
            total_timesteps=timesteps,
            callback=CallbackList([*callbacks, NanGuard()]),
            progress_bar=progress,
            reset_num_timesteps=True,
        )
    finally:
        model.logger.close()
