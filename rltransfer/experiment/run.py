"""``run_experiment``: source, grid, report — the main job."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Literal

from rltransfer.devices import parse_device, resolve_device
from rltransfer.errors import UserError
from rltransfer.experiment.progress import GridProgress
from rltransfer.experiment.report import build_report
from rltransfer.experiment.runner import (
    LOCK_FILE,
    GridResult,
    check_out,
    default_workers,
    ensure_sources,
    finished_sources,
    plan_jobs,
    prepare_out,
    run_grid,
)
from rltransfer.experiment.source_checks import check_solved, preflight, with_source_settings
from rltransfer.experiment.spec import ExperimentSpec, load_spec
from rltransfer.experiment.tensorboard import write_layout
from rltransfer.io import exclusive_lock
from rltransfer.snapshot import parse_snapshot_every

BACKENDS = ("local", "ray")


def run_experiment(
    spec: ExperimentSpec | str | Path,
    out: str | Path | None = None,
    seeds: int | None = None,
    workers: int | None = None,
    resume: bool = False,
    progress: bool = True,
    backend: str = "local",
    address: str | None = None,
    gpus_per_run: float = 0.0,
    device: str | None = None,
    snapshot_every: float | Literal["spec", "off"] | None = "spec",
) -> tuple[GridResult, Path | None]:
    """Run every (arm, seed) of ``spec`` and write the report; returns the grid result and report dir.

    ``seeds`` overrides the spec's seed count (``range(seeds)``); ``workers`` defaults to all cores.
    ``backend="ray"`` runs source pretraining and every run as Ray tasks (``rltransfer.experiment.ray_backend``)
    on the cluster at ``address`` (``"auto"`` or ``HOST:PORT``; ``None`` starts a private local Ray
    instance with ``workers`` CPUs), each reserving one CPU and ``gpus_per_run`` GPUs.
    ``device`` (default: the spec's ``device``, else ``cpu``) is the torch device every run trains
    on; the local backend checks that this machine has it before anything is written.
    ``snapshot_every`` (default: the spec's, else 300) is the seconds between a run's mid-run
    snapshots (``None``: none); ``resume`` continues each unfinished run from its last one.
    """
    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
    if backend != "ray" and (address is not None or gpus_per_run):
        raise UserError("--address and --gpus-per-run apply to the Ray backend only; add --backend ray")
    if gpus_per_run < 0:
        raise UserError(f"--gpus-per-run must be >= 0, got {gpus_per_run}")
    spec = spec if isinstance(spec, ExperimentSpec) else load_spec(spec)
    if seeds is not None:
        if seeds <= 0:
            raise UserError(f"--seeds must be a positive integer, got {seeds}")
        spec = spec.with_seeds(tuple(range(seeds)))
    spec = with_source_settings(_with_device(spec, device, backend, gpus_per_run))
    if snapshot_every != "spec":
        spec = replace(spec, snapshot_every=parse_snapshot_every(snapshot_every))
    if backend == "ray":
        from rltransfer.experiment.ray_backend import require_ray

        require_ray()
    n_workers = workers if workers is not None else default_workers()
    if n_workers <= 0:
        raise UserError(f"--workers must be a positive integer, got {n_workers}")
    out_dir = Path(out) if out is not None else Path("runs") / spec.name
    # Everything that can be checked is checked before the first file is written.
    check_out(spec, out_dir, resume)
    if spec.source.checkpoint is not None:
        preflight(spec, spec.source.checkpoint)
    # Connect before the lock: an unreachable cluster is reported with nothing written.
    session: AbstractContextManager[None] = nullcontext()
    if backend == "ray":
        from rltransfer.experiment import ray_backend

        session = ray_backend.ray_session(address, n_workers, ray_backend.user_modules(spec.families))
    with session, exclusive_lock(out_dir / LOCK_FILE, f"'{out_dir}'"):
        prepare_out(spec, out_dir, resume)
        if backend == "local" and n_workers <= 1:
            sources = ensure_sources(spec, out_dir, progress)
        else:  # those missing are pretrained as tasks of the grid, beside the runs that don't use them
            sources = finished_sources(spec, out_dir)
        for source in sources.values():
            check_solved(spec, source)  # reads each manifest (only with source.require_solved)
        if spec.source.checkpoint is None and sources:
            # The sources differ in their weights only (one spec, one architecture): one check serves all
            preflight(spec, next(iter(sources.values())))
        write_layout(spec, out_dir)
        todo = len(set(spec.source.seeds) - set(sources))  # sources still to pretrain
        label = "runs" if not todo else "source + runs" if todo == 1 else "sources + runs"
        with GridProgress(len(plan_jobs(spec, out_dir)) + todo, enabled=progress, label=label) as display:
            if backend == "ray":
                # A cluster's own size sets the runs in flight unless --workers caps it.
                cap = workers if address is not None else n_workers
                result = ray_backend.run_grid_ray(spec, out_dir, sources, cap, display, gpus_per_run)
            else:
                result = run_grid(spec, out_dir, sources, n_workers, on_event=display)
        report = _report(out_dir, spec, result)
    return result, report


def _with_device(spec: ExperimentSpec, device: str | None, backend: str, gpus_per_run: float) -> ExperimentSpec:
    """The spec with the device its runs train on, checked where it can be from here."""
    wanted = spec.device if device is None else device
    if backend != "ray":
        return replace(spec, device=str(resolve_device(wanted)))  # auto: the same answer for every run
    parsed = parse_device(wanted)  # the workers' GPUs are not visible from the driver
    if parsed != "auto" and parsed.type == "cuda" and not gpus_per_run:
        raise UserError(
            f"--device {wanted} on Ray needs --gpus-per-run > 0: Ray hides the GPUs from tasks that reserve none"
        )
    return replace(spec, device=wanted)


def _report(out: Path, spec: ExperimentSpec, result: GridResult) -> Path | None:
    """The report, or ``None`` when failures left nothing to compare (the exit code says why)."""
    try:
        return build_report(out, spec)
    except UserError:
        if result.failed:
            return None
        raise
