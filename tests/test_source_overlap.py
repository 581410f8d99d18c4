"""A source still to pretrain is a task of the grid's pool: scratch runs train beside it.

The runs that use the source wait for it and for ``preflight``; a failed source or preflight
stops the grid with its one-line error after the runs in flight, which are kept.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from grid_events import Events, assert_source_beside_scratch
from specs import grid_spec, run_cli

from rltransfer.checkpoint import load_checkpoint
from rltransfer.cli import main
from rltransfer.errors import UserError
from rltransfer.experiment.pool import run_grid
from rltransfer.experiment.runner import Job, SourceJob, prepare_out
from rltransfer.experiment.spec import load_spec


def _spec(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(grid_spec("overlap", **changes), sort_keys=False))
    return path


def _finished(out: Path, arm: str) -> list[str]:
    return sorted(p.parent.name for p in (out / arm).glob("seed*/manifest.json"))


def _grid_with_source_to_pretrain(tmp_path: Path, workers: int) -> tuple[Path, Events]:
    """The tiny grid run from an empty directory by ``run_grid(source=None)``; its events."""
    spec = load_spec(_spec(tmp_path))
    out = tmp_path / "grid"
    prepare_out(spec, out, resume=False)
    events = Events()
    result = run_grid(spec, out, None, workers=workers, on_event=events)
    assert result.complete and len(result.finished) == 4
    assert all(isinstance(j, Job) for j in result.finished)  # the source is not a run of the grid
    return out, events


def test_scratch_runs_train_while_the_source_pretrains(tmp_path: Path) -> None:
    out, events = _grid_with_source_to_pretrain(tmp_path, workers=2)
    assert_source_beside_scratch(events)
    assert (out / "source" / "manifest.json").exists()


def test_one_worker_pretrains_the_source_first(tmp_path: Path) -> None:
    _, events = _grid_with_source_to_pretrain(tmp_path, workers=1)
    assert events[:2] == [("start", "source"), ("done", "source")]


def test_source_from_the_pool_equals_the_source_pretrained_in_process(tmp_path: Path) -> None:
    """One torch thread in both: the same weights whichever process pretrains the source."""
    from rltransfer.experiment.run import run_experiment

    spec = _spec(tmp_path, arms=["scratch", "zero-shot"], seeds=1)
    run_experiment(spec, out=tmp_path / "serial", workers=1, progress=False)
    run_experiment(spec, out=tmp_path / "pool", workers=2, progress=False)
    a = load_checkpoint(tmp_path / "serial" / "source").state_dict
    b = load_checkpoint(tmp_path / "pool" / "source").state_dict
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_failed_source_keeps_the_runs_that_finished(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path))
    out = tmp_path / "grid"
    prepare_out(spec, out, resume=False)
    (out / "source").write_text("in the way")  # the source's directory cannot be created
    with pytest.raises(UserError, match="source"):
        run_grid(spec, out, None, workers=2)
    assert "seed0" in _finished(out, "scratch")  # in flight beside the source: finished and kept
    assert not (out / "freeze").exists()
    assert not list(out.glob("*/*.partial*")) and not list(out.glob("source.partial*"))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_preflight_failure_after_pretraining_is_one_line_exit_2(tmp_path: Path, workers: str) -> None:
    # What only the source's tensors can tell (a trunk count is checked before anything trains).
    spec = _spec(tmp_path, arms=["scratch", {"name": "deep", "strategy": "finetune", "layer_map": {"trunk_from": "x"}}])
    out = tmp_path / "grid"
    proc = run_cli(spec, out, workers)
    assert proc.returncode == 2, proc.stderr
    assert "trunk_from 'x.' matches no source tensor" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "source" / "manifest.json").exists()  # kept: a fixed spec's run reuses nothing else
    assert not (out / "deep").exists()
    if workers == "2":  # scratch runs started beside the source and finished
        assert _finished(out, "scratch")


def test_gate_raises_what_the_worker_reported(tmp_path: Path) -> None:
    from rltransfer.errors import SourceFailed
    from rltransfer.experiment.runner import SourceGate

    spec = load_spec(_spec(tmp_path))
    waiting = [Job(spec.arms[1], 0, spec.targets, tmp_path / "freeze" / "seed0", 0)]
    gate = SourceGate(spec, {}, {0: waiting})
    boom = {"ok": False, "traceback": "Traceback ...\nRuntimeError: boom"}
    assert gate.done(SourceJob(tmp_path / "source"), boom) == []
    assert isinstance(gate.error, SourceFailed) and "RuntimeError: boom" in str(gate.error)
    gate = SourceGate(spec, {}, {0: waiting})
    error = UserError("the env produced NaN; check its parameters")
    assert gate.done(SourceJob(tmp_path / "source"), {"ok": False, "error": str(error), "exception": error}) == []
    assert gate.error is error and gate.waiting == {0: waiting} and not gate.ready  # nothing released


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_source_no_unfinished_run_needs_is_not_pretrained(
    tmp_path: Path, workers: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Scratch alone pretrains nothing; a deleted source whose runs have all finished is not pretrained
    again; once a transfer arm joins, its source is."""
    spec = _spec(tmp_path, arms=["scratch"], seeds=1)
    out = tmp_path / "grid"
    assert main(["run", str(spec), "--out", str(out), "--dry-run"]) == 0
    assert "sources: 1 not needed (seeds 0;" in capsys.readouterr().out
    assert main(["run", str(spec), "--out", str(out), "--workers", workers, "--quiet"]) == 0
    assert not (out / "source").exists() and _finished(out, "scratch") == ["seed0"]
    spec = _spec(tmp_path, arms=["scratch", "freeze"], seeds=1)
    assert main(["run", str(spec), "--out", str(out), "--workers", workers, "--quiet", "--resume"]) == 0
    assert (out / "source" / "manifest.json").exists() and _finished(out, "freeze") == ["seed0"]
    shutil.rmtree(out / "source")  # to save space, say: every run that fine-tuned it has finished
    assert main(["run", str(spec), "--out", str(out), "--workers", workers, "--quiet", "--resume"]) == 0
    assert not (out / "source").exists()
