"""``run_experiment``: source, grid, report — the main job."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rltransfer.errors import UserError
from rltransfer.experiment.progress import GridProgress
from rltransfer.experiment.report import build_report
from rltransfer.experiment.runner import (
    LOCK_FILE,
    GridResult,
    check_out,
    default_workers,
    ensure_source,
    plan_jobs,
    preflight,
    prepare_out,
    run_grid,
)
from rltransfer.experiment.spec import ExperimentSpec, load_spec
from rltransfer.experiment.tensorboard import write_layout
from rltransfer.io import exclusive_lock


def run_experiment(
    spec: ExperimentSpec | str | Path,
    out: str | Path | None = None,
    seeds: int | None = None,
    workers: int | None = None,
    resume: bool = False,
    progress: bool = True,
) -> tuple[GridResult, Path | None]:
    """Run every (arm, seed) of ``spec`` and write the report; returns the grid result and report dir.

    ``seeds`` overrides the spec's seed count (``range(seeds)``); ``workers`` defaults to all cores.
    """
    spec = spec if isinstance(spec, ExperimentSpec) else load_spec(spec)
    if seeds is not None:
        if seeds <= 0:
            raise UserError(f"--seeds must be a positive integer, got {seeds}")
        spec = replace(spec, seeds=tuple(range(seeds)))
    n_workers = workers if workers is not None else default_workers()
    if n_workers <= 0:
        raise UserError(f"--workers must be a positive integer, got {n_workers}")
    out_dir = Path(out) if out is not None else Path("runs") / spec.name
    # Everything that can be checked is checked before the first file is written.
    check_out(spec, out_dir, resume)
    if spec.source.checkpoint is not None:
        preflight(spec, spec.source.checkpoint)
    with exclusive_lock(out_dir / LOCK_FILE, f"'{out_dir}'"):
        prepare_out(spec, out_dir, resume)
        source = ensure_source(spec, out_dir, progress)
        if spec.source.checkpoint is None:
            preflight(spec, source)
        write_layout(spec, out_dir)
        with GridProgress(len(plan_jobs(spec, out_dir)), enabled=progress) as display:
            result = run_grid(spec, out_dir, source, n_workers, on_event=display)
        report = _report(out_dir, spec, result)
    return result, report


def _report(out: Path, spec: ExperimentSpec, result: GridResult) -> Path | None:
    """The report, or ``None`` when failures left nothing to compare (the exit code says why)."""
    try:
        return build_report(out, spec)
    except UserError:
        if result.failed:
            return None
        raise
