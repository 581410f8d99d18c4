"""What ``rltransfer run`` would do, without doing it (``--dry-run``): sources and runs to train, kept or resumed.

Everything ``run`` checks before writing is checked here too (``check_experiments``); nothing is
written, locked or pretrained. Pointed (with ``--resume``) at a grid another runner is working on,
it shows that runner's progress: runs finished, in progress, still to run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rltransfer.experiment.budget import source_budget, sub_envs
from rltransfer.experiment.collect import evaluation_line
from rltransfer.experiment.run import check_experiments
from rltransfer.experiment.runner import (
    EXPERIMENT_FILE,
    LOCK_FILE,
    Job,
    finished_sources,
    needed_sources,
    plan_jobs,
    source_dir,
)
from rltransfer.experiment.spec import ExperimentSpec, SpecLike
from rltransfer.hyperparams import resolve_hyperparams, whole_rollouts
from rltransfer.io import interrupted_runs, lock_holder, running_attempts

Status = Literal["to run", "kept", "resumes", "redone", "in progress", "not needed"]
# "not needed": a source no unfinished run fine-tunes (scratch arms alone, or its runs all finished).
STATUSES: tuple[Status, ...] = ("to run", "in progress", "resumes", "redone", "kept", "not needed")


@dataclass(frozen=True)
class ExperimentPlan:
    """One experiment's sources and runs, each with what ``run`` would do with it."""

    spec: ExperimentSpec
    out: Path
    sources: dict[int, Status | Path]  # by source seed; a Path: the spec's own checkpoint
    source_steps: int  # each source's budget, and what it trains in whole rollouts
    runs: list[tuple[Job, Status]]
    runner: str | None = None  # who holds the directory now (``pid 1234``): a grid in progress
    source_trained: int = 0
    arm_trained: dict[str, int] = field(default_factory=dict)  # a run of each arm, in whole rollouts

    def steps(self) -> tuple[int, int]:
        """Env steps still to train (whole rollouts): the sources', the runs' (a resumed one counted whole)."""
        sources = sum(self.source_trained for s in self.sources.values() if s not in ("kept", "not needed"))
        runs = sum(self.arm_trained[job.arm.name] for job, s in self.runs if s != "kept" and job.arm.strategy.train)
        return sources, runs

    def lines(self) -> list[str]:
        """The plan as text: one line per source group and per arm, then the totals."""
        state = "new" if not (self.out / EXPERIMENT_FILE).exists() else "resumed"
        if self.runner is not None:
            state = f"in progress under {self.runner}"
        out = [f"{self.spec.name} -> {self.out} ({state}; {self.spec.mode} on {', '.join(self.spec.task_names)})"]
        out.append(f"  evaluation: {evaluation_line(self.spec)}")
        given = {str(s) for s in self.sources.values() if isinstance(s, Path)}
        if given:
            out.append(f"  source: {', '.join(sorted(given))} (given)")
        else:
            counts = _count((s for s in self.sources.values() if isinstance(s, str)), new="to pretrain")
            seeds = ", ".join(str(seed) for seed in self.sources)
            each = _each(self.source_steps, self.source_trained)
            out.append(f"  sources: {counts} (seeds {seeds}; {each})")
        width = max(len(arm.name) for arm in self.spec.arms)
        for arm in self.spec.arms:
            jobs = [(job, s) for job, s in self.runs if job.arm == arm]
            steps = _each(self.spec.timesteps, self.arm_trained[arm.name]) if arm.strategy.train else "evaluated only"
            name = arm.name.ljust(width)
            out.append(f"  {name}  {arm.strategy.name:<12} {_count(s for _, s in jobs)}; {steps}")
        sources, runs = self.steps()
        out.append(f"  env steps to train: {sources + runs:,} ({sources:,} for sources, {runs:,} for runs)")
        return out


def plan_experiments(
    specs: Sequence[SpecLike],
    outs: Sequence[str | Path | None] | None = None,
    seeds: int | None = None,
    workers: int | None = None,
    resume: bool = False,
    backend: str = "local",
    address: str | None = None,
    gpus_per_run: float = 0.0,
    device: str | None = None,
    snapshot_every: float | Literal["spec", "off"] | None = "spec",
) -> tuple[list[ExperimentPlan], int]:
    """What ``run_experiments`` with these arguments would train, keep and resume; and its workers.

    Raises the ``UserError`` the run would raise before writing anything (a bad spec, an output
    directory holding another experiment, or this one without ``resume``).
    """
    loaded, dirs, n_workers = check_experiments(
        specs, outs, seeds, workers, resume, backend, address, gpus_per_run, device, snapshot_every
    )
    return [_plan(spec, out) for spec, out in zip(loaded, dirs, strict=True)], n_workers


def _plan(spec: ExperimentSpec, out: Path) -> ExperimentPlan:
    ready, needed = finished_sources(spec, out), needed_sources(spec, out)
    sources: dict[int, Status | Path] = {}
    for seed in spec.source.seeds:
        if spec.source.checkpoint is not None:
            sources[seed] = spec.source.checkpoint
        elif seed in ready:
            sources[seed] = "kept"
        else:
            sources[seed] = _unfinished(source_dir(spec, out, seed), failed=False) if seed in needed else "not needed"
    src_hp, steps = source_budget(spec)
    runs = [
        (job, "kept" if job.finished else _unfinished(job.run_dir, job.failed_marker.exists()))
        for job in plan_jobs(spec, out)
    ]
    hp = resolve_hyperparams(spec.family, spec.target_hyperparams())
    trained = {job.arm.name: whole_rollouts(spec.timesteps, hp["n_steps"] * sub_envs(hp, job)) for job, _ in runs}
    source_trained = whole_rollouts(steps, src_hp["n_envs"] * src_hp["n_steps"])
    return ExperimentPlan(spec, out, sources, steps, runs, lock_holder(out / LOCK_FILE), source_trained, trained)


def _each(budget: int, trained: int) -> str:
    """``128 steps each``, or ``100 steps each (128 in whole rollouts)``."""
    return f"{budget:,} steps each" + (f" ({trained:,} in whole rollouts)" if trained != budget else "")


def _unfinished(run_dir: Path, failed: bool) -> Status:
    if running_attempts(run_dir):
        return "in progress"
    if interrupted_runs(run_dir):
        return "resumes"
    return "redone" if failed else "to run"


def _count(statuses: Iterable[Status], new: str = "to run") -> str:
    """``2 to run, 1 kept``: how many of each status, ``new`` naming those never started."""
    found = list(statuses)
    return ", ".join(f"{found.count(s)} {new if s == 'to run' else s}" for s in STATUSES if s in found) or "none"
