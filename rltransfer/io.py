"""Atomic file writes, checksums and version capture: nothing half-written survives a kill."""

from __future__ import annotations

import errno
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

MANIFEST_FILE = "manifest.json"  # what makes a directory a finished run (rltransfer.checkpoint writes it)


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: once, at import, before any thread
    os.umask(mask)
    return mask


UMASK = _read_umask()


def as_created(path: str | Path | int, directory: bool = False) -> None:
    """Give a file (path or descriptor) or directory from ``tempfile`` the mode ``open``/``mkdir`` would.

    ``mkstemp`` and ``mkdtemp`` create 0600 files and 0700 directories whatever the umask; renamed
    into place as results, they would keep a lab's shared runs, reports and TensorBoard logs
    unreadable to everyone but their owner.
    """
    mode = (0o777 if directory else 0o666) & ~UMASK
    if isinstance(path, int):
        os.fchmod(path, mode)
    else:
        os.chmod(path, mode)


# A write that failed for want of space or quota: not the run's fault, and the next run's writes fail too.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(e: BaseException | None) -> bool:
    return isinstance(e, OSError) and e.errno in DISK_FULL


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """Name ``path`` in an ``OSError`` that names no file: a full disk's ``write`` to an open file
    says only "No space left on device", and the user needs to know where."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e  # OSError(errno, ...) is its subclass again


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        as_created(fd)
        with naming(path), os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def read_json(path: Path, fix: str) -> Any:
    """A JSON file rltransfer wrote; a damaged one (truncated, edited) is a one-line error naming
    it and ``fix``. A missing or unreadable file raises ``OSError`` as usual."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"'{path}' is damaged (not valid JSON: {e}); {fix}") from None


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
SNAPSHOT_FILE = "snapshot.pt"  # a mid-run snapshot in a staging directory (``rltransfer.snapshot``)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _attempts(final: Path, own: bool) -> list[tuple[Path, bool]]:
    """Staging directories of ``final``, each with whether its writing process is alive; with ``own``,
    this process's count as dead (attempts it made earlier: an interrupted call in a notebook)."""
    if not final.parent.is_dir():
        return []
    out = []
    for staging in final.parent.glob(f"{final.name}{PARTIAL}*"):
        pid = staging.name[len(final.name) + len(PARTIAL) :].split("-", 1)[0]
        dead = not pid.isdigit() or (own and int(pid) == os.getpid()) or not _alive(int(pid))
        out.append((staging, not dead))
    return out


def _dead_partials(final: Path, own: bool = False) -> list[Path]:
    """Staging directories of ``final`` whose writing process no longer exists (killed attempts)."""
    return [staging for staging, alive in _attempts(final, own) if not alive]


def running_attempts(final: Path) -> list[Path]:
    """Staging directories of ``final`` whose writing process is alive: attempts in progress now."""
    return [staging for staging, alive in _attempts(final, own=True) if alive]


def lock_holder(path: Path) -> str | None:
    """Who holds ``exclusive_lock`` on ``path`` now (``pid 1234``), or ``None``; reads only.

    A shared lock taken and dropped at once: it conflicts with the holder's exclusive one.
    """
    try:
        import fcntl
    except ImportError:
        return None
    try:
        handle = open(path)  # noqa: SIM115 - held only for the probe
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def interrupted_runs(final: Path) -> list[Path]:
    """Killed or interrupted attempts at ``final`` that left a mid-run snapshot, the newest first."""
    found = [p for p in _dead_partials(final, own=True) if (p / SNAPSHOT_FILE).is_file()]
    return sorted(found, key=lambda p: (p / SNAPSHOT_FILE).stat().st_mtime, reverse=True)


def remove_partials(final: Path, keep_interrupted: bool = False, keep: Path | None = None, own: bool = False) -> None:
    """Delete the staging directories of killed attempts at ``final`` (``own``: see ``_dead_partials``),
    but ``keep``, and with ``keep_interrupted`` those holding a snapshot to resume from."""
    for stale in _dead_partials(final, own):
        if stale == keep or (keep_interrupted and (stale / SNAPSHOT_FILE).is_file()):
            continue
        shutil.rmtree(stale, ignore_errors=True)


def _empty_dir(path: Path) -> bool:
    """An empty directory, not a link to one: a run can be renamed onto it."""
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


@contextmanager
def staging_dir(final: Path, overwrite: bool = False, resume: bool = False) -> Iterator[Path]:
    """Build a run in its own ``<final>.partial-<pid>-<n>`` and rename it into place only on success.

    A killed or failed attempt leaves at most its own staging directory, never a half-written
    ``final``; a unique name per attempt means a straggling attempt can never write into
    another's files. Without ``overwrite`` a ``final`` that appeared meanwhile is kept.

    An attempt that saved a snapshot keeps its staging directory whatever stopped it (kill -9,
    Ctrl-C, an error, a refused resume); with ``resume`` the newest one is taken over, snapshot
    and logs, and the caller continues it. Without ``resume`` (or ``overwrite``, which discards it) it is an error, so
    that hours of training are never deleted unasked.
    """
    here = Path.cwd().resolve()
    if final.resolve() in (here, *here.parents):  # a run replaces its directory by a rename at the end
        raise UserError(f"'{final}' is the working directory or above it; a run gets its own: choose --out NAME")
    if (final.exists() or final.is_symlink()) and not _empty_dir(final):
        if not (final / MANIFEST_FILE).is_file():  # --overwrite deletes a run, never a directory of other files
            what = "a file" if not final.is_dir() or final.is_symlink() else "a directory holding no run"
            raise UserError(
                f"'{final}' is {what}; a run is written into a new or empty directory: choose another --out"
            )
        if not overwrite and resume:
            raise UserError(f"'{final}' already holds a finished run: nothing to resume (--overwrite trains it again)")
        if not overwrite:
            raise UserError(f"'{final}' already holds a finished run; pass --overwrite or choose another --out")
    check_writable(final.parent)
    interrupted = interrupted_runs(final)
    if interrupted and not (resume or overwrite):
        raise UserError(
            f"'{final}' has an interrupted run (its snapshot is in {interrupted[0].name}); "
            "pass --resume to continue it, or --overwrite to start over"
        )
    adopt = interrupted[0] if resume and interrupted else None
    remove_partials(final, keep=adopt, own=True)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{final.name}{PARTIAL}{os.getpid()}-", dir=final.parent))
        if adopt is not None:
            staging.rmdir()
            os.rename(adopt, staging)
        as_created(staging, directory=True)  # it becomes the run directory
    except OSError as e:
        raise UserError(f"cannot create a directory beside '{final}' ({e.strerror}); choose a writable --out") from None
    try:
        yield staging
        (staging / SNAPSHOT_FILE).unlink(missing_ok=True)
        if overwrite and final.exists():
            shutil.rmtree(final)
        # Renaming onto an existing non-empty directory fails: a finished run is never replaced by accident.
        try:
            os.rename(staging, final)
        except OSError:
            if not final.exists():
                raise
            raise UserError(
                f"'{final}' was finished by another process while this run trained; this run's result is "
                "discarded (give each run its own --out to keep both)"
            ) from None
    except BaseException:
        if not (staging / SNAPSHOT_FILE).is_file():  # else kept, to resume
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
