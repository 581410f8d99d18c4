"""``run_experiment``: source, grid, report — the main job (``run_experiments``: several at once)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from rltransfer.devices import parse_device, resolve_device
from rltransfer.envs import NonFiniteError, Task
from rltransfer.errors import SourceFailed, UserError
from rltransfer.experiment.budget import warn_before_training
from rltransfer.experiment.main_guard import check_main_guard
from rltransfer.experiment.pool import Grid, run_grids, start_method
from rltransfer.experiment.progress import GridProgress
from rltransfer.experiment.report import build_report
from rltransfer.experiment.runner import (
    LOCK_FILE,
    GridResult,
    Sources,
    check_out,
    default_workers,
    ensure_sources,
    finished_sources,
    needed_sources,
    plan_jobs,
    prepare_out,
)
from rltransfer.experiment.source_checks import check_layer_counts, check_solved, preflight, with_source_settings
from rltransfer.experiment.spec import ExperimentSpec, SpecLike, as_spec
from rltransfer.experiment.tensorboard import write_layout
from rltransfer.io import exclusive_lock
from rltransfer.snapshot import parse_snapshot_every
from rltransfer.tasks import check_distinct, check_trainable
from rltransfer.training import DivergenceError

BACKENDS = ("local", "ray")
# What stops one grid (a failed source or preflight, bad input found late) but not the others of a run.
STOPS_A_GRID = (UserError, SourceFailed, NonFiniteError, DivergenceError, OSError)


@dataclass
class ExperimentRun:
    """One experiment of ``run_experiments``: its grid's result, its report, and the error that stopped it."""

    spec: ExperimentSpec
    out: Path
    result: GridResult
    report: Path | None = None
    error: Exception | None = None  # a failed source or preflight: the runs that finished are kept


