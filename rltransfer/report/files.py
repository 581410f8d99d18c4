"""Atomic file writers for the report: text, JSON, CSV and NPZ.

Every writer writes a temporary file in the destination directory and moves it into
place with ``os.replace``, so a reader never sees a half-written file and an
interrupted run leaves the previous version intact.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rltransfer.io import as_created, naming

#: Names ``curves.npz`` uses for its own arrays; arms may not take them.
RESERVED_NPZ_KEYS = frozenset({"steps", "task_names", "arm_names", "thresholds"})


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on success it replaces ``path``.

    Args:
        path: final destination; its directory must exist.

    Yields:
        The temporary file's path, to be written by the caller.
    """
    target = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    as_created(fd)
    os.close(fd)
    tmp = Path(name)
    try:
        with naming(target):
            yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically writes ``data`` to ``path`` and returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Atomically writes UTF-8 ``text`` to ``path`` and returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, payload: Any) -> Path:
    """Atomically writes strict JSON (no NaN/Infinity literals) to ``path``."""
    return write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """Atomically writes a CSV file with a header row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def write_curves_npz(
    path: str | Path,
    curves: Mapping[str, npt.ArrayLike],
    steps: npt.ArrayLike,
    task_names: Sequence[str],
    thresholds: Sequence[float] | npt.ArrayLike,
) -> Path:
    """Atomically writes ``steps``, ``task_names``, ``arm_names``, ``thresholds`` and one
    ``(runs, tasks, evals)`` array per arm (keyed by the arm name) to a ``.npz`` file.

    The file loads with ``numpy.load(path)`` without pickling (names are unicode arrays).

    Raises:
        ValueError: if an arm is named like one of :data:`RESERVED_NPZ_KEYS`.
    """
    clashes = RESERVED_NPZ_KEYS.intersection(curves)
    if clashes:
        raise ValueError(f"arm names {sorted(clashes)} clash with curves.npz's own keys")
    arrays: dict[str, npt.NDArray[Any]] = {
        "steps": np.asarray(steps, dtype=np.float64),
        "task_names": np.asarray(list(task_names), dtype=np.str_),
        "arm_names": np.asarray(list(curves), dtype=np.str_),
        "thresholds": np.asarray(thresholds, dtype=np.float64),
    }
    arrays.update({arm: np.asarray(value, dtype=np.float64) for arm, value in curves.items()})
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]
    return Path(path)
