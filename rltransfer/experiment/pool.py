"""The local process pool: the sources and runs of one experiment grid, or of several, ``workers`` at a time.

Several grids share one pool (``rltransfer run A.yaml B.yaml``): every grid's sources start first,
each grid's runs are queued as its sources become ready, and a worker that frees up takes the next
job of any grid, so cores idle only at the very end rather than at the tail of every grid. A
grid whose source fails stops there (its finished runs kept), the others go on.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any, TypeVar

from rltransfer import io as rltransfer_io
from rltransfer.errors import UserError
from rltransfer.experiment.runner import (
    MAX_ATTEMPTS,
    Execute,
    GridResult,
    Job,
    Notify,
    SourceGate,
    SourceJob,
    Sources,
    execute_job,
    execute_source,
    record_outcome,
    schedule,
    unfinished_jobs,
)
from rltransfer.experiment.spec import ExperimentSpec
from rltransfer.interrupts import STOP_REQUEST


@dataclass
class Grid:
    """One experiment in the pool: its spec, directory and ready sources; then its result and gate."""

    spec: ExperimentSpec
    out: Path
    sources: Sources | Path | None  # the source checkpoints ready, by source seed (a Path: one for every seed)
    result: GridResult = field(init=False)
    gate: SourceGate = field(init=False)

    def __post_init__(self) -> None:
        self.result = GridResult(self.out)


Item = tuple[Grid, "Job | SourceJob"]


def run_grid(
    spec: ExperimentSpec,
    out: Path,
    sources: Sources | Path | None,
    workers: int,
    on_event: Notify | None = None,
) -> GridResult:
    """Run every unfinished job of one grid, ``workers`` at a time; events ``start``/``done``/``failed``/``skip``.

    A source missing from ``sources`` is pretrained into ``runner.source_dir`` first, as a task of
    the pool beside the runs that don't use it (events for it carry a ``SourceJob``); its failure,
    or a failed ``preflight``, is raised after the runs in flight have finished.
    """
    grid = Grid(spec, out, sources)
    run_grids([grid], workers, on_event)
    if grid.gate.error is not None:
        raise grid.gate.error
    return grid.result


def run_grids(
    grids: Sequence[Grid], workers: int, on_event: Notify | None = None, execute: Execute | None = None
) -> None:
    """Run every unfinished job of every grid in one pool; each grid's outcome in ``grid.result``, and a
    failed source (or ``preflight``) of a grid in ``grid.gate.error``, its other jobs then left undone.
    ``execute`` is the per-run function (default ``execute_job``; a module-level function, sent to the workers)."""
    notify: Notify = on_event if on_event is not None else (lambda *_: None)
    execute = execute if execute is not None else execute_job  # looked up now: tests patch the module's
    queue = first_queue(grids, notify)
    if workers <= 1:
        while queue:
            grid, job = queue.pop(0)
            if grid.gate.error is not None:
                continue  # that grid stops; --resume redoes what is left
            notify("start", job, {})
            fn, args = _task(grid, job, execute)
            queue += record(grid, job, fn(*args), notify)
        return
    attempts: dict[str, int] = {}
    while queue:
        # A pool whose worker died (OOM, kill -9) is broken for every job in it: start a new one and
        # retry the jobs that were in flight, up to MAX_ATTEMPTS each.
        queue = _run_pool(queue, workers, attempts, notify, execute)


def first_queue(grids: Sequence[Grid], notify: Notify) -> list[Item]:
    """Every grid's unfinished jobs, its sources first (each grid's ``gate`` set: the runs waiting
    for a source are released by it); finished runs are notified ``skip``."""
    queue: list[Item] = []
    for grid in grids:
        jobs, grid.gate = schedule(
            grid.spec, grid.out, unfinished_jobs(grid.spec, grid.out, grid.result, notify), grid.sources
        )
        queue += [(grid, job) for job in jobs]
    queue.sort(key=lambda item: not isinstance(item[1], SourceJob))  # every grid's sources first (stable)
    return queue


def record(grid: Grid, job: Job | SourceJob, outcome: dict[str, Any], notify: Notify) -> list[Item]:
    """Record a job's outcome in its grid; the runs it releases (a source's, once ready). A run that
    failed on a full disk stops its grid as a failed source does."""
    if isinstance(job, Job):
        record_outcome(grid.result, job, outcome, notify)
        if "exception" in outcome and grid.gate.error is None:
            grid.gate.error = outcome["exception"]  # a full disk (``execute_job``): its other runs are left to --resume
        return []
    notify("done" if outcome["ok"] else "failed", job, outcome)
    return [(grid, released) for released in grid.gate.done(job, outcome)]


def runnable(queue: list[Item]) -> list[Item]:
    """The queue without the jobs of grids stopped by a failed source (they are left undone)."""
    return [item for item in queue if item[0].gate.error is None]


def _task(grid: Grid, job: Job | SourceJob, execute: Execute) -> tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]:
    """The worker entry point of ``job`` and its arguments (what a pool worker is sent: not the grid)."""
    if isinstance(job, Job):
        return execute, (job, grid.spec, grid.gate.path(job))
    return execute_source, (grid.spec, job.run_dir, job.seed)


def start_method() -> str:
    """How pool workers start here: ``forkserver`` where the platform has one, else (or with
    ``RLTRANSFER_START_METHOD=spawn``) ``spawn``."""
    method = os.environ.get("RLTRANSFER_START_METHOD", "forkserver")
    if method not in ("forkserver", "spawn"):
        raise UserError(f"RLTRANSFER_START_METHOD must be forkserver or spawn, got {method!r}; unset it or pick one")
    return method if method in multiprocessing.get_all_start_methods() else "spawn"


def _context() -> BaseContext:
    """How pool workers start: forked from a forkserver where the platform has one, else spawned.

    A spawned worker imports torch, SB3 and rltransfer (~2.8 s for a pool of two here) before its
    first job; the forkserver imports them once per runner and forks each worker from that clean
    process (nothing run, no torch threads), so later pools (after a worker died, the next grid)
    start in milliseconds. Workers still start from a process that ran nothing, as spawned ones do.
    ``RLTRANSFER_START_METHOD=spawn`` spawns them instead (``benchmarks/pool_start.py`` compares).
    """
    if start_method() == "spawn":
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["rltransfer.experiment.runner"])  # effective until the server starts
    return ctx


def _worker_init(environ: dict[str, str], umask: int) -> None:
    """Die with the runner: an orphaned worker must never finish a run nobody is waiting for.

    The runner's environment and umask now, as a spawned worker would inherit them: a forked
    one would otherwise keep the forkserver's, fixed when it started.
    """
    os.environ.clear()
    os.environ.update(environ)
    os.umask(umask)
    rltransfer_io.UMASK = umask
    import signal

    signal.signal(signal.SIGINT, _interrupted)
    if STOP_REQUEST != signal.SIGINT:
        signal.signal(STOP_REQUEST, _interrupted)  # the runner's, in ``stop_workers``
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


_busy = False  # whether this worker process is running a job
_stopping = False  # whether this worker was interrupted between jobs
T = TypeVar("T")


def busy_call(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a pool worker, marked busy meanwhile: what every task sent to ``worker_pool``
    runs in, so that an interrupt stops it as Ctrl-C does (``_interrupted``)."""
    global _busy
    if _stopping:  # Ctrl-C reached this worker between jobs: it starts none (the runner is stopping)
        raise KeyboardInterrupt
    _busy = True
    try:
        return fn(*args)
    finally:
        _busy = False


