"""What the Ray tests compare: a grid's results that must not depend on the backend, and the local
reference run they must equal."""

from __future__ import annotations

import socket
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from rltransfer.experiment.run import run_experiment

REPORT_FILES = ("report.md", "scores.csv", "summary.json")


def results(out: Path) -> dict[str, Any]:
    """Everything that must not depend on the backend: curves, trained weights, report."""
    found: dict[str, Any] = {}
    for path in sorted(out.glob("*/seed*/curves.npz")):
        with np.load(path) as data:
            found[str(path.relative_to(out))] = {k: data[k].tolist() for k in sorted(data.files)}
    for path in sorted([*out.glob("*/seed*/model.zip"), *out.glob("source/**/model.zip")]):
        with zipfile.ZipFile(path) as z:  # the zip's "data" entry holds wall-clock times: weights only
            found[str(path.relative_to(out))] = z.read("policy.pth")
    for name in REPORT_FILES:
        found[name] = (out / "report" / name).read_text()
    return found


def assert_clean(out: Path) -> None:
    assert not list(out.rglob("*.partial-*")) and not list(out.glob("*/seed*.failed.json"))


def run_locally(spec_path: Path, out: Path) -> Path:
    """The whole grid through the local backend, as the reference the Ray runs must equal."""
    import torch

    torch.set_num_threads(1)  # as the CLI does; Ray tasks run single-threaded too
    result, _ = run_experiment(spec_path, out=out, workers=1, progress=False)
    assert result.complete
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
