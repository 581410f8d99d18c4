"""Policy distillation: several source policies (one per source variant) into one multi-task student.

The student is the multi-task policy (shared trunk, one head per teacher's task). It is trained
by minimising KL(teacher_k || student) on task k's states, collected DAgger-style: the first
round follows the teachers, later rounds the student itself, always labelled by the teachers.
The student's zip then serves as a source for fine-tuning like any other (its trunk transfers).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from rltransfer.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from rltransfer.envs import Family, Task, Variant
from rltransfer.errors import UserError
from rltransfer.evaluation import TaskEvalEnv, evaluate_tasks
from rltransfer.finetuning import build_model
from rltransfer.hyperparams import resolve_hyperparams
from rltransfer.io import atomic_write_json, staging_dir, versions
from rltransfer.ppo import TransferPPO
from rltransfer.pretraining import EVAL_SEED_OFFSET
from rltransfer.resolve import resolve_family
from rltransfer.source_policy import is_source_of, load_source_model, source_eval_env, source_variant
from rltransfer.tasks import TaskSet


@dataclass
class DistillResult:
    student: TransferPPO
    teacher_returns: dict[str, float]
    student_returns: dict[str, float]
    losses: list[float]
    manifest: dict[str, Any]


def _kl(teacher: Any, student: Any) -> th.Tensor:
    """KL(teacher || student) per sample for SB3 distributions (categorical or diagonal Gaussian)."""
    kl = th.distributions.kl_divergence(teacher.distribution, student.distribution)
    return kl.sum(dim=-1) if kl.dim() > 1 else kl


def distill(
    family: str | Family,
    sources: Sequence[str | Path | Checkpoint],
    rounds: int = 8,
    steps_per_round: int = 2048,
    epochs: int = 4,
    batch_size: int = 256,
    seed: int = 0,
    hyperparams: dict[str, Any] | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
) -> DistillResult:
    """Distil ``sources`` (rltransfer source checkpoints of ``family``, one per variant) into one student."""
    fam = resolve_family(family)
    ckpts = [s if isinstance(s, Checkpoint) else load_checkpoint(s) for s in sources]
    if len(ckpts) < 2:
        raise UserError("distillation needs at least two source checkpoints (one per source variant)")
    for c in ckpts:
        if not is_source_of(c, fam):
            raise UserError(f"'{c.path}' is not an rltransfer source checkpoint of the '{fam.name}' family")
    hp_teacher = ckpts[0].manifest["hyperparams"]  # type: ignore[index]
    if any(c.manifest["hyperparams"].get("normalize") for c in ckpts):  # type: ignore[index]
        raise UserError(
            "distillation takes teachers trained without normalisation (each would need its own statistics); "
            "pretrain them with --hp normalize=false"
        )
    names = [f"{c.manifest['variant']['name']}-{i}" for i, c in enumerate(ckpts)]  # type: ignore[index]
    tasks = TaskSet(
        fam, tuple(Task(fam, Variant(n, source_variant(c).params, "source")) for n, c in zip(names, ckpts, strict=True))
    )
    arch = {k: hp_teacher[k] for k in ("trunk_arch", "head_arch", "activation_fn")}
    hp = resolve_hyperparams(fam, {**arch, **(hyperparams or {}), "n_envs": 4})
    teachers = [load_source_model(c, fam, seed) for c in ckpts]
    if out is None:
        return _distill(fam, tasks, ckpts, teachers, hp, rounds, steps_per_round, epochs, batch_size, seed, None)
    with staging_dir(Path(out), overwrite=overwrite) as staging:
        return _distill(fam, tasks, ckpts, teachers, hp, rounds, steps_per_round, epochs, batch_size, seed, staging)


def _distill(
    fam: Family,
    tasks: TaskSet,
    ckpts: list[Checkpoint],
    teachers: list[TransferPPO],
    hp: dict[str, Any],
    rounds: int,
    steps_per_round: int,
    epochs: int,
    batch_size: int,
    seed: int,
    staging: Path | None,
) -> DistillResult:
    started = time.time()
    student = build_model(tasks, None, hp, seed)
    env = student.get_env()
    assert env is not None
    policy = student.policy
    optimizer = th.optim.Adam(policy.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    buffer_obs: list[np.ndarray] = []
    buffer_task: list[np.ndarray] = []
    losses: list[float] = []
    obs: Any = env.reset()
    for r in range(rounds):
        for _ in range(max(1, steps_per_round // env.num_envs)):
            buffer_obs.append(np.asarray(obs["obs"], dtype=np.float32))
            buffer_task.append(np.asarray(obs["task_id"]).reshape(-1))
            if r == 0:  # first round: the teachers drive (DAgger's beta = 1)
                actions = np.concatenate(
                    [
                        teachers[int(k)].predict(o[None], deterministic=False)[0]
                        for o, k in zip(obs["obs"], buffer_task[-1], strict=True)
                    ]
                )
            else:
                actions, _ = student.predict(obs, deterministic=False)
            obs, _, _, _ = env.step(actions)
        all_obs, all_task = np.concatenate(buffer_obs), np.concatenate(buffer_task)
        for _ in range(epochs):
            order = rng.permutation(len(all_obs))
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                loss = _batch_loss(policy, teachers, all_obs[idx], all_task[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.item()))
    eval_seed = seed + EVAL_SEED_OFFSET
    episodes = int(hp["eval_episodes"])
    student_eval = TaskEvalEnv(tasks.eval_env_all(episodes), tasks.names, episodes)
    student_returns = {t: m for t, (m, _) in evaluate_tasks(student, student_eval, episodes, eval_seed).items()}
    teacher_returns = {
        n: evaluate_tasks(t, {n: source_eval_env(c, fam, tasks.tasks[k].variant, episodes)}, episodes, eval_seed)[n][0]
        for k, (n, t, c) in enumerate(zip(tasks.names, teachers, ckpts, strict=True))
    }
    manifest = {
        "kind": "distilled",
        "family": fam.name,
        "teachers": [{"path": str(c.path), "zip_sha256": c.sha256, "variant": c.manifest["variant"]} for c in ckpts],  # type: ignore[index]
        "tasks": tasks.names,
        "seed": seed,
        "hyperparams": hp,
        "distillation": {
            "rounds": rounds,
            "steps_per_round": steps_per_round,
            "epochs": epochs,
            "batch_size": batch_size,
            "final_kl": float(np.mean(losses[-10:])),
        },
        "eval": {"teacher": teacher_returns, "student": student_returns, "episodes": episodes},
        "versions": versions(),
        "command": sys.argv,
        "wall_time_s": round(time.time() - started, 2),
    }
    if staging is not None:
        atomic_write_json(staging / "config.json", {"family": fam.name, "tasks": tasks.names, "hyperparams": hp})
        save_checkpoint(student, staging, manifest)
    env.close()
    return DistillResult(student, teacher_returns, student_returns, losses, manifest)


def _batch_loss(policy: Any, teachers: list[TransferPPO], obs: np.ndarray, task: np.ndarray) -> th.Tensor:
    """Mean KL(teacher || student) over a batch mixing tasks (each state labelled by its own teacher)."""
    total = th.zeros(())
    for k, teacher in enumerate(teachers):
        mask = task == k
        if not mask.any():
            continue
        with th.no_grad():
            t_dist = teacher.policy.get_distribution(th.as_tensor(obs[mask]))
        s_dist = policy.get_distribution({"obs": th.as_tensor(obs[mask]), "task_id": th.as_tensor(task[mask])})
        total = total + _kl(t_dist, s_dist).sum()
    return total / len(obs)
