"""Errors the CLI reports without a Python traceback of its own.

``UserError`` is the user's to fix: one line, exit code 2. ``SourceFailed`` is a grid's source
pretraining that failed in a worker process for another reason: its message carries the
worker's traceback, exit code 1. ``NoLearningWarning`` is a run that would go through without
learning anything: the CLI prints it as one ``rltransfer: warning:`` line.
"""

from __future__ import annotations

from rltransfer.envs.hints import did_you_mean

__all__ = ["NoLearningWarning", "SourceFailed", "UserError", "did_you_mean"]


class UserError(Exception):
    """Bad input (spec, path, parameter). The message names the problem and the fix."""


class SourceFailed(RuntimeError):
    """Source pretraining failed in a worker (a bug, or a worker that kept dying): the traceback is the message."""


class NoLearningWarning(UserWarning):
    """A run whose budget leaves PPO no update with a non-zero learning rate: it would learn nothing."""
