"""A full disk (or quota): the file is named, the grid stops at the first run it fails, nothing
finished is touched, and ``--resume`` finishes the grid once there is space."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from specs import grid_spec

from rltransfer import io as rltransfer_io
from rltransfer.cli import main
from rltransfer.cli_messages import os_error_line
from rltransfer.report.files import write_text


def _fsync_fails_for(monkeypatch: pytest.MonkeyPatch, *needles: str) -> list[str]:
    """``os.fsync`` of a file whose path holds every needle fails as a full disk's does: the
    ``OSError`` names no file. Returns the paths it failed for."""
    real: Callable[[int], None] = os.fsync
    failed: list[str] = []

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if all(n in path for n in needles):
            failed.append(path)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return failed


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads the file of a descriptor from /proc")
def test_a_full_disk_stops_the_grid_at_its_first_failed_run_and_resume_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, out = tmp_path / "s.yaml", tmp_path / "e"
    spec.write_text(yaml.safe_dump(grid_spec("full")))
    args = ["run", str(spec), "--out", str(out), "--workers", "1", "--quiet"]
    assert main([*args, "--seeds", "1"]) == 0
    finished = _tree(out)
    capsys.readouterr()

    failed = _fsync_fails_for(monkeypatch, "seed1", "model.zip")
    assert main([*args, "--seeds", "2", "--resume"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(failed) == 1 and "/scratch/seed1.partial-" in failed[0]  # the first run that saved; then none
    assert len(err) == 2 and err[0].startswith(f"run failed: {out / 'scratch' / 'seed1'}: OSError"), err
    assert err[1].startswith("rltransfer: error: cannot write '") and "/scratch/seed1.partial-" in err[1]
    assert "model.zip': No space left on device; free some space" in err[1] and "rerun with --resume" in err[1]
    assert (out / "scratch" / "seed1.failed.json").is_file()
    assert not (out / "freeze" / "seed1").exists() and not (out / "freeze" / "seed1.failed.json").exists()
    assert not list(out.glob("*/seed1.partial*"))  # nothing half-written
    runs = ("source/", "scratch/seed0/", "freeze/seed0/")
    assert {k: v for k, v in _tree(out).items() if k.startswith(runs)} == {
        k: v for k, v in finished.items() if k.startswith(runs)
    }  # the finished runs, untouched

    monkeypatch.undo()
    assert main([*args, "--seeds", "2", "--resume"]) == 0
    assert all((out / arm / f"seed{s}" / "manifest.json").is_file() for arm in ("scratch", "freeze") for s in (0, 1))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads the file of a descriptor from /proc")
def test_a_failed_write_names_its_file_and_leaves_the_old_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "manifest.json"
    path.write_text("old")
    _fsync_fails_for(monkeypatch, "manifest.json")
    with pytest.raises(OSError) as caught:
        rltransfer_io.atomic_write_text(path, "new")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["manifest.json"]


def test_a_report_file_that_cannot_be_written_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: Path, data: bytes) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as PIL's and numpy's writes: no file named

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError) as caught:
        write_text(tmp_path / "report.md", "text")
    assert caught.value.filename == str(tmp_path / "report.md") and os.listdir(tmp_path) == []


def test_os_errors_are_one_line_naming_the_file_and_for_a_full_disk_the_fix() -> None:
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/x/model.zip")
    assert os_error_line(full, resumes=True) == (
        "cannot write '/runs/x/model.zip': No space left on device; free some space (or raise the quota), then "
        "rerun with --resume: finished runs are kept and unfinished ones continue from their last snapshot"
    )
    assert os_error_line(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/r"), resumes=False).endswith(
        "free some space (or raise the quota), then run the same command again"
    )
    assert os_error_line(OSError(errno.EIO, os.strerror(errno.EIO)), resumes=True) == "cannot write or read: " + (
        os.strerror(errno.EIO)
    )
