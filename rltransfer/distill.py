"""Policy distillation: several source policies (one per source variant) into one multi-task student.

The student is the multi-task policy (shared trunk, one head per teacher's task). It is trained
by minimising KL(teacher_k || student) on task k's states, collected DAgger-style: the first
round follows the teachers, later rounds the student itself, always labelled by the teachers.
The student's zip then serves as a source for fine-tuning like any other (its trunk transfers).

Every round is logged (CSV and TensorBoard under ``logs/``: the KL, each task's episode returns
while collecting) and kept in the manifest's ``curve``. A run with ``out`` is snapshotted
between rounds; a killed one continues from its last snapshot with ``resume``, with the same
numbers on the CPU as a run never stopped (``rltransfer.snapshot``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from torch.distributions import Categorical, Normal, kl_divergence

from rltransfer import env_state, interrupts
from rltransfer.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from rltransfer.envs import Family, Task, Variant
from rltransfer.errors import UserError
from rltransfer.evaluation import TaskEvalEnv, evaluate_tasks
from rltransfer.finetuning import build_model
from rltransfer.hyperparams import resolve_hyperparams
from rltransfer.io import atomic_write_json, staging_dir, versions
from rltransfer.ppo import TransferPPO
from rltransfer.pretraining import EVAL_SEED_OFFSET
from rltransfer.resolve import comma_items, resolve_family, resolve_variant, variant_record
from rltransfer.snapshot import (
    DEFAULT_EVERY_S,
    check_key,
    flush_logs,
    logged_csv,
    read_snapshot,
    restore_csv,
    rng_state,
    run_key,
    set_rng_state,
    write_snapshot,
)
from rltransfer.snapshot import FORMAT as SNAPSHOT_FORMAT
from rltransfer.source_policy import (
    is_source_of,
    load_source_model,
    plain_source_fits,
    source_eval_env,
    source_variant,
)
from rltransfer.source_settings import source_architecture
from rltransfer.tasks import TaskSet, check_trainable
from rltransfer.training import attach_logger


@dataclass
class DistillResult:
    student: TransferPPO
    teacher_returns: dict[str, float]
    student_returns: dict[str, float]
    losses: list[float]
    manifest: dict[str, Any]


@dataclass
class _Settings:
    rounds: int
    steps_per_round: int
    epochs: int
    batch_size: int
    lr: float
    seed: int


def _teacher_targets(teachers: Sequence[TransferPPO], obs: np.ndarray, task: np.ndarray) -> np.ndarray:
    """Each row's teacher distribution, computed once per state: its logits (categorical) or its
    means and standard deviations side by side (diagonal Gaussian, gSDE's included)."""
    out: np.ndarray | None = None
    with th.no_grad():
        for k, teacher in enumerate(teachers):
            rows = np.flatnonzero(task == k)
            if not len(rows):
                continue
            dist = teacher.policy.get_distribution(th.as_tensor(obs[rows])).distribution
            if isinstance(dist, Categorical):
                params = dist.logits
            elif isinstance(dist, Normal):
                params = th.cat([dist.loc, dist.scale.expand_as(dist.loc)], dim=-1)
            else:
                raise UserError(f"distillation handles discrete and Box action spaces, not {type(dist).__name__}")
            if out is None:
                out = np.empty((len(obs), params.shape[-1]), dtype=np.float32)
            out[rows] = params.numpy()
    assert out is not None
    return out


def _teacher(source: str | Path | Checkpoint, family: Family) -> tuple[Checkpoint, Variant]:
    """A teacher and the task it trained on: an rltransfer source records it; a plain SB3 zip is
    named with it, ``PATH@VARIANT`` (it does not record it)."""
    path, named = source, None
    if isinstance(source, str) and "@" in source and not Path(source).exists():
        path, named = source.rsplit("@", 1)
    ckpt = path if isinstance(path, Checkpoint) else load_checkpoint(path)
    if is_source_of(ckpt, family):
        recorded = source_variant(ckpt, family)
        if named is not None and family.resolve(resolve_variant(family, named).params) != family.resolve(
            recorded.params
        ):
            raise UserError(f"'{ckpt.path}' records that it trained on other parameters than '{named}'; drop @{named}")
        return ckpt, replace(recorded, name=ckpt.manifest["variant"]["name"])  # type: ignore[index]
    if not plain_source_fits(ckpt, family):
        manifest = ckpt.manifest or {}
        kind, what = manifest.get("kind"), ""  # what it is instead, where its manifest says
        if kind == "source":
            what = f" (it is a source of family '{manifest.get('family')}')"
        elif kind:
            what = f" (it is a {'distilled student' if kind == 'distilled' else f'{kind} run'}: a multi-task policy)"
        raise UserError(
            f"'{ckpt.path}' is not a source of the '{family.name}' family{what}: give rltransfer source checkpoints, "
            f"or plain SB3 PPO zips with its spaces as PATH@VARIANT"
        )
    if named is None:
        raise UserError(
            f"'{ckpt.path}' is a plain SB3 zip, which does not record the task it trained on; name it: "
            f"{ckpt.path}@VARIANT (variants: {', '.join(v.name for v in family.all_variants())})"
        )
    return ckpt, resolve_variant(family, named)


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise UserError(f"distillation's {name} must be > 0, got {value}")


def distill(
    family: str | Family,
    sources: Sequence[str | Path | Checkpoint] | str,
    rounds: int = 8,
    steps_per_round: int = 2048,
    epochs: int = 4,
    batch_size: int = 256,
    seed: int = 0,
    hyperparams: dict[str, Any] | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    lr: float = 1e-3,
    resume: bool = False,
    snapshot_every: float | None = DEFAULT_EVERY_S,
    verbose: int = 0,
) -> DistillResult:
    """Distil ``sources`` (rltransfer source checkpoints of ``family``, one per variant; a plain SB3 zip
    as ``"PATH@VARIANT"``, naming the task it trained on) into one student.

    With ``out``, a snapshot is taken between rounds every ``snapshot_every`` seconds (0: every
    round; ``None``: never), and ``resume`` continues a killed run at ``out`` from it.
    """
    fam = resolve_family(family)
    _check_positive(rounds=rounds, steps_per_round=steps_per_round, epochs=epochs, batch_size=batch_size, lr=lr)
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")
    if isinstance(sources, str | Path):  # comma-separated, as --sources takes them
        sources = comma_items(str(sources))
    teachers_of = [_teacher(s, fam) for s in sources]
    ckpts = [c for c, _ in teachers_of]
    if len(ckpts) < 2:
        raise UserError("distillation needs at least two source checkpoints (one per source variant)")
    bound = [source_architecture(c) for c in ckpts]
    if any(b.get("normalize") for b in bound):
        raise UserError(
            "distillation takes teachers trained without normalisation (each would need its own statistics); "
            "pretrain them with --hp normalize=false (or give plain SB3 zips trained without VecNormalize)"
        )
    if (hyperparams or {}).get("normalize"):
        raise UserError(
            "a distilled student sees the teachers' raw observations; drop normalize from its hyperparameters"
        )
    seen: dict[str, Path] = {}
    for c in ckpts:
        if c.sha256 in seen:
            raise UserError(f"'{c.path}' is the same checkpoint as '{seen[c.sha256]}'; give each teacher once")
        seen[c.sha256] = c.path
    names = [f"{v.name}-{i}" for i, (_, v) in enumerate(teachers_of)]
    tasks = TaskSet(
        fam,
        tuple(Task(fam, replace(v, name=n, distance="source")) for n, (_, v) in zip(names, teachers_of, strict=True)),
    )
    check_trainable(tasks.tasks, "teacher task")  # the student trains on them
    arch: dict[str, Any] = {k: v for k, v in bound[0].items() if k in ("trunk_arch", "head_arch", "activation_fn")}
    # The teachers label the student's own observations: they must be raw, as the teachers saw them
    # (a family whose YAML normalises, e.g. Acrobot, would otherwise feed the teachers scaled inputs).
    hp = resolve_hyperparams(fam, {**arch, **(hyperparams or {}), "n_envs": 4, "normalize": False})
    # The student is fit by distillation, never by PPO's minibatches: one whole rollout keeps SB3 from
    # warning about a batch size that does not divide 3 teachers' rollout.
    hp["batch_size"] = hp["n_steps"] * hp["n_envs"] * len(ckpts)
    teachers = [load_source_model(c, fam, seed) for c in ckpts]
    settings = _Settings(rounds, steps_per_round, epochs, batch_size, lr, seed)
    if out is None:
        return _distill(fam, tasks, teachers_of, teachers, hp, settings, None, snapshot_every, verbose)
    with interrupts.run_in(staging_dir(Path(out), overwrite=overwrite, resume=resume)) as staging:
        return _distill(fam, tasks, teachers_of, teachers, hp, settings, staging, snapshot_every, verbose)


def _teacher_actions(teachers: Sequence[TransferPPO], obs: np.ndarray, task: np.ndarray) -> np.ndarray:
    """Each row's action drawn from its own task's teacher, one batched call per teacher."""
    actions: np.ndarray | None = None
    for k, teacher in enumerate(teachers):
        rows = np.flatnonzero(task == k)
        if len(rows):
            drawn, _ = teacher.predict(obs[rows], deterministic=False)
            if actions is None:
                actions = np.empty((len(obs), *drawn.shape[1:]), dtype=drawn.dtype)
            actions[rows] = drawn
    assert actions is not None
    return actions


@dataclass
class _Progress:
    """What a distillation has done so far: all a resumed run needs besides weights, optimizer,
    generators and environments (``_snapshot``)."""

    round: int = 0  # the next round to run
    steps: int = 0  # env steps collected
    # DAgger's aggregated dataset, one array per round: states, their tasks, the teachers' distributions.
    data_obs: list[np.ndarray] = field(default_factory=list)
    data_task: list[np.ndarray] = field(default_factory=list)
    data_target: list[np.ndarray] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)  # resumptions
    elapsed_before: float = 0.0  # wall time of earlier attempts


