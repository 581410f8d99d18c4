"""How the command line says what went wrong: one line per error or warning."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from rltransfer.errors import RltransferWarning
from rltransfer.io import is_disk_full


def os_error_line(e: OSError, resumes: bool) -> str:
    """An ``OSError`` on one line: the file, the reason and, for a full disk, what to do
    (``resumes``: the command takes ``--resume``)."""
    where = f" '{e.filename}'" if e.filename else ""
    if not is_disk_full(e):
        return f"cannot write or read{where}: {e.strerror or e}"
    again = (
        "rerun with --resume: finished runs are kept and unfinished ones continue from their last snapshot"
        if resumes
        else "run the same command again"
    )
    return f"cannot write{where}: {e.strerror}; free some space (or raise the quota), then {again}"


def one_line(show: Callable[..., None]) -> Callable[..., None]:
    """``warnings.showwarning`` printing rltransfer's own warnings as one line, as its errors."""

    def shown(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, RltransferWarning):
            print(f"rltransfer: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)

    return shown
