"""The grid's progress lines on stderr, as a log file receives them."""

from __future__ import annotations

from pathlib import Path

import pytest

from rltransfer.experiment.progress import GridProgress
from rltransfer.experiment.runner import SourceJob


def test_a_failure_prints_one_literal_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Brackets in an error are text, not rich markup ("[/x]" used to raise out of the grid), and a
    long path is not broken at 80 columns when stderr is a file."""
    label = tmp_path / ("deep-" * 20) / "[arm]" / "seed0"
    error = "ValueError: bad shape [/obs] in [bold] wrapper"
    with GridProgress(1, enabled=False) as display:
        display("start", SourceJob(label), {})
        display("failed", SourceJob(label), {"error": error})
        display("retry", SourceJob(label), {})
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"source pretraining failed: {label}: {error}",
        f"worker died, retrying: {label}",
    ]
