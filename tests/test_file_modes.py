"""Results are as readable as the umask says: atomic writes and run directories do not keep
``tempfile``'s private 0600/0700 modes (a lab's shared runs, reports and TensorBoard logs)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

import rltransfer.io
from rltransfer.io import atomic_write_json, atomic_write_text, staging_dir
from rltransfer.report.files import write_text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def group_writable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared lab's umask, distinct from both tempfile's modes and the usual 0o022."""
    monkeypatch.setattr(rltransfer.io, "UMASK", 0o002)


def test_atomic_writes_take_the_umask(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "x")
    write_text(tmp_path / "report.md", "# r")  # the report's writer
    assert mode(tmp_path / "a.txt") == mode(tmp_path / "report.md") == 0o664


def test_a_finished_run_directory_takes_the_umask(tmp_path: Path) -> None:
    with staging_dir(tmp_path / "seed0") as staging:
        atomic_write_json(staging / "manifest.json", {})
    assert mode(tmp_path / "seed0") == 0o775 and mode(tmp_path / "seed0" / "manifest.json") == 0o664
