"""The targets of one fine-tuning run: variants of one family, or tasks of several families.

Variants of one family share spaces and use the family's (batched) multi-task env. Tasks of
several families are padded into one space (``rltransfer.envs.crossspace``); when their
spaces differ the policy gets per-task input adapters and action masks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeAlias

from stable_baselines3.common.vec_env import VecEnv

from rltransfer.checkpoint import Checkpoint
from rltransfer.envs import (
    Family,
    PaddedSpaces,
    Task,
    Variant,
    make_cross_vec_env,
    make_eval_env,
    make_multitask_vec_env,
    padded_spaces,
)
from rltransfer.errors import UserError
from rltransfer.resolve import comma_items, resolve_family, resolve_variant, split_target

Target: TypeAlias = "str | Variant | Task | Mapping[str, float]"


@dataclass(frozen=True)
class TaskSet:
    """Targets plus ``family``, whose hyperparameters the run uses (and bare names resolve in)."""

    family: Family
    tasks: tuple[Task, ...]
    rehearsal: bool = False  # the last task is the source task, trained on but not evaluated

    @property
    def eval_names(self) -> list[str]:
        """The targets proper: evaluated, compared, reported."""
        return self.names[:-1] if self.rehearsal else self.names

    def with_rehearsal(self, source: Task) -> TaskSet:
        """Keep the source task in the training mixture (against forgetting)."""
        return TaskSet(self.family, (*self.tasks, source), rehearsal=True)

    @property
    def single_family(self) -> bool:
        return all(t.family.name == self.family.name for t in self.tasks)

    @property
    def names(self) -> list[str]:
        """Variant names for one family's targets; ``family/variant`` across families."""
        return [t.variant.name if self.single_family else t.name for t in self.tasks]

    @cached_property
    def spaces(self) -> PaddedSpaces | None:
        """The padded common space, or ``None`` when all targets are one family's (same spaces)."""
        if self.single_family:
            return None
        try:
            return padded_spaces(self.tasks)
        except ValueError as e:
            raise UserError(str(e)) from None

    def policy_kwargs(self) -> dict[str, Any]:
        """Per-task adapters / action masks when the spaces differ."""
        s = self.spaces
        if s is None:
            return {}
        out: dict[str, Any] = {}
        if len(set(s.obs_dims)) > 1:
            out["task_obs_dims"] = s.obs_dims
        if len(set(s.action_dims)) > 1:
            out["task_action_dims"] = s.action_dims
        return out

    def train_env(self, n_envs_per_task: int, seed: int) -> VecEnv:
        if self.single_family:
            return make_multitask_vec_env(self.family, [t.variant for t in self.tasks], n_envs_per_task, seed=seed)
        return make_cross_vec_env(self.tasks, n_envs_per_task, seed=seed)

    def eval_env(self, k: int, n_envs: int) -> VecEnv:
        if self.single_family:
            return make_eval_env(self.family, self.tasks[k].variant, n_envs, k, len(self.tasks))
        return make_cross_vec_env(self.tasks, n_envs, task_id=k)

    def eval_env_all(self, n_envs: int) -> VecEnv:
        """``eval_env`` of every evaluated task in one env, task-major: one vector step serves them all."""
        evaluated = list(range(len(self.eval_names)))
        if self.single_family:
            variants = [self.tasks[k].variant for k in evaluated]
            return make_multitask_vec_env(self.family, variants, n_envs, n_tasks=len(self.tasks))
        return make_cross_vec_env(self.tasks, n_envs, task_id=evaluated)

    def describe(self) -> str:
        return f"{self.family.name}: {', '.join(self.names)}" if self.single_family else ", ".join(self.names)

    def same_space_tasks(self, checkpoint: Checkpoint) -> list[int] | None:
        """Tasks whose spaces (and family, when the source names one) match the source's; ``None``: all."""
        s = self.spaces
        if s is None or not s.differ:
            return None
        manifest = checkpoint.manifest or {}
        src_family = manifest.get("family")
        sd = checkpoint.state_dict
        first = next((sd[k] for k in sorted(sd) if k.endswith(".0.weight") and "trunk" in k), None)
        if first is None:
            first = sd.get("mlp_extractor.policy_net.0.weight")
        obs_dim = int(first.shape[1]) if first is not None else -1
        act_dim = int(sd["action_net.weight"].shape[0]) if "action_net.weight" in sd else -1
        return [
            k
            for k, t in enumerate(self.tasks)
            if s.obs_dims[k] == obs_dim
            and s.action_dims[k] == act_dim
            and (src_family is None or t.family.name == src_family)
        ]

    def to_dicts(self, shifts: bool = True) -> list[dict[str, Any]]:
        """The tasks as manifests record them (``shifts``: with each observation shift's definition)."""
        return [
            {
                "name": n,
                "family": t.family.name,
                "variant": t.variant.name,
                "distance": t.variant.distance,
                "params": t.family.resolve(t.variant.params),
                **({"shift": t.variant.shift.to_dict()} if shifts and t.variant.shift is not None else {}),
            }
            for n, t in zip(self.names, self.tasks, strict=True)
        ]


