"""Errors the CLI reports without a Python traceback of its own.

``UserError`` is the user's to fix: one line, exit code 2. ``SourceFailed`` is a grid's source
pretraining that failed in a worker process for another reason: its message carries the
worker's traceback, exit code 1.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input (spec, path, parameter). The message names the problem and the fix."""


class SourceFailed(RuntimeError):
    """Source pretraining failed in a worker (a bug, or a worker that kept dying): the traceback is the message."""


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'n_steps'?)`` for a misspelt key close to a known one, else ``""``: the
    suffix of an "unknown ..." error."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""
