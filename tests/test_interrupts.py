"""Interrupts of a grid (Ctrl-C, ``kill -INT`` of the runner or of one worker): the runs in flight
stop within seconds, their snapshots kept for ``--resume``."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from specs import grid_spec, start_cli


@pytest.mark.parametrize("whom", ["runner", "group", "worker"])
def test_an_interrupt_stops_the_runs_in_flight_at_once(tmp_path: Path, whom: str) -> None:
    """Ctrl-C (the whole process group), ``kill -INT`` of the runner alone or of one worker all stop
    the grid in seconds, not once the runs in flight finish: exit 130, no worker left, no traceback,
    and the runs' snapshots kept for ``--resume``."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(grid_spec("rel", seeds=2, arms=["scratch"], timesteps=200_000)))
    out = tmp_path / "run"
    args = ["run", str(spec), "--out", str(out), "--workers", "2", "--snapshot-every", "0", "--quiet"]
    proc = start_cli(args, start_new_session=True)
    try:
        deadline = time.time() + 120
        while len(list(out.glob("scratch/seed*.partial-*/snapshot.pt"))) < 2 and time.time() < deadline:
            time.sleep(0.1)
        workers = {int(p.name.split(".partial-")[1].split("-")[0]) for p in out.glob("scratch/seed*.partial-*")}
        assert len(workers) == 2 and proc.poll() is None, "both runs should be training"
        stopped = time.time()
        if whom == "group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid if whom == "runner" else min(workers), signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:  # not left training for minutes after a failure
            os.killpg(proc.pid, signal.SIGKILL)
    assert time.time() - stopped < 30  # a run of this budget takes minutes here
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert "interrupted; finished runs are kept" in err and "Traceback" not in err, err
    time.sleep(0.5)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    assert len(list(out.glob("scratch/seed*.partial-*/snapshot.pt"))) == 2
