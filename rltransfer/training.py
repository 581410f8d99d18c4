"""What pretraining and fine-tuning share: logger set-up (resumable), the learn loop, a NaN guard."""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ProgressBarCallback
from stable_baselines3.common.logger import (
    CSVOutputFormat,
    HParam,
    HumanOutputFormat,
    Logger,
    TensorBoardOutputFormat,
    configure,
)
from torch.utils.tensorboard import SummaryWriter
from tqdm import TqdmExperimentalWarning
from tqdm.rich import tqdm

from rltransfer import interrupts
from rltransfer.hyperparams import run_warnings, whole_rollouts
from rltransfer.ppo import TransferPPO
from rltransfer.snapshot import Snapshots


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


class RolloutProgressBar(ProgressBarCallback):
    """SB3's progress bar, its total the steps PPO will take: whole rollouts, so a budget that is no
    multiple of one is rounded up (SB3's own bar would end at 512/256)."""

    def _on_training_start(self) -> None:
        left = self.locals["total_timesteps"] - self.model.num_timesteps
        rollout = getattr(self.model, "n_steps", 1) * self.training_env.num_envs
        with warnings.catch_warnings():  # as SB3 does for its own bar: rich's tqdm says it is experimental
            warnings.simplefilter("ignore", TqdmExperimentalWarning)
            self.pbar = tqdm(total=whole_rollouts(left, rollout))


class ContinuedCSV(CSVOutputFormat):
    """SB3's CSV log, appending to an existing ``progress.csv`` (a resumed run's) instead of truncating it."""

    def __init__(self, filename: str) -> None:
        self.file = open(filename, "r+")  # noqa: SIM115 - closed by close(), as SB3's own
        header = self.file.readline().rstrip("\n")
        self.keys = header.split(",") if header else []
        self.file.seek(0, 2)
        self.separator, self.quotechar = ",", '"'


class ResumedTensorBoard(TensorBoardOutputFormat):
    """SB3's TensorBoard output whose writer hides the events a killed attempt logged from ``purge_step`` on."""

    def __init__(self, folder: str, purge_step: int) -> None:
        self.writer = SummaryWriter(log_dir=folder, purge_step=purge_step)
        self._is_closed = False


def attach_logger(model: BaseAlgorithm, log_dir: Path | None, verbose: int = 0, resumed_at: int | None = None) -> None:
    """CSV + TensorBoard under ``log_dir`` (stdout too when verbose); nothing on disk without it.

    ``resumed_at``: the run continues from that step (``rltransfer.snapshot``): the CSV log,
    already put back as it was then, is appended to, and TensorBoard drops the killed
    attempt's events from that step on.
    """
    if log_dir is None:  # not SB3's configure(None): it would leave an empty /tmp/SB3-<time> per run
        model.set_logger(Logger(None, [HumanOutputFormat(sys.stdout)] if verbose else []))
        return
    if resumed_at is None:
        model.set_logger(configure(str(log_dir), ["stdout"] * bool(verbose) + ["csv", "tensorboard"]))
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    csv = log_dir / "progress.csv"
    outputs = [
        HumanOutputFormat(sys.stdout) if verbose else None,
        ContinuedCSV(str(csv)) if csv.exists() else CSVOutputFormat(str(csv)),
        # Events at the snapshot's own step were written before it: hide the later ones only.
        ResumedTensorBoard(str(log_dir), resumed_at + 1),
    ]
    model.set_logger(Logger(str(log_dir), [o for o in outputs if o is not None]))


def record_hparams(model: BaseAlgorithm, hparams: Mapping[str, Any]) -> None:
    """Hyperparameters into TensorBoard's HParams tab (written with the first dump)."""
    flat = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in hparams.items()}
    model.logger.record("hparams", HParam(flat, {"eval/mean_return": 0.0}), exclude=("stdout", "log", "json", "csv"))


def learn(
    model: TransferPPO,
    timesteps: int,
    callbacks: Sequence[BaseCallback],
    progress: bool = False,
    snapshots: Snapshots | None = None,
) -> None:
    """``model.learn`` with the NaN guard; ``timesteps`` counted from zero. Closes the log files.
    Ctrl-C stops it once the PPO iteration in progress is snapshotted, or, without snapshots, at the
    next environment step (``rltransfer.interrupts``).

    With ``snapshots``, the run is snapshotted as it goes, and continues from the snapshot it
    was given to resume from, if any. A budget no update learns from is a ``NoLearningWarning``,
    minibatches that do not divide a rollout a ``MinibatchWarning``.
    """
    start = 0
    if snapshots is None or snapshots.state is None:  # said when the run started, not on its resume
        for why, category in run_warnings(
            model.learning_rate, model.batch_size, timesteps, model.n_steps, model.n_envs
        ):
            warnings.warn(why, category, stacklevel=4)  # the caller of finetune or pretrain
    if snapshots is not None:
        if snapshots.state is not None:
            snapshots.prepare()
            start = model.num_timesteps
        model.rollout_hook = snapshots.on_rollout
    # A run that snapshots takes a Ctrl-C at the end of the PPO iteration in progress, once it is
    # snapshotted (``Snapshots.on_rollout``: nothing is lost); one that does not, at the next step,
    # before an evaluation starts (the callback is first).
    stop = [interrupts.StopOnInterrupt()] if snapshots is None or snapshots.every_s is None else []
    progress_bar = [RolloutProgressBar()] if progress else []
    try:
        # Ctrl-C there, never inside the TensorBoard writer (``rltransfer.interrupts``).
        with interrupts.training(model):
            model.learn(
                total_timesteps=timesteps - start,
                callback=CallbackList([*stop, *callbacks, NanGuard(), *progress_bar]),
                reset_num_timesteps=snapshots is None or snapshots.state is None,
            )
    finally:
        model.rollout_hook = None
