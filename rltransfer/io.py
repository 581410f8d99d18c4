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


PARTIAL = ".partial-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_partials(final: Path) -> None:
    """Delete staging directories of ``final`` whose writing process no longer exists (killed attempts)."""
    if not final.parent.is_dir():
        return
    for stale in final.parent.glob(f"{final.name}{PARTIAL}*"):
        pid = stale.name[len(final.name) + len(PARTIAL) :].split("-", 1)[0]
        if not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def staging_dir(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a run in its own ``<final>.partial-<pid>-<n>`` and rename it into place only on success.

    A killed or failed attempt leaves at most its own staging directory, never a half-written
    ``final``; a unique name per attempt means a straggling attempt can never write into
    another's files. Without ``overwrite`` a ``final`` that appeared meanwhile is kept.
    """
    if final.exists() and not overwrite:
        raise UserError(f"'{final}' already holds a finished run; pass --overwrite or choose another --out")
    check_writable(final.parent)
    remove_partials(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{final.name}{PARTIAL}{os.getpid()}-", dir=final.parent))
    except OSError as e:
        raise UserError(f"cannot create a directory beside '{final}' ({e.strerror}); choose a writable --out") from None
    try:
        yield staging
        if overwrite and final.exists():
            shutil.rmtree(final)
        # Renaming onto an existing non-empty directory fails: a finished run is never replaced by accident.
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an advisory lock on ``path`` for the body; a second holder gets a clear error.

    The kernel drops the lock when its process dies, even by ``kill -9``.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no protection against two runners, but no failure either
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(f"{what} is in use by {holder}; wait for it to finish or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
