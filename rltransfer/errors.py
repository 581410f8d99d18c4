"""Errors the CLI reports without a Python traceback of its own.

``UserError`` is the user's to fix: one line, exit code 2. ``SourceFailed`` is a grid's source
pretraining that failed in a worker process for another reason: its message carries the
worker's traceback, exit code 1. A ``RltransferWarning`` is a setting that runs, but likely not as
meant (``NoLearningWarning``, ``MinibatchWarning``): the CLI prints it as one ``rltransfer: warning:`` line.
"""

from __future__ import annotations

from rltransfer.envs.hints import did_you_mean

__all__ = ["MinibatchWarning", "NoLearningWarning", "RltransferWarning", "SourceFailed", "UserError", "did_you_mean"]


class UserError(Exception):
    """Bad input (spec, path, parameter). The message names the problem and the fix."""


class SourceFailed(RuntimeError):
    """Source pretraining failed in a worker (a bug, or a worker that kept dying): the traceback is the message."""


class RltransferWarning(UserWarning):
    """A setting that runs, but likely not as meant; said once before training (a grid: by its runner)."""


class NoLearningWarning(RltransferWarning):
    """A run whose budget leaves PPO no update with a non-zero learning rate: it would learn nothing."""


class MinibatchWarning(RltransferWarning):
    """``batch_size`` does not divide a rollout: every epoch of PPO's update ends with a smaller minibatch
    (SB3's own four-line warning, once per model, is said in one line instead)."""
