"""An experiment grid's jobs: the runs and sources to train, their scheduling, and the worker entry points.

A spec has one source, or one per seed of ``source.seeds`` (target seed ``k`` fine-tunes source
``seeds[k % len(seeds)]``, or source ``k`` when paired). With more than one worker, a source
still to pretrain is one task of the pool: the runs that do not use it (scratch, the other
sources' runs) train on the other workers meanwhile, and the runs that do are queued once it is
finished and has passed ``preflight`` (a grid's cores would otherwise idle while one of them pretrains). Each run
builds its directory as ``<dir>.partial-<pid>-<n>`` and renames it into place when complete, so
a directory ``<out>/<arm>/seed<k>/`` exists only for a finished run; ``--resume`` skips those
and redoes the rest, each unfinished run continuing from its last mid-run snapshot
(``rltransfer.snapshot``), as does a run retried after its worker died. The local process pool
that runs them is ``rltransfer.experiment.pool``; the Ray one, ``rltransfer.experiment.ray_backend``.
"""

from __future__ import annotations

import os
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rltransfer.checkpoint import MANIFEST_FILE, load_checkpoint
from rltransfer.envs import Task
from rltransfer.errors import RltransferWarning, SourceFailed, UserError
from rltransfer.experiment.arms import Arm
from rltransfer.experiment.source_checks import check_solved, preflight
from rltransfer.experiment.spec import EXECUTION_KEYS, ExperimentSpec
from rltransfer.experiment.spec_diff import spec_differences
from rltransfer.io import (
    atomic_write_json,
    check_writable,
    is_disk_full,
    lock_holder,
    read_json,
    remove_partials,
    versions,
)
from rltransfer.resolve import user_families

EXPERIMENT_FILE = "experiment.json"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class Job:
    """One training run of the grid."""

    arm: Arm
    seed: int
    targets: tuple[Task, ...]
    run_dir: Path
    source_seed: int | None = None  # the source it fine-tunes (``SourceSpec.seed_for``); None: no source

    @property
    def label(self) -> str:
        return str(self.run_dir)

    @property
    def failed_marker(self) -> Path:
        return self.run_dir.with_name(self.run_dir.name + ".failed.json")

    @property
    def finished(self) -> bool:
        return (self.run_dir / MANIFEST_FILE).exists()


@dataclass(frozen=True)
class SourceJob:
    """Pretraining the spec's source of seed ``seed`` into ``run_dir``, as one task of the grid's pool."""

    run_dir: Path
    seed: int = 0

    @property
    def label(self) -> str:
        return str(self.run_dir)

    @property
    def finished(self) -> bool:
        return (self.run_dir / MANIFEST_FILE).exists()


Notify = Callable[[str, "Job | SourceJob", dict[str, Any]], None]
# A worker's entry point for one run (``execute_job``; tests pass their own).
Execute = Callable[[Job, ExperimentSpec, str | None], dict[str, Any]]


@dataclass
class GridResult:
    out: Path
    finished: list[Job] = field(default_factory=list)
    failed: list[tuple[Job, str]] = field(default_factory=list)
    skipped: list[Job] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.failed


def plan_jobs(spec: ExperimentSpec, out: Path) -> list[Job]:
    """Every (arm, seed) run; in per-target mode every (arm, seed, target)."""
    jobs = []
    for arm in spec.arms:
        for seed in spec.seeds:
            base = out / arm.dirname / f"seed{seed}"
            src = spec.source.seed_for(seed) if arm.strategy.uses_source else None
            if spec.mode == "multitask":
                jobs.append(Job(arm, seed, spec.targets, base, src))
            else:
                jobs.extend(
                    Job(arm, seed, (t,), base / name.replace("/", "-"), src)
                    for t, name in zip(spec.targets, spec.task_names, strict=True)
                )
    return jobs


def nothing_finished(out: Path, what: str) -> UserError:
    """The error for a grid directory without ``what`` (finished runs) to read: how to get them."""
    holder = lock_holder(out / LOCK_FILE)
    if holder is not None:  # a runner is at work there, and would refuse a second one resuming
        return UserError(f"no {what} under '{out}' yet; {holder} is running its grid: try again once runs finish")
    return UserError(f"no {what} under '{out}'; run `rltransfer run SPEC --out {out} --resume`")


