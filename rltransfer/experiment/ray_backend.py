"""Run an experiment grid on a Ray cluster: source pretraining and every (arm, seed) run are Ray tasks.

No shared filesystem is assumed. The source checkpoint travels to workers through Ray's object store
(a tar of its files, put once); each task trains into a temporary directory on its worker and returns
that run's files as a tar in memory, which the driver unpacks into a staging directory beside the run
directory and renames into place (``rltransfer.io.staging_dir``). The output directory therefore has
exactly the layout of the local backend: ``--resume`` works across backends, and results are the same.

Mid-run snapshots (``rltransfer.snapshot``) travel too. Every snapshot a task writes is sent, with
its run's logs so far, to a relay actor; the driver keeps the latest beside the run directory as
``<run>.partial-<driver pid>-relayed``. A task that Ray retries (its worker or node died) fetches
its run's latest snapshot from the relay and continues it on whatever node it lands, and after the
driver itself is killed, ``--resume`` ships the kept copies to the workers: on either backend.

Ray is an optional extra and is imported only inside this module's functions.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import site
import socket
import sys
import sysconfig
import tempfile
import traceback
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

from rltransfer.checkpoint import MANIFEST_FILE, MODEL_FILE
from rltransfer.envs import Family
from rltransfer.errors import UserError
from rltransfer.experiment.pool import Grid, Item, first_queue, record, runnable
from rltransfer.experiment.run_files import install, pack, unpack
from rltransfer.experiment.runner import (
    MAX_ATTEMPTS,
    Execute,
    GridResult,
    Job,
    Notify,
    SourceJob,
    Sources,
    execute_job,
    execute_source,
)
from rltransfer.experiment.spec import ExperimentSpec
from rltransfer.io import PARTIAL, as_created, atomic_write_json, interrupted_runs, is_disk_full, remove_partials
from rltransfer.resolve import user_families
from rltransfer.snapshot import snapshot_listener
from rltransfer.vecnormalize_file import find_stats_file

INSTALL_HINT = 'the Ray backend needs Ray: pip install "rltransfer[ray]"'


def require_ray() -> Any:
    """The ``ray`` module, or a one-line ``UserError`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return ray


@contextmanager
def ray_session(
    address: str | None, num_cpus: int | None = None, py_modules: list[str] | None = None
) -> Iterator[None]:
    """Connect to the cluster at ``address`` (``auto`` or ``HOST:PORT``) for the body, then disconnect.

    Without ``address`` a private local Ray instance with ``num_cpus`` CPUs is started (never an
    existing one joined by accident) and stopped afterwards. ``py_modules`` (``user_modules``) are
    uploaded to every worker. A session already opened by the caller (``ray.init`` in a notebook
    or test) is used as it is and left open: its ``runtime_env`` must carry them itself.
    """
    ray = require_ray()
    if ray.is_initialized():
        yield
        return
    if address is not None:
        _probe(address)
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if py_modules:
        quiet["runtime_env"] = {"py_modules": py_modules}
    try:
        if address is None:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as e:
        where = f"at '{address}'" if address else "locally"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot start or reach a Ray cluster {where}: {first}") from None
    try:
        yield
    finally:
        ray.shutdown()


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a ``HOST:PORT`` nobody listens on (``ray.init`` would retry it for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto" and other forms are resolved by Ray itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise UserError(
            f"cannot reach a Ray cluster at '{address}' ({e.strerror or e}); "
            "start one with `ray start --head` or check --address"
        ) from None


RELAYED = "relayed"


class SnapshotRelay:
    """Ray actor: the latest snapshot of each run in flight (its staging directory as a tar), by the
    run's driver-side path, between the workers that write them and the driver that keeps them."""

    def __init__(self, initial: dict[str, bytes]) -> None:
        self.latest, self.new = dict(initial), set[str]()

    def put(self, label: str, blob: bytes) -> None:
        self.latest[label] = blob
        self.new.add(label)

    def get(self, label: str) -> bytes | None:
        return self.latest.get(label)

    def take_new(self) -> dict[str, bytes]:
        """The snapshots received since the last call."""
        out = {label: self.latest[label] for label in self.new}
        self.new.clear()
        return out


def keep_relayed(final: Path, blob: bytes) -> None:
    """Keep a run's latest snapshot beside it on the driver, as ``<final>.partial-<pid>-relayed`` (what
    ``--resume`` continues if the driver dies); a copy half-written when it does is a dead partial too."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f"{final.name}{PARTIAL}{os.getpid()}-", dir=final.parent))
    as_created(fresh, directory=True)  # a resumed run adopts it as its directory
    unpack(blob, fresh)
    kept = final.parent / f"{final.name}{PARTIAL}{os.getpid()}-{RELAYED}"
    if kept.exists():
        shutil.rmtree(kept)
    os.rename(fresh, kept)


def _latest_snapshot(ray: Any, relay: Any, label: str, into: Path) -> None:
    """Unpack ``label``'s latest snapshot, if the relay has one, as an interrupted attempt at ``into``."""
    if relay is None:
        return
    try:
        blob = ray.get(relay.get.remote(label))
    except ray.exceptions.RayError:  # the relay's node died: the run starts over
        return
    if blob is not None:
        unpack(blob, into.with_name(f"{into.name}{PARTIAL}{RELAYED}"))  # no pid: a dead attempt


@contextmanager
def _relaying(ray: Any, relay: Any, label: str) -> Iterator[None]:
    """Send every snapshot of the body's run to the relay, waiting for it to arrive (a worker may die next)."""
    if relay is None:
        yield
        return

    def send(staging: Path) -> None:
        with suppress(ray.exceptions.RayError):
            ray.get(relay.put.remote(label, pack(staging)))

    with snapshot_listener(send):
        yield


def _source_files(source: Path) -> tuple[Path, list[str], str]:
    """What of a checkpoint to ship: its folder, the file names, and what to load relative to them.

    A checkpoint directory travels whole but for its subfolders (TensorBoard logs): the zip, the
    manifest and whatever files the manifest refers to beside them.
    """
    folder, entry = (source, ".") if source.is_dir() else (source.parent, source.name)
    if source.is_dir() or (source.name == MODEL_FILE and (folder / MANIFEST_FILE).exists()):
        return folder, sorted(p.name for p in folder.iterdir() if p.is_file()), entry
    stats = find_stats_file(source)  # a plain zip's VecNormalize file travels with it, where it lies
    return folder, [source.name, *([str(stats.relative_to(folder))] if stats is not None else [])], entry


# --- worker side -----------------------------------------------------------------------------------


@contextmanager
def _worker_tmp() -> Iterator[str]:
    """A temporary directory for one task; those left by killed workers on this machine are removed."""
    marker = Path(tempfile.gettempdir()) / "rltransfer-ray"
    remove_partials(marker)  # ``rltransfer-ray.partial-<pid>-*`` whose process is gone
    with tempfile.TemporaryDirectory(prefix=f"{marker.name}{PARTIAL}{os.getpid()}-", dir=marker.parent) as tmp:
        yield tmp


@contextmanager
def _driver_argv(argv: list[str]) -> Iterator[None]:
    """Record the driver's command line in manifests, as spawned local workers do."""
    saved = sys.argv
    sys.argv = list(argv)
    try:
        yield
    finally:
        sys.argv = saved


def _run_task(
    job: Job,
    spec: ExperimentSpec,
    source_blob: bytes | None,
    source_entry: str,
    driver_zip: str,
    argv: list[str],
    execute: Execute,
    relay: Any = None,
) -> dict[str, Any]:
    """Ray task: one run trained into a temporary directory (continuing its latest snapshot, if the
    relay has one); its files come back as bytes."""
    import ray

    with _worker_tmp() as tmp:
        source = None
        if source_blob is not None:
            unpack(source_blob, Path(tmp) / "source")
            source = str(Path(tmp) / "source" / source_entry)
        local = replace(job, run_dir=Path(tmp) / "run")
        _latest_snapshot(ray, relay, job.label, local.run_dir)
        with _driver_argv(argv), _relaying(ray, relay, job.label):
            outcome = execute(local, spec, source)
        if outcome.get("ok"):
            if source is not None:
                worker_zip = Path(source) / MODEL_FILE if Path(source).is_dir() else Path(source)
                _record_driver_source(local.run_dir, str(worker_zip), driver_zip)
            outcome["files"] = pack(local.run_dir)
        return outcome


def _record_driver_source(run_dir: Path, worker_zip: str, driver_zip: str) -> None:
    """Name the source by its path on the driver in the run's manifest, not the worker's temporary copy."""
    path = run_dir / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    if (manifest.get("source") or {}).get("path") == worker_zip:
        manifest["source"]["path"] = driver_zip
        atomic_write_json(path, manifest)


def _pretrain_task(
    spec: ExperimentSpec, seed: int, argv: list[str], relay: Any = None, label: str = ""
) -> dict[str, Any]:
    """Ray task: pretrain the spec's source of ``seed`` into a temporary directory; its files come back as bytes.

    The outcome is ``runner.execute_source``'s, with the files when it succeeded.
    """
    import ray

    with _worker_tmp() as tmp, _driver_argv(argv), _relaying(ray, relay, label):
        _latest_snapshot(ray, relay, label, Path(tmp) / "source")
        outcome = execute_source(spec, Path(tmp) / "source", seed)
        if outcome["ok"]:
            outcome["files"] = pack(Path(tmp) / "source")
        return outcome


# --- driver side -----------------------------------------------------------------------------------


def _options(gpus_per_run: float) -> dict[str, Any]:
    # max_retries: Ray reruns a task whose worker process or node died; an exception raised by the task
    # itself is a result (recorded failed with its traceback), never retried.
    return {"num_cpus": 1, "num_gpus": gpus_per_run, "max_retries": MAX_ATTEMPTS - 1, "retry_exceptions": False}


def user_modules(families: Iterable[Family]) -> list[str]:
    """Paths of the user families' top-level modules (family, environment) that are not installed.

    ``ray_session`` has Ray upload them to every worker (the job's ``runtime_env.py_modules``), so
    a ``myfamily.py`` beside the spec runs on a cluster without being installed on its nodes;
    installed ones are left to the nodes.
    """
    installed = {Path(p).resolve() for p in {*site.getsitepackages(), site.getusersitepackages()}}
    installed |= {Path(sysconfig.get_paths()[k]).resolve() for k in ("stdlib", "purelib", "platlib")}
    found: dict[str, str] = {}
    for family in user_families(*families).values():
        for module_name in family.modules:
            top = module_name.split(".")[0]
            if top in found or top in ("rltransfer", "gymnasium"):
                continue
            module = importlib.import_module(top)
            # A package's directory, or a one-file module's file: what Ray uploads and puts on the path.
            package = next(iter(getattr(module, "__path__", [])), None)
            where = package or getattr(module, "__file__", None)
            if where is not None and not any(parent in installed for parent in Path(where).resolve().parents):
                found[top] = str(where)
    return list(found.values())


def _check_resources(ray: Any, gpus_per_run: float) -> None:
    if gpus_per_run < 0:
        raise UserError(f"--gpus-per-run must be >= 0, got {gpus_per_run}")
    res = ray.cluster_resources()
    if res.get("CPU", 0) < 1:
        raise UserError("the Ray cluster has no CPUs to run on; join a worker with `ray start --address HOST:PORT`")
    if gpus_per_run > 0 and res.get("GPU", 0) < gpus_per_run:
        raise UserError(f"--gpus-per-run {gpus_per_run:g} but the Ray cluster has {res.get('GPU', 0):g} GPUs")


def run_grid_ray(
    spec: ExperimentSpec,
    out: Path,
    sources: Sources | Path | None,
    workers: int | None = None,
    on_event: Notify | None = None,
    gpus_per_run: float = 0.0,
    execute: Execute = execute_job,
) -> GridResult:
    """Run every unfinished job as a Ray task; the same contract and events as ``pool.run_grid``.

    At most ``workers`` runs are in flight (default: as many as the cluster's CPUs, and GPUs when
    ``gpus_per_run`` asks for them, re-read as nodes join or leave), so ``start`` means running.
    ``execute`` is the per-run function (``execute_job``), shipped to the workers with each task.
    A source missing from ``sources`` is pretrained by a Ray task into ``runner.source_dir`` beside
    the runs that don't use it, as ``pool.run_grid`` does in its pool.
    """
    grid = Grid(spec, out, sources)
    run_grids_ray([grid], workers, on_event, gpus_per_run, execute)
    if grid.gate.error is not None:
        raise grid.gate.error
    return grid.result


def run_grids_ray(
    grids: Sequence[Grid],
    workers: int | None = None,
    on_event: Notify | None = None,
    gpus_per_run: float = 0.0,
    execute: Execute = execute_job,
) -> None:
    """``pool.run_grids`` on the cluster: every grid's jobs as Ray tasks of one queue, sources first.

    A task that frees a slot is followed by the next job of any grid, so the cluster idles only at
    the very end. Each grid's outcome is in ``grid.result``; a grid whose source (or ``preflight``)
    failed has it in ``grid.gate.error`` and its other jobs left undone, the other grids go on.
    """
    ray = require_ray()
    notify: Notify = on_event if on_event is not None else (lambda *_: None)
    queue = first_queue(grids, notify)
    if not queue:
        return
    _check_resources(ray, gpus_per_run)
    spec_refs = {id(grid): ray.put(grid.spec) for grid in grids}
    task = ray.remote(_run_task).options(**_options(gpus_per_run))
    pretrain = ray.remote(_pretrain_task).options(**_options(gpus_per_run))
    shipped: dict[str, tuple[Any, str, str]] = {}  # by checkpoint path: each put into the object store once
    pending: dict[Any, Item] = {}
    # Snapshots of killed attempts on this machine (a killed driver's, or the local backend's) go first.
    labels = [job.label for _, job in queue] + [job.label for grid in grids for job in grid.gate.waiting_jobs()]
    interrupted = {label: interrupted_runs(Path(label)) for label in labels}
    initial = {label: pack(found[0]) for label, found in interrupted.items() if found}
    relay = ray.remote(SnapshotRelay).options(num_cpus=0).remote(initial)
    try:
        while (queue := runnable(queue)) or pending:
            slots = workers or _capacity(ray, gpus_per_run)
            while queue and len(pending) < slots:
                grid, job = item = queue.pop(0)
                if isinstance(job, SourceJob):
                    pending[pretrain.remote(grid.spec, job.seed, list(sys.argv), relay, job.label)] = item
                else:
                    source = grid.gate.path(job)
                    if source is not None and source not in shipped:
                        shipped[source] = _ship(ray, Path(source))
                    blob, entry, driver_zip = shipped[source] if source is not None else (None, "", "")
                    args = (job, spec_refs[id(grid)], blob, entry, driver_zip, list(sys.argv), execute, relay)
                    pending[task.remote(*args)] = item
                notify("start", job, {})
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            _keep_snapshots(ray, relay)  # before the runs that finished are installed: theirs are removed then
            for ref in done:
                grid, job = pending.pop(ref)
                outcome = _collect(ray, ref, job) if isinstance(job, Job) else _collect_source(ray, ref, job.run_dir)
                queue += record(grid, job, outcome, notify)
    finally:
        _stop_tasks(ray, list(pending), relay)  # interrupted: stop what is still running on the cluster


def _stop_tasks(ray: Any, refs: list[Any], relay: Any, grace: float = 10.0) -> None:
    """Stop the runs still on the cluster as Ctrl-C stops a local one, and keep what they leave.

    ``ray.cancel`` without ``force`` interrupts a task as SIGINT would (``KeyboardInterrupt``), so each
    run finishes its PPO iteration and snapshots it (``rltransfer.interrupts``), relayed here and
    kept beside its run for ``--resume``; the tasks still running after ``grace`` seconds are killed.
    """
    if not refs:
        return
    try:
        for ref in refs:
            with suppress(Exception):
                ray.cancel(ref, force=False)
        with suppress(Exception):
            ray.wait(refs, num_returns=len(refs), timeout=grace)
        _keep_snapshots(ray, relay)
    finally:
        for ref in refs:
            with suppress(Exception):
                ray.cancel(ref, force=True)


def _keep_snapshots(ray: Any, relay: Any) -> None:
    """Keep the snapshots relayed since the last call beside their runs (``keep_relayed``)."""
    try:
        new = ray.get(relay.take_new.remote())
    except ray.exceptions.RayError:  # the relay's node died: runs in flight keep training, unrelayed
        return
    for label, blob in new.items():
        if not (Path(label) / MANIFEST_FILE).exists():
            keep_relayed(Path(label), blob)


def _ship(ray: Any, source: Path) -> tuple[Any, str, str]:
    """The source checkpoint put once into the object store, what to load from it, its driver path."""
    folder, names, entry = _source_files(source)
    driver_zip = str(source / MODEL_FILE) if source.is_dir() else str(source)
    return ray.put(pack(folder, names)), entry, driver_zip


def _collect_source(ray: Any, ref: Any, source_dir: Path) -> dict[str, Any]:
    """The source task's outcome, its files installed into ``source_dir``."""
    outcome = _outcome(ray, ref, "source pretraining")
    if outcome["ok"]:
        try:
            install(outcome.pop("files"), source_dir)
        except (UserError, OSError) as e:
            return {"ok": False, "error": str(e), "exception": e}
    return outcome


def _outcome(ray: Any, ref: Any, what: str) -> dict[str, Any]:
    """A finished task's result, or why there is none (the task raised, or Ray gave up on it)."""
    try:
        return dict(ray.get(ref))
    except ray.exceptions.RayTaskError as e:  # the task raised: its traceback is the record
        return {"ok": False, "traceback": str(e)}
    except ray.exceptions.RayError as e:  # workers or nodes died more often than max_retries allows
        return {"ok": False, "traceback": f"Ray gave up on {what} after {MAX_ATTEMPTS} attempts: {e}"}


def _capacity(ray: Any, gpus_per_run: float) -> int:
    res = ray.cluster_resources()
    slots = int(res.get("CPU", 0))
    if gpus_per_run > 0:
        slots = min(slots, int(res.get("GPU", 0) / gpus_per_run))
    return max(1, slots)


def _collect(ray: Any, ref: Any, job: Job) -> dict[str, Any]:
    """A finished task's outcome, its files installed into ``job.run_dir``."""
    outcome = _outcome(ray, ref, job.label)
    files = outcome.pop("files", None)
    if outcome.get("ok"):
        try:
            install(files, job.run_dir)
        except Exception as e:
            failed = {**outcome, "ok": False, "traceback": traceback.format_exc()}
            return {**failed, "exception": e} if is_disk_full(e) else failed  # the driver's disk: stops the grid
    return outcome
