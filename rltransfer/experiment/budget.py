"""A grid's budgets in whole rollouts, and what its runs would not do as meant, said once before it starts:
budgets no PPO update learns from, minibatches that do not divide a rollout."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from rltransfer.errors import RltransferWarning
from rltransfer.experiment.runner import Job, finished_sources, needed_sources, plan_jobs
from rltransfer.experiment.spec import ExperimentSpec
from rltransfer.hyperparams import ppo_value, resolve_hyperparams, run_warnings


def source_budget(spec: ExperimentSpec) -> tuple[dict[str, Any], int]:
    """The hyperparameters a source of the spec pretrains with, and its budget in env steps."""
    hp = resolve_hyperparams(spec.family, spec.source.hyperparams)
    return hp, int(spec.source.timesteps or hp["n_timesteps"])


def sub_envs(hp: dict[str, Any], job: Job) -> int:
    """``job``'s sub-environments: ``n_envs`` per task (a rehearsed source task is one more)."""
    return int(hp["n_envs"]) * (len(job.targets) + job.arm.strategy.rehearse)


def warn_before_training(spec: ExperimentSpec, out: Path) -> None:
    """For the source and for each group of arms still to train: a ``NoLearningWarning`` where every
    update would have learning rate 0 (a ``lin_`` schedule over a budget of one rollout: such a grid
    compares initialisations), a ``MinibatchWarning`` where ``batch_size`` does not divide a rollout.
    Said here once, for the grid; its workers say nothing of it themselves."""
    if spec.source.checkpoint is None and set(needed_sources(spec, out)) - finished_sources(spec, out).keys():
        hp, steps = source_budget(spec)
        for why, category in _settings(hp, steps, hp["n_envs"]):
            warnings.warn(f"experiment '{spec.name}', source: {why}", category, stacklevel=2)
    hp = resolve_hyperparams(spec.family, spec.target_hyperparams())
    said: dict[tuple[str, type[RltransferWarning]], list[str]] = {}  # the arms each warning is for
    for job in plan_jobs(spec, out):
        if not job.arm.strategy.train or job.finished:
            continue
        for found in _settings(hp, spec.timesteps, sub_envs(hp, job)):
            if job.arm.name not in said.setdefault(found, []):
                said[found].append(job.arm.name)
    for (why, category), arms in said.items():
        which = f"arm{'s' if len(arms) > 1 else ''} {', '.join(arms)}"
        warnings.warn(f"experiment '{spec.name}', {which}: {why}", category, stacklevel=2)


def _settings(hp: dict[str, Any], budget: int, envs: int) -> list[tuple[str, type[RltransferWarning]]]:
    """``run_warnings`` for a run with ``hp`` (PPO's own defaults where a family leaves them)."""
    batch = ppo_value(hp, "batch_size")
    return run_warnings(ppo_value(hp, "learning_rate"), batch, budget, hp["n_steps"], envs)
