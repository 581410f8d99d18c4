"""Pool workers start as spawned ones would, even when forked from the forkserver
(``rltransfer.experiment.pool._context``): with the runner's environment and umask as they are
when the pool opens, not as they were when the server started."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from specs import grid_spec

from rltransfer import io
from rltransfer.cli import main
from rltransfer.experiment.pool import Grid, _context, run_grids
from rltransfer.experiment.runner import execute_job, prepare_out
from rltransfer.experiment.spec import load_spec


def noting_the_environment(job: Any, spec: Any, source: str | None) -> dict[str, Any]:
    """A run that also notes what its worker saw (module level: workers import it by name)."""
    outcome = execute_job(job, spec, source)
    mask = os.umask(0)
    os.umask(mask)
    seen = {"mark": os.environ.get("RLTRANSFER_TEST_MARK"), "umask": mask, "io": io.UMASK, "pid": os.getpid()}
    (job.run_dir.parent / f"seen-{job.seed}.json").write_text(json.dumps(seen))
    return outcome


def test_workers_take_the_runners_environment_and_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RLTRANSFER_START_METHOD", raising=False)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(grid_spec("env", arms=["scratch"], seeds=1)))
    spec = load_spec(path)
    for mark, mask in (("first", 0o022), ("second", 0o007)):  # the second pool: the server is running
        monkeypatch.setenv("RLTRANSFER_TEST_MARK", mark)
        monkeypatch.setattr(io, "UMASK", mask)
        out = tmp_path / mark
        prepare_out(spec, out, resume=False)
        grid = Grid(spec, out, None)
        run_grids([grid], workers=2, execute=noting_the_environment)
        assert grid.result.complete and not grid.result.failed
        seen = [json.loads(p.read_text()) for p in out.glob("scratch/seen-*.json")]
        assert [(s["mark"], s["umask"], s["io"]) for s in seen] == [(mark, mask, mask)]
        assert os.getpid() not in {s["pid"] for s in seen}


@pytest.mark.parametrize(("value", "method"), [(None, "forkserver"), ("forkserver", "forkserver"), ("spawn", "spawn")])
def test_the_start_method_can_be_chosen(value: str | None, method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if value is None:
        monkeypatch.delenv("RLTRANSFER_START_METHOD", raising=False)
    else:
        monkeypatch.setenv("RLTRANSFER_START_METHOD", value)
    assert _context().get_start_method() == method


def test_a_bad_start_method_is_one_line_with_nothing_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(grid_spec("env", arms=["scratch"], seeds=2)))
    monkeypatch.setenv("RLTRANSFER_START_METHOD", "fork")
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--workers", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RLTRANSFER_START_METHOD must be forkserver or spawn, got 'fork'" in err[0]
    assert not (tmp_path / "out").exists()


def pid_after(seconds: float) -> int:
    """The worker's pid, after ``seconds`` (module level: workers import it by name)."""
    import time

    time.sleep(seconds)
    return os.getpid()


def test_an_interrupt_between_runs_leaves_the_pool_whole() -> None:
    """Before: a worker waiting for work raised SystemExit on SIGINT, which could land between a
    queue message's length and its bytes, so the other worker read the rest as a message
    (`EOFError: Ran out of input` printed mid-interrupt). Between runs it now only starts no
    other run: the pool stays whole, and its shutdown ends the workers."""
    import signal
    import time
    from concurrent.futures import wait

    from rltransfer.experiment.pool import busy_call, worker_pool

    pool = worker_pool(2)
    try:
        # Two jobs at once: both workers started (a Ctrl-C while one starts up breaks a pool), now idle.
        assert len(set(pool.map(busy_call, [pid_after] * 2, [1.0] * 2, timeout=60))) == 2
        workers = list(pool._processes.values())
        for p in workers:
            assert p.pid is not None
            os.kill(p.pid, signal.SIGINT)
        time.sleep(1.0)
        assert all(p.is_alive() for p in workers), [(p.pid, p.exitcode) for p in workers]  # exit codes
        # ...and start no other run: the runner is stopping the grid.
        done, _ = wait([pool.submit(busy_call, os.getpid) for _ in range(4)], timeout=60)
        assert len(done) == 4 and all(isinstance(f.exception(), KeyboardInterrupt) for f in done)
    finally:
        pool.shutdown(wait=True)
    assert not any(p.is_alive() for p in workers)


def test_more_workers_than_cores_is_noted(capsys: pytest.CaptureFixture[str]) -> None:
    from rltransfer.cli_args import note_oversubscribed
    from rltransfer.experiment.runner import default_workers

    cores = default_workers()
    for quiet in (None, cores, 1):
        note_oversubscribed(quiet)
    note_oversubscribed(cores + 62, "ray")  # a cluster's cores are not these
    assert capsys.readouterr().err == ""
    note_oversubscribed(cores + 62)
    assert capsys.readouterr().err == (
        f"rltransfer: note: --workers {cores + 62} is more than the {cores} cores here: runs share them "
        "(each slower, with the same numbers)\n"
    )