def _collect(
    student: TransferPPO, teachers: list[TransferPPO], tasks: TaskSet, obs: Any, done: _Progress, n: int
) -> tuple[Any, dict[str, list[float]]]:
    """One round's ``n`` vector steps into ``done``'s dataset, driven by the teachers in the first
    round and by the student after; the last observation and each task's finished episodes' returns."""
    env = student.get_env()
    assert env is not None
    returns: dict[str, list[float]] = {t: [] for t in tasks.names}
    states: list[np.ndarray] = []
    task_ids: list[np.ndarray] = []
    for _ in range(n):
        interrupts.raise_pending()
        task = np.asarray(obs["task_id"]).reshape(-1)
        states.append(np.asarray(obs["obs"], dtype=np.float32))
        task_ids.append(task)
        if done.round == 0:  # DAgger's beta = 1
            actions = _teacher_actions(teachers, states[-1], task)
        else:
            actions, _ = student.predict(obs, deterministic=False)
        obs, _, _, infos = env.step(actions)
        done.steps += env.num_envs
        for k, info in zip(task, infos, strict=True):
            if "episode" in info:
                returns[tasks.names[int(k)]].append(float(info["episode"]["r"]))
    done.data_obs.append(np.concatenate(states))
    done.data_task.append(np.concatenate(task_ids))
    done.data_target.append(_teacher_targets(teachers, done.data_obs[-1], done.data_task[-1]))
    return obs, returns