def task_key(task: Task) -> tuple[Any, ...]:
    """What makes two tasks the same, whatever they are named: family, parameter values and shift."""
    return task.family.name, tuple(sorted(task.family.resolve(task.variant.params).items())), task.variant.shift


def observations(task: Task) -> str:
    """What a task's policy sees, in words: ``unshifted observations`` or ``scale-shifted observations``."""
    shift = task.variant.shift
    return "unshifted observations" if shift is None else f"{shift.kind}-shifted observations"


def task_distance(family: Family, a: Task, b: Task) -> float:
    """Euclidean distance of two variants' parameters, each scaled by its valid range."""
    pa, pb = family.resolve(a.variant.params), family.resolve(b.variant.params)
    # A parameter a user family fixes (low == high) cannot differ: it adds nothing.
    return math.sqrt(sum(((pa[p.name] - pb[p.name]) / (p.high - p.low)) ** 2 for p in family.params if p.high > p.low))


def nearest_task(
    trained: Sequence[Task], names: Sequence[str], name: str, task: Task, what: str, or_else: str = ""
) -> int:
    """Index of the trained task whose head plays ``task`` (named ``name``): the nearest one of its
    family (``task_distance``) among those trained on the same observations; ``what`` names the
    trained tasks in errors (``target of the experiment``), ``or_else`` ends them with another way out."""
    same = [k for k, t in enumerate(trained) if t.family.name == task.family.name]
    if not same:
        families = ", ".join(sorted({t.family.name for t in trained}))
        raise UserError(
            f"'{name}' is of family {task.family.name} and no {what} is; play targets of its families ({families})"
        )
    seen = [k for k in same if trained[k].variant.shift == task.variant.shift]
    if not seen:
        raise UserError(
            f"no {task.family.name} {what} learnt from {observations(task)} as '{name}' gives "
            f"them; play targets with the observations of one of: {', '.join(names[k] for k in same)}{or_else}"
        )
    return min(seen, key=lambda k: task_distance(task.family, trained[k], task))


def check_trainable(tasks: Sequence[Task], role: str = "target") -> None:
    """Refuse to train on a family's held-out band: it is kept unseen for ``rltransfer generalize``."""
    for task in tasks:
        family, variant = task.family, task.variant
        if family.in_held_out(variant.params):
            band = ", ".join(f"{k} in [{lo:g}, {hi:g}]" for k, (lo, hi) in family.held_out.items())
            raise UserError(
                f"{role} '{task.name}' ({', '.join(f'{k}={v:g}' for k, v in variant.params.items())}) lies in "
                f"{family.name}'s held-out band ({band}), kept unseen for "
                "`rltransfer generalize`; train on values outside it (any one parameter outside its interval)"
            )


def check_distinct(tasks: Sequence[Task]) -> None:
    """Refuse one task trained twice under two names (``long`` and ``{length: 0.75}``): two heads
    would learn it apart, and the pooled figures would count it twice."""
    seen: dict[tuple[Any, ...], Task] = {}
    for task in tasks:
        first = seen.setdefault(task_key(task), task)
        if first is not task:
            raise UserError(
                f"targets '{first.name}' and '{task.name}' are the same task (the same parameters"
                f"{'' if task.variant.shift is None else ' and observation shift'}); give it once"
            )


def resolve_targets(family: str | Family, targets: Sequence[Target] | str) -> TaskSet:
    """``long`` (a variant of ``family``), ``acrobot/source`` (another family's), a Gymnasium id
    (``rltransfer/Acrobot-long1-v0``), a ``Variant``, a ``Task`` or parameter values (a custom
    variant of ``family``); a string alone is one target, or several separated by commas."""
    fam = resolve_family(family)
    if isinstance(targets, str):  # one target, or several comma-separated as on the command line
        targets = comma_items(targets)
    if targets is None or isinstance(targets, Mapping | Variant | Task):
        raise UserError(f"targets must be a list (['long', {{'length': 0.9}}]), got {targets!r}")
    tasks = []
    for i, t in enumerate(targets):
        if isinstance(t, Task):
            tasks.append(t)
        elif isinstance(t, str):
            f, name = split_target(t, fam)
            tasks.append(Task(f, resolve_variant(f, name)))
        else:
            tasks.append(Task(fam, resolve_variant(fam, t, name=f"custom{i}")))
    if not tasks:
        raise UserError("no target variants given; pass --targets with at least one variant")
    result = TaskSet(fam, tuple(tasks))
    if len(set(result.names)) != len(result.names):
        raise UserError(f"target names must be distinct, got {result.names}")
    result.spaces  # noqa: B018 - fail now (as a UserError) if the targets' spaces cannot be padded together
    return result