def source_dir(spec: ExperimentSpec, out: Path, seed: int) -> Path:
    """Where the source of ``seed`` is pretrained: ``<out>/source``, or ``<out>/source/seed<k>`` for several
    (and always when paired: more seeds later add sources beside it)."""
    one = len(spec.source.seeds) == 1 and not spec.source.paired
    return out / "source" if one else out / "source" / f"seed{seed}"


def check_out(spec: ExperimentSpec, out: Path, resume: bool) -> dict[str, Any]:
    """Refuse ``out`` if it holds another experiment, or this one without ``resume`` (reads only).
    Returns the arms its record holds runs of (``recorded_arms``; none for a new directory)."""
    check_writable(out)
    record = out / EXPERIMENT_FILE
    if record.exists():
        previous = read_json(record, "choose another --out, or restore or remove it")
        recorded = check_same_experiment(spec, out, previous)
        if not resume:
            raise UserError(f"'{out}' already holds runs of this experiment; pass --resume to continue it")
        return recorded
    if out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise UserError(f"'{out}' is not empty and holds no {EXPERIMENT_FILE}; choose an empty or new --out")
    return {}


def check_same_experiment(spec: ExperimentSpec, out: Path, previous: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse ``spec`` on a grid directory recorded as ``previous`` unless its runs stay comparable:
    the same experiment but for its seeds and arms, and an arm kept under its name kept as it was
    (so added arms run beside the finished ones). Returns the recorded arms."""
    recorded = recorded_arms(spec, previous)
    if recorded is None:
        differing = spec_differences(previous.get("spec") or {}, spec.raw, skip=(*EXECUTION_KEYS, "arms"))
        users = sorted(user_families(*spec.families))
        if differing:
            what = f"recorded -> this spec: {'; '.join(differing[:4])}{'; ...' if len(differing) > 4 else ''}"
        elif users:  # the same spec text: the definition of a family it only names changed
            what = f"the definition of family {', '.join(map(repr, users))} differs from the one its runs trained"
        else:
            what = "another spec: more than its seeds and arms differ"
        recorded_path = previous.get("spec_path")
        raise UserError(
            f"'{out}' holds runs of a different experiment ('{previous.get('name')}', {what}); choose another "
            f"--out, or run the spec it records{f' ({recorded_path})' if recorded_path else ''}"
        )
    for dirname, arm in spec.arm_settings().items():
        old = recorded.get(dirname, arm)["strategy"]
        changed = [
            f"{'strategy' if k == 'name' else k} {old.get(k)!r} -> {v!r}"
            for k, v in arm["strategy"].items()
            if old.get(k) != v
        ]
        if changed:
            raise UserError(
                f"arm '{arm['name']}' has other settings than its runs in '{out / dirname}' ({', '.join(changed)}); "
                "give the arm another name, or choose another --out"
            )
    return recorded


def recorded_arms(spec: ExperimentSpec, previous: Mapping[str, Any]) -> dict[str, Any] | None:
    """The arms (``ExperimentSpec.arm_settings``) whose runs a grid directory's record ``previous``
    holds, if it is ``spec``'s experiment but for seeds and arms; ``None`` if it is another."""
    if "shared_fingerprint" in previous:
        same = previous["shared_fingerprint"] == spec.fingerprint(arms=False)
        return dict(previous.get("arms") or {}) if same else None
    # Recorded before arms could change: the arms of the spec it holds, if with the rest of this
    # spec they make up its fingerprint.
    try:
        old = spec.with_arms(previous["spec"]["arms"])
    except (KeyError, TypeError, UserError):
        return None
    return old.arm_settings() if old.fingerprint() == previous.get("fingerprint") else None


def prepare_out(spec: ExperimentSpec, out: Path, resume: bool) -> None:
    """Claim ``out`` for this experiment (call while holding the directory's lock)."""
    recorded = check_out(spec, out, resume)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create '{out}' ({e.strerror}); choose a writable --out") from None
    atomic_write_json(
        out / EXPERIMENT_FILE,
        {
            "name": spec.name,
            "fingerprint": spec.fingerprint(),
            "shared_fingerprint": spec.fingerprint(arms=False),
            "arms": {**recorded, **spec.arm_settings()},  # arms dropped from the spec since: their runs stay
            "spec": spec.raw,
            "spec_path": str(spec.path.resolve()) if spec.path else None,  # found again from any directory
            "versions": versions(),
            "seeds": list(spec.seeds),
        },
    )


Sources = Mapping[int, Path]


def needed_sources(spec: ExperimentSpec, out: Path) -> list[int]:
    """The source seeds an unfinished run fine-tunes: the ones a grid pretrains if they are not there
    (a grid of scratch runs alone, or whose transfer runs have all finished, needs none)."""
    wanted = {job.source_seed for job in plan_jobs(spec, out) if job.source_seed is not None and not job.finished}
    return [seed for seed in spec.source.seeds if seed in wanted]


def ensure_sources(spec: ExperimentSpec, out: Path, progress: bool) -> dict[int, Path]:
    """Every source checkpoint there is by source seed: the spec's, or each pretrained once under
    ``<out>/source`` where an unfinished run needs it."""
    ready = finished_sources(spec, out)
    for seed in needed_sources(spec, out):
        if seed not in ready:
            pretrain_source(spec, source_dir(spec, out, seed), progress, seed)
            ready[seed] = source_dir(spec, out, seed)
    return ready


def finished_sources(spec: ExperimentSpec, out: Path) -> dict[int, Path]:
    """The source checkpoints there are already, by source seed (the spec's, validated, or pretrained before)."""
    if spec.source.checkpoint is not None:
        load_checkpoint(spec.source.checkpoint)  # validate before any run starts
        return dict.fromkeys(spec.source.seeds, spec.source.checkpoint)
    dirs = {seed: source_dir(spec, out, seed) for seed in spec.source.seeds}
    return {seed: d for seed, d in dirs.items() if (d / MANIFEST_FILE).exists()}


@contextmanager
def said_by_the_runner() -> Iterator[None]:
    """A grid's run with its rltransfer warnings silenced: the runner said them once for the whole grid
    before it started (``budget.warn_before_training``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RltransferWarning)
        yield


def pretrain_source(spec: ExperimentSpec, source_dir: Path, progress: bool, seed: int | None = None) -> None:
    """Pretrain the spec's source policy of ``seed`` (default: the first source seed) into ``source_dir``
    (shared by the local and Ray backends).

    On one torch thread, as every run of the grid: the source's numbers then do not depend on
    the caller's thread count or on which process pretrains it.
    """
    import torch

    from rltransfer.pretraining import pretrain

    torch.set_num_threads(1)
    with said_by_the_runner():
        pretrain(
            spec.family,
            spec.source.variant,
            seed=spec.source.seed if seed is None else seed,
            timesteps=spec.source.timesteps,
            hyperparams=spec.source.hyperparams,
            out=source_dir,
            overwrite=False,
            progress=progress,
            device=spec.device,
            resume=True,  # a killed attempt's snapshot (the grid's own directory: same spec)
            snapshot_every=spec.snapshot_every,
        )


def execute_job(job: Job, spec: ExperimentSpec, source: str | None) -> dict[str, Any]:
    """Worker entry point: one run, errors captured as a traceback (the grid goes on)."""
    import torch

    torch.set_num_threads(1)
    from rltransfer.finetuning import finetune

    started = time.time()
    try:
        with said_by_the_runner():
            finetune(
                spec.family,
                list(job.targets),
                source if job.arm.strategy.uses_source else None,
                job.arm.strategy,
                seed=job.seed,
                hyperparams=spec.target_hyperparams(),
                out=job.run_dir,
                overwrite=False,
                forgetting=spec.forgetting,
                device=spec.device,
                resume=True,  # a killed attempt's snapshot (the grid's own directory: same spec)
                snapshot_every=spec.snapshot_every,
            )
    except Exception as e:
        outcome = {"ok": False, "traceback": traceback.format_exc(), "seconds": time.time() - started}
        if is_disk_full(e):  # the grid stops (``pool.record``): every run after it would fail the same way
            outcome["exception"] = e
        return outcome
    return {"ok": True, "seconds": time.time() - started}


def execute_source(spec: ExperimentSpec, source_dir: Path, seed: int | None = None) -> dict[str, Any]:
    """Worker entry point: pretrain the source of ``seed`` (default: the first) into ``source_dir``.

    The errors the CLI reports on one line (bad input, a non-finite environment, divergence, a
    failed write) come back as themselves under ``exception``, anything else as a traceback.
    """
    from rltransfer.envs import NonFiniteError
    from rltransfer.training import DivergenceError

    started = time.time()
    try:
        pretrain_source(spec, source_dir, progress=False, seed=seed)
    except (UserError, NonFiniteError, DivergenceError, OSError) as e:
        return {"ok": False, "error": str(e), "exception": e, "seconds": time.time() - started}
    except Exception:
        return {"ok": False, "traceback": traceback.format_exc(), "seconds": time.time() - started}
    return {"ok": True, "seconds": time.time() - started}


class SourceGate:
    """The grid's sources: those ready, and the runs waiting for the ones still pretraining in the pool.

    ``done`` takes a source task's outcome and returns the runs it releases; a failed source or a
    failed ``preflight`` releases none and is kept in ``error``, raised once the runs already in
    flight have finished (they do not use that source, and are kept).
    """

    def __init__(self, spec: ExperimentSpec, ready: Sources, waiting: Mapping[int, list[Job]]) -> None:
        self.spec, self.ready = spec, dict(ready)
        self.waiting = {seed: list(jobs) for seed, jobs in waiting.items()}
        self.error: Exception | None = None

    def waiting_jobs(self) -> list[Job]:
        """The runs waiting for a source still to pretrain."""
        return [job for jobs in self.waiting.values() for job in jobs]

    def path(self, job: Job) -> str | None:
        """The checkpoint ``job`` fine-tunes (``None``: it uses no source)."""
        return None if job.source_seed is None else str(self.ready[job.source_seed])

    def done(self, job: SourceJob, outcome: dict[str, Any]) -> list[Job]:
        if not outcome["ok"]:
            self.error = outcome.get("exception") or SourceFailed(f"source pretraining failed: {outcome['traceback']}")
            return []
        try:
            check_solved(self.spec, job.run_dir)
            preflight(self.spec, job.run_dir)
        except UserError as e:
            self.error = e
            return []
        self.ready[job.seed] = job.run_dir
        return self.waiting.pop(job.seed, [])


def schedule(
    spec: ExperimentSpec, out: Path, todo: list[Job], sources: Sources | Path | None
) -> tuple[list[Job | SourceJob], SourceGate]:
    """The first queue and the gate: the sources still to pretrain first, then the runs that can
    start; the runs of those sources wait in the gate.

    ``sources``: the checkpoints ready, by source seed; one ``Path`` for every seed; ``None``: none.
    """
    if sources is None:
        ready: dict[int, Path] = {}
    elif isinstance(sources, Path):
        ready = dict.fromkeys(spec.source.seeds, sources)
    else:
        ready = dict(sources)
    needed = {j.source_seed for j in todo}
    missing = [seed for seed in spec.source.seeds if seed not in ready and seed in needed]
    gate = SourceGate(spec, ready, {seed: [j for j in todo if j.source_seed == seed] for seed in missing})
    pretrain = [SourceJob(source_dir(spec, out, seed), seed) for seed in missing]
    return [*pretrain, *(j for j in todo if j.source_seed not in missing)], gate


def unfinished_jobs(spec: ExperimentSpec, out: Path, result: GridResult, notify: Notify) -> list[Job]:
    """The jobs still to run; finished ones are recorded as skipped, stale markers and partials removed."""
    todo = []
    for job in plan_jobs(spec, out):
        if job.finished:
            result.skipped.append(job)
            notify("skip", job, {})
        else:
            job.failed_marker.unlink(missing_ok=True)
            remove_partials(job.run_dir, keep_interrupted=True)  # resumed by the run itself
            todo.append(job)
    return todo


def record_outcome(result: GridResult, job: Job, outcome: dict[str, Any], notify: Notify) -> None:
    """Record a run as finished, or as failed with its traceback in ``<run_dir>.failed.json``."""
    if outcome["ok"]:
        result.finished.append(job)
        notify("done", job, outcome)
    else:
        with suppress(OSError):  # a full disk: --resume redoes a run without its marker as well
            record = {k: v for k, v in outcome.items() if k != "exception"}
            atomic_write_json(job.failed_marker, {"run": str(job.run_dir), **record})
        result.failed.append((job, outcome["traceback"]))
        notify("failed", job, outcome)


MAX_ATTEMPTS = 3  # a run whose worker process dies is retried, up to this many attempts in all


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