def _interrupted(signum: int, frame: object) -> None:
    """A worker's Ctrl-C: a run stops as an interrupted run does (a snapshot kept, the runner told).

    A worker between runs starts no other (``busy_call``) and exits when the executor shuts down,
    once the runs in flight have stopped (the runner kills what is left). Raising there could land
    between a queue message's length and its bytes, leaving the next reader of the shared queue
    mid-message (``EOFError: Ran out of input`` in another worker, a broken pool in the runner).
    """
    global _stopping
    if _busy:
        raise KeyboardInterrupt
    _stopping = True


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` worker processes that start clean (no inherited torch threads or open env
    handles: see ``_context``), with the runner's environment and umask, and die with it."""
    init = (dict(os.environ), rltransfer_io.UMASK)
    return ProcessPoolExecutor(workers, mp_context=_context(), initializer=_worker_init, initargs=init)


@contextmanager
def _stopped_on_interrupt(pool: ProcessPoolExecutor) -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        stop_workers(pool)
        raise


def stop_workers(pool: ProcessPoolExecutor, grace: float = 10.0) -> None:
    """On an interrupt of the runner: stop the workers' runs now, not once they finish.

    A terminal's Ctrl-C reaches the workers too, and each stops its run as an interrupt does (its
    snapshot kept, to resume). An interrupt of the runner alone (``kill -INT``) would leave
    ``shutdown`` waiting out every run in flight (an hour's, for some): the workers still busy a
    moment later get the runner's stop request (``interrupts.STOP_REQUEST``), and any left after
    ``grace`` seconds are killed (as ``kill -9`` would: the next ``--resume`` continues or clears
    what they leave). Both waits are for all workers together: one second each would be 16 s
    before a 16-worker pool is even told.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())  # the executor keeps no public list
    pool.shutdown(wait=False, cancel_futures=True)
    _join_all(processes, 1.0)  # a Ctrl-C's own interrupt is being handled there
    for p in processes:
        if p.is_alive() and p.pid is not None:
            os.kill(p.pid, STOP_REQUEST)  # not a second SIGINT to a worker that had Ctrl-C's: "at once"
    _join_all(processes, grace)
    for p in processes:
        if p.is_alive():
            p.kill()


def _join_all(processes: Sequence[Any], seconds: float) -> None:
    """Wait until every process has exited or ``seconds`` have passed, whichever is first."""
    deadline = time.monotonic() + seconds
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))


def _run_pool(
    queue: list[Item],
    workers: int,
    attempts: dict[str, int],
    notify: Notify,
    execute: Execute,
) -> list[Item]:
    """Run ``queue`` in one process pool; returns the jobs to retry after the pool broke."""
    retry: list[Item] = []
    with worker_pool(workers) as pool, _stopped_on_interrupt(pool):
        pending: dict[Future[dict[str, Any]], Item] = {}
        broken = False
        while ((queue := runnable(queue)) and not broken) or pending:
            while queue and not broken and len(pending) < workers:
                grid, job = item = queue.pop(0)
                fn, args = _task(grid, job, execute)
                try:
                    future = pool.submit(busy_call, fn, *args)
                except BrokenProcessPool:  # a worker died since the last wait: nothing was sent, so no attempt
                    broken = True
                    queue.insert(0, item)
                    break
                attempts[job.label] = attempts.get(job.label, 0) + 1
                pending[future] = item
                notify("start", job, {})
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                grid, job = item = pending.pop(fut)
                try:
                    outcome = fut.result()
                except BrokenProcessPool:
                    broken = True
                    if job.finished:
                        # Its worker died after renaming the finished run into place (a kill between
                        # that and returning): the run is complete, and a retry would refuse to replace it.
                        outcome = {"ok": True, "seconds": 0.0}
                    elif attempts[job.label] < MAX_ATTEMPTS:
                        notify("retry", job, {})
                        retry.append(item)
                        continue
                    else:
                        died = f"worker process died {attempts[job.label]} times running {job.label}"
                        outcome = {"ok": False, "traceback": died}
                queue += record(grid, job, outcome, notify)
    return retry + runnable(queue)