def run_experiment(
    spec: SpecLike,
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
    A failed source (or preflight) is raised once the runs in flight have finished.
    """
    (run,) = run_experiments(
        [spec], [out], seeds, workers, resume, progress, backend, address, gpus_per_run, device, snapshot_every
    )
    if run.error is not None:
        raise run.error
    return run.result, run.report


def run_experiments(
    specs: Sequence[SpecLike],
    outs: Sequence[str | Path | None] | None = None,
    seeds: int | None = None,
    workers: int | None = None,
    resume: bool = False,
    progress: bool = True,
    backend: str = "local",
    address: str | None = None,
    gpus_per_run: float = 0.0,
    device: str | None = None,
    snapshot_every: float | Literal["spec", "off"] | None = "spec",
) -> list[ExperimentRun]:
    """``run_experiment`` for several specs at once, each into its ``outs`` entry (default ``runs/<name>``).

    Their sources and runs share one queue (``rltransfer.experiment.pool``, or Ray tasks on the
    cluster): workers idle only at the very end, not at the tail of each grid. Every spec and
    directory is checked before anything is written; a grid whose source fails stops there
    (``ExperimentRun.error``), the others go on.
    """
    loaded, dirs, n_workers = check_experiments(
        specs, outs, seeds, workers, resume, backend, address, gpus_per_run, device, snapshot_every
    )
    # Connect before the locks: an unreachable cluster is reported with nothing written.
    session: AbstractContextManager[None] = nullcontext()
    if backend == "ray":
        from rltransfer.experiment import ray_backend

        families = [f for spec in loaded for f in spec.families]
        session = ray_backend.ray_session(address, n_workers, ray_backend.user_modules(families))
    with session, ExitStack() as locks:
        grids, todo = [], 0  # todo: the sources still to pretrain
        stopped: dict[Path, Exception] = {}  # grids whose sources failed before the pool started
        for spec, out_dir in zip(loaded, dirs, strict=True):
            locks.enter_context(exclusive_lock(out_dir / LOCK_FILE, f"'{out_dir}'"))
            prepare_out(spec, out_dir, resume)
            try:
                sources = _ready_sources(spec, out_dir, backend, n_workers, progress)
            except STOPS_A_GRID as e:
                if len(loaded) == 1:
                    raise
                stopped[out_dir] = e  # pretrained here (one worker) and failed: the other grids go on
                continue
            todo += len(set(needed_sources(spec, out_dir)) - set(sources))
            grids.append(Grid(spec, out_dir, sources))
        total = sum(len(plan_jobs(g.spec, g.out)) for g in grids) + todo
        label = "runs" if not todo else "source + runs" if todo == 1 else "sources + runs"
        if len(loaded) > 1:
            label += f" of {len(loaded)} experiments"
        with GridProgress(total, enabled=progress, label=label) as display:
            if backend == "ray":
                # A cluster's own size sets the runs in flight unless --workers caps it.
                cap = workers if address is not None else n_workers
                ray_backend.run_grids_ray(grids, cap, display, gpus_per_run)
            else:
                run_grids(grids, n_workers, on_event=display)
            errors = {g.out: g.gate.error for g in grids}
        results = {g.out: g.result for g in grids}
        runs = [
            ExperimentRun(
                spec,
                out_dir,
                results.get(out_dir, GridResult(out_dir)),
                error=stopped.get(out_dir, errors.get(out_dir)),
            )
            for spec, out_dir in zip(loaded, dirs, strict=True)
        ]
        for run in runs:
            if run.error is None:
                run.report = _report(run.out, run.spec, run.result)
    return runs


def check_experiments(
    specs: Sequence[SpecLike],
    outs: Sequence[str | Path | None] | None,
    seeds: int | None,
    workers: int | None,
    resume: bool,
    backend: str,
    address: str | None,
    gpus_per_run: float,
    device: str | None,
    snapshot_every: float | Literal["spec", "off"] | None,
) -> tuple[list[ExperimentSpec], list[Path], int]:
    """``run_experiments``' arguments resolved and checked, reading only: the specs as they will run,
    their output directories and the number of workers (``rltransfer run --dry-run`` stops here)."""
    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
    if backend != "ray" and (address is not None or gpus_per_run):
        raise UserError("--address and --gpus-per-run apply to the Ray backend only; add --backend ray")
    if gpus_per_run < 0:
        raise UserError(f"--gpus-per-run must be >= 0, got {gpus_per_run}")
    if not specs:
        raise UserError("no experiment spec given; pass one or more YAML files")
    outs = list(outs) if outs is not None else [None] * len(specs)
    if len(outs) != len(specs):
        raise ValueError(f"{len(outs)} output directories for {len(specs)} specs")
    loaded = [as_spec(s) for s in specs]
    if seeds is not None:
        if seeds <= 0:
            raise UserError(f"--seeds must be a positive integer, got {seeds}")
        loaded = [s.with_seeds(tuple(range(seeds))) for s in loaded]
    loaded = [with_source_settings(_with_device(s, device, backend, gpus_per_run)) for s in loaded]
    if snapshot_every != "spec":
        every = parse_snapshot_every(snapshot_every)
        loaded = [replace(s, snapshot_every=every) for s in loaded]
    if backend == "ray":
        from rltransfer.experiment.ray_backend import require_ray

        require_ray()
    n_workers = workers if workers is not None else default_workers()
    if n_workers <= 0:
        raise UserError(f"--workers must be a positive integer, got {n_workers}")
    if backend == "local":
        start_method()  # a bad RLTRANSFER_START_METHOD is reported before anything is written
        if n_workers > 1:
            check_main_guard()
    dirs = [Path(o) if o is not None else Path("runs") / s.name for s, o in zip(loaded, outs, strict=True)]
    first: dict[Path, int] = {}  # the first spec writing to each directory
    for i, (spec, out_dir) in enumerate(zip(loaded, dirs, strict=True)):
        j = first.setdefault(out_dir.resolve(), i)
        if j != i:
            raise UserError(
                f"specs '{loaded[j].name}' and '{spec.name}' would both write to '{out_dir}'; "
                "give them distinct names (or output directories)"
            )
    # Everything that can be checked is checked before the first file is written.
    for spec, out_dir in zip(loaded, dirs, strict=True):
        check_trainable(spec.targets)
        check_distinct(spec.targets)
        if spec.source.checkpoint is None:
            check_trainable([Task(spec.family, spec.source.variant)], "source")
        check_out(spec, out_dir, resume)
        if spec.source.checkpoint is not None:
            preflight(spec, spec.source.checkpoint)
        else:
            check_layer_counts(spec)
    for spec, out_dir in zip(loaded, dirs, strict=True):
        warn_before_training(spec, out_dir)  # once every spec has passed its checks
    return loaded, dirs, n_workers


def _ready_sources(spec: ExperimentSpec, out: Path, backend: str, workers: int, progress: bool) -> Sources:
    """The spec's source checkpoints there are (pretrained first, here, on one local worker), checked."""
    if backend == "local" and workers <= 1:
        sources = ensure_sources(spec, out, progress)
    else:  # those missing are pretrained as tasks of the grid, beside the runs that don't use them
        sources = finished_sources(spec, out)
    for source in sources.values():
        check_solved(spec, source)  # reads each manifest (only with source.require_solved)
    if spec.source.checkpoint is None and sources:
        # The sources differ in their weights only (one spec, one architecture): one check serves all
        preflight(spec, next(iter(sources.values())))
    write_layout(spec, out)
    return sources


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
