"""Spelling hints for "unknown ..." errors, shared by the environment layer and the library above it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'n_steps'?)`` for a misspelt name close to a known one, else ``""``: the
    suffix of an "unknown ..." error."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""
