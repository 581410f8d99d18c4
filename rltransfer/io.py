"""Atomic file writes, checksums and version capture: nothing half-written survives a kill."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from rltransfer.errors import UserError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Library versions that determine a run's numbers."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("rltransfer", "stable-baselines3", "gymnasium", "torch", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def check_writable(directory: Path) -> None:
    """Fail before any training if ``directory`` (or its first existing parent) cannot be written."""
    probe = directory
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to '{directory}' ({probe} is not a writable directory); choose --out elsewhere")


@contextmanager
def staging_dir(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a run in ``<final>.partial`` and move it into place only when the body succeeds.

    A killed or failed run leaves only the ``.partial`` directory (removed on the next
    attempt), never a half-written ``final``.
    """
    if final.exists() and not overwrite:
        raise UserError(f"'{final}' already holds a finished run; pass --overwrite or choose another --out")
    check_writable(final.parent)
    staging = final.with_name(final.name + ".partial")
    try:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    except OSError as e:
        raise UserError(f"cannot create '{staging}' ({e.strerror}); choose a writable --out") from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
