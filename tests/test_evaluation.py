"""Evaluating every task in one env gives the episodes of evaluating each task's own env in turn."""

from __future__ import annotations

import numpy as np
import pytest
from rltransfer.envs import Task, get_family
from rltransfer.envs.multitask import make_multitask_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from rltransfer.evaluation import TaskEvalEnv, evaluate_tasks
from rltransfer.finetuning import build_model
from rltransfer.hyperparams import resolve_hyperparams
from rltransfer.tasks import TaskSet, resolve_targets

N = 6  # episodes (sub-envs) per task


def per_task_and_together(tasks: TaskSet, hp: dict, seeds: range) -> list[tuple[dict, dict]]:
    model = build_model(tasks, None, hp, seed=3)
    separate = {name: tasks.eval_env(k, N) for k, name in enumerate(tasks.eval_names)}
    together = TaskEvalEnv(tasks.eval_env_all(N), tasks.eval_names, N)
    return [(evaluate_tasks(model, separate, N, s), evaluate_tasks(model, together, N, s)) for s in seeds]


@pytest.mark.parametrize(
    ("family", "targets"),
    [
        ("cartpole", ["long", "longer", "gravity30"]),
        ("cartpole", ["cartpole/long", "acrobot/source"]),
        ("cartpole", ["noisy", "delayed"]),  # DummyVecEnv of wrapped envs; the noise is seeded at reset
    ],
    ids=["one-family", "cross-space", "observation-shift"],
)
def test_categorical_tasks_together_are_bit_identical(family: str, targets: list[str]) -> None:
    tasks = resolve_targets(family, targets)
    hp = resolve_hyperparams(family, {"n_envs": 2, "batch_size": 64})
    results = per_task_and_together(tasks, hp, range(100, 104))
    for separate, together in results:
        assert together == separate
    assert len({str(sep) for sep, _ in results}) > 1  # the seeds give different starts


def test_gaussian_tasks_together_agree_to_rounding() -> None:
    tasks = resolve_targets("pendulum", ["g12", "m1.5"])
    hp = resolve_hyperparams("pendulum", {"n_envs": 2, "batch_size": 64})
    for separate, together in per_task_and_together(tasks, hp, range(7, 9)):
        assert list(together) == list(separate)
        for name in separate:
            np.testing.assert_allclose(together[name], separate[name], rtol=1e-6)


def test_rehearsal_task_is_trained_not_evaluated() -> None:
    family = get_family("cartpole")
    tasks = resolve_targets("cartpole", ["long", "longer"]).with_rehearsal(Task(family, family.source))
    env = tasks.eval_env_all(N)
    assert tasks.eval_names == ["long", "longer"]
    np.testing.assert_array_equal(env.env_task_ids, np.repeat([0, 1], N))  # type: ignore[attr-defined]
    assert env.observation_space["task_id"].n == 3  # type: ignore[index]  # the policy's task-id space
    hp = resolve_hyperparams("cartpole", {"n_envs": 2, "batch_size": 64})
    separate, together = per_task_and_together(tasks, hp, range(5, 6))[0]
    assert together == separate


def test_without_monitor_and_with_normalisation() -> None:
    """Episode returns from summed rewards where no Monitor reports them; normalised observations."""
    family = get_family("cartpole")
    tasks = resolve_targets("cartpole", ["long", "heavy"])
    model = build_model(tasks, None, resolve_hyperparams("cartpole", {"n_envs": 2, "batch_size": 64}), seed=0)
    plain = TaskEvalEnv(make_multitask_vec_env(family, ["long", "heavy"], N, monitor=False), ["long", "heavy"], N)
    monitored = TaskEvalEnv(tasks.eval_env_all(N), ["long", "heavy"], N)
    assert evaluate_tasks(model, plain, N, 11) == evaluate_tasks(model, monitored, N, 11)
    normalised = VecNormalize(tasks.eval_env_all(N), norm_obs_keys=["obs"], norm_reward=False, training=False)
    normalised.obs_rms["obs"].mean[:] = 0.1  # type: ignore[index]
    separate = {
        name: VecNormalize(tasks.eval_env(k, N), norm_obs_keys=["obs"], norm_reward=False, training=False)
        for k, name in enumerate(tasks.eval_names)
    }
    for env in separate.values():
        env.obs_rms["obs"].mean[:] = 0.1  # type: ignore[index]
    together = evaluate_tasks(model, TaskEvalEnv(normalised, tasks.eval_names, N), N, 11)
    assert together == evaluate_tasks(model, separate, N, 11)


def test_one_episode_per_sub_env_is_required() -> None:
    tasks = resolve_targets("cartpole", ["long", "heavy"])
    model = build_model(tasks, None, resolve_hyperparams("cartpole", {"n_envs": 2, "batch_size": 64}), seed=0)
    ev = TaskEvalEnv(tasks.eval_env_all(N), tasks.eval_names, N)
    with pytest.raises(ValueError, match="one episode per sub-env"):
        evaluate_tasks(model, ev, N + 1, 0)
    with pytest.raises(ValueError, match="sub-envs for 2 tasks"):
        TaskEvalEnv(tasks.eval_env_all(N), tasks.eval_names, N + 1)
