"""A run's files as bytes: packed on one machine, unpacked and renamed into place on another
(the Ray backend ships checkpoints to workers and runs back to the driver this way)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from rltransfer.io import remove_partials, staging_dir


def pack(directory: Path, names: list[str] | None = None) -> bytes:
    """The files under ``directory`` (or only ``names``) as an uncompressed tar in memory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in sorted(names if names is not None else os.listdir(directory)):
            tar.add(directory / name, arcname=name)
    return buf.getvalue()


def unpack(blob: bytes, directory: Path) -> None:
    """Write a tar made by ``pack`` into ``directory``: regular files and folders only, no path escapes.

    Every file is fsynced, so that a directory renamed into place afterwards survives a crash whole.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if Path(member.name).is_absolute() or ".." in parts or not parts:
                raise ValueError(f"refusing tar entry '{member.name}' outside the run directory")
            target = directory.joinpath(*parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                data = tar.extractfile(member)
                assert data is not None
                with open(target, "wb") as f:
                    f.write(data.read())
                    f.flush()
                    os.fsync(f.fileno())
            else:
                raise ValueError(f"refusing tar entry '{member.name}': not a regular file or folder")


def install(blob: bytes, final: Path) -> None:
    """Unpack a run's files into a staging directory beside ``final`` and rename it into place
    (the snapshots kept of it while it ran, now obsolete, are removed first)."""
    remove_partials(final, own=True)
    with staging_dir(final) as staging:
        unpack(blob, staging)
