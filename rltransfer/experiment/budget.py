"""A grid's budgets in whole rollouts, and those no PPO update would learn from (said before it starts)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from rltransfer.errors import NoLearningWarning
from rltransfer.experiment.runner import Job, finished_sources, needed_sources, plan_jobs
from rltransfer.experiment.spec import ExperimentSpec
from rltransfer.hyperparams import no_learning, resolve_hyperparams


def source_budget(spec: ExperimentSpec) -> tuple[dict[str, Any], int]:
    """The hyperparameters a source of the spec pretrains with, and its budget in env steps."""
    hp = resolve_hyperparams(spec.family, spec.source.hyperparams)
    return hp, int(spec.source.timesteps or hp["n_timesteps"])


def sub_envs(hp: dict[str, Any], job: Job) -> int:
    """``job``'s sub-environments: ``n_envs`` per task (a rehearsed source task is one more)."""
    return int(hp["n_envs"]) * (len(job.targets) + job.arm.strategy.rehearse)


def warn_no_learning(spec: ExperimentSpec, out: Path) -> None:
    """A ``NoLearningWarning`` for the source and for each group of arms still to train whose every
    update would have learning rate 0 (a ``lin_`` schedule over a budget of one rollout): such a grid
    compares initialisations, and its workers say nothing of it themselves."""
    if spec.source.checkpoint is None and set(needed_sources(spec, out)) - finished_sources(spec, out).keys():
        hp, steps = source_budget(spec)
        why = no_learning(hp.get("learning_rate"), steps, hp["n_steps"], hp["n_envs"])
        if why is not None:
            warnings.warn(f"experiment '{spec.name}', source: {why}", NoLearningWarning, stacklevel=2)
    hp = resolve_hyperparams(spec.family, spec.target_hyperparams())
    arms: dict[str, list[str]] = {}
    for job in plan_jobs(spec, out):
        if not job.arm.strategy.train or job.finished:
            continue
        why = no_learning(hp.get("learning_rate"), spec.timesteps, hp["n_steps"], sub_envs(hp, job))
        if why is not None and job.arm.name not in arms.setdefault(why, []):
            arms[why].append(job.arm.name)
    for why, names in arms.items():
        which = f"arm{'s' if len(names) > 1 else ''} {', '.join(names)}"
        warnings.warn(f"experiment '{spec.name}', {which}: {why}", NoLearningWarning, stacklevel=2)