def _fit(
    policy: Any, optimizer: th.optim.Optimizer, rng: np.random.Generator, done: _Progress, s: _Settings
) -> list[float]:
    """``s.epochs`` passes of minibatch KL descent over every state collected so far; the losses."""
    all_obs, all_task = np.concatenate(done.data_obs), np.concatenate(done.data_task)
    all_target = np.concatenate(done.data_target)
    losses: list[float] = []
    for _ in range(s.epochs):
        order = rng.permutation(len(all_obs))
        for start in range(0, len(order), s.batch_size):
            interrupts.raise_pending()
            idx = order[start : start + s.batch_size]
            loss = _batch_loss(policy, all_target[idx], all_obs[idx], all_task[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.item()))
    return losses


def _distill(
    fam: Family,
    tasks: TaskSet,
    teachers_of: list[tuple[Checkpoint, Variant]],  # each teacher's checkpoint and the task it trained on
    teachers: list[TransferPPO],
    hp: dict[str, Any],
    settings: _Settings,
    staging: Path | None,
    snapshot_every: float | None,
    verbose: int,
) -> DistillResult:
    started = time.time()
    seed = settings.seed
    student = build_model(tasks, None, hp, seed)
    env = student.get_env()
    assert env is not None
    policy = student.policy
    optimizer = th.optim.Adam(policy.parameters(), lr=settings.lr)
    rng = np.random.default_rng(seed)
    key = run_key(
        kind="distill",
        family=fam.name,
        teachers=[c.sha256 for c, _ in teachers_of],
        tasks=tasks.names,
        hyperparams=hp,
        **asdict(settings),
    )
    saved = read_snapshot(staging) if staging is not None else None
    if saved is not None:
        check_key(saved, key, staging)  # type: ignore[arg-type]
    log_dir = staging / "logs" if staging is not None else None
    if saved is not None:
        restore_csv(log_dir, saved["csv"])
    attach_logger(student, log_dir, verbose, None if saved is None else int(saved["progress"]["steps"]))
    obs: Any = env.reset()
    done = _Progress()
    if saved is not None:
        policy.load_state_dict(saved["policy"])
        optimizer.load_state_dict(saved["optimizer"])
        rng.bit_generator.state = saved["generator"]
        set_rng_state(saved["rng"], student.device)
        done = _Progress(**saved["progress"])
        saved_env = env_state.EnvState.from_dict(saved["env"])
        fresh = env_state.restore(env, saved_env, seed + done.steps)
        obs = saved["last_obs"] if fresh is None else fresh
        resumed = {"at_round": done.round, "at_step": done.steps, "exact": fresh is None, "why_not": saved_env.why_not}
        done.history.append(resumed)
    clock = last_snapshot = time.monotonic()
    first = done.round
    # Ctrl-C between two steps or minibatches, never inside the TensorBoard writer (``rltransfer.interrupts``).
    with interrupts.training(student):
        for r in range(first, settings.rounds):
            due = snapshot_every is not None and time.monotonic() - last_snapshot >= snapshot_every
            if staging is not None and r > first and due:
                elapsed = done.elapsed_before + time.monotonic() - clock
                state = {"policy": policy.state_dict(), "optimizer": optimizer.state_dict()}
                _snapshot(staging, key, student, rng, replace(done, elapsed_before=elapsed), obs, state)
                last_snapshot = time.monotonic()
            obs, returns = _collect(
                student, teachers, tasks, obs, done, max(1, settings.steps_per_round // env.num_envs)
            )
            round_losses = _fit(policy, optimizer, rng, done, settings)
            done.losses.extend(round_losses)
            size = sum(len(o) for o in done.data_obs)
            done.curve.append(_record(student, r, done.steps, size, round_losses, returns))
            done.round = r + 1
    eval_seed = seed + EVAL_SEED_OFFSET
    episodes = int(hp["eval_episodes"])
    student_eval = TaskEvalEnv(tasks.eval_env_all(episodes), tasks.names, episodes)
    student_returns = {t: m for t, (m, _) in evaluate_tasks(student, student_eval, episodes, eval_seed).items()}
    teacher_returns = {
        n: evaluate_tasks(t, {n: source_eval_env(c, fam, tasks.tasks[k].variant, episodes)}, episodes, eval_seed)[n][0]
        for k, (n, t, (c, _)) in enumerate(zip(tasks.names, teachers, teachers_of, strict=True))
    }
    manifest = {
        "kind": "distilled",
        "family": fam.name,
        "teachers": [
            {
                "path": str(c.path),
                "zip_sha256": c.sha256,
                "variant": c.manifest["variant"] if c.manifest else variant_record(fam, variant),
                "timesteps": c.trained_steps,  # charged to a transfer from the student
            }
            for c, variant in teachers_of
        ],
        "tasks": tasks.names,
        "seed": seed,
        "hyperparams": hp,
        "distillation": {**asdict(settings), "final_kl": float(np.mean(done.losses[-10:]))},
        "curve": done.curve,
        "eval": {"teacher": teacher_returns, "student": student_returns, "episodes": episodes},
        "versions": versions(),
        "command": sys.argv,
        "wall_time_s": round(time.time() - started + done.elapsed_before, 2),
        "resumed": done.history,
    }
    if staging is not None:
        atomic_write_json(staging / "config.json", {"family": fam.name, "tasks": tasks.names, "hyperparams": hp})
        save_checkpoint(student, staging, manifest)
    env.close()
    return DistillResult(student, teacher_returns, student_returns, done.losses, manifest)


def _snapshot(
    staging: Path,
    key: str,
    student: TransferPPO,
    rng: np.random.Generator,
    done: _Progress,
    obs: Any,
    weights: dict[str, Any],
) -> None:
    """Between two rounds: everything the rest of the run depends on, atomically into ``staging``."""
    env = student.get_env()
    assert env is not None
    flush_logs(student.logger)
    state = {
        "format": SNAPSHOT_FORMAT,
        "key": key,
        "progress": asdict(done),
        "generator": rng.bit_generator.state,
        "rng": rng_state(student.device),
        "last_obs": obs,
        "env": env_state.capture(env).to_dict(),
        "csv": logged_csv(staging / "logs"),
        **weights,
    }
    write_snapshot(staging, state)


def _record(
    student: TransferPPO, r: int, steps: int, size: int, losses: list[float], returns: dict[str, list[float]]
) -> dict[str, Any]:
    """One round into the logs (x axis: env steps collected) and as a point of the manifest's curve."""
    kl = float(np.mean(losses[-max(1, len(losses) // 4) :]))  # the round's last quarter of updates
    logger = student.logger
    logger.record("distill/round", r + 1)
    logger.record("distill/kl", kl)
    logger.record("distill/dataset_size", size)
    means = {t: float(np.mean(v)) if v else None for t, v in returns.items()}
    for task, mean in means.items():
        if mean is not None:
            logger.record(f"rollout/{task}/ep_rew_mean", mean)
    logger.record("time/total_timesteps", steps)
    logger.dump(step=steps)
    return {"round": r + 1, "steps": steps, "driver": "teachers" if r == 0 else "student", "kl": kl, "returns": means}


def _batch_loss(policy: Any, target: np.ndarray, obs: np.ndarray, task: np.ndarray) -> th.Tensor:
    """Mean KL(teacher || student) over a batch mixing tasks, each state against its own teacher's
    distribution (``_teacher_targets``); one student forward for the whole batch."""
    student = policy.get_distribution({"obs": th.as_tensor(obs), "task_id": th.as_tensor(task)}).distribution
    params = th.as_tensor(target)
    if isinstance(student, Categorical):
        teacher: Categorical | Normal = Categorical(logits=params)
    else:
        n = params.shape[-1] // 2
        teacher = Normal(params[:, :n], params[:, n:])
    kl = kl_divergence(teacher, student)
    return (kl.sum(dim=-1) if kl.dim() > 1 else kl).mean()
