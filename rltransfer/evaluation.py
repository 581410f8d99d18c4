"""Per-task evaluation at a fixed step interval, and per-task rollout statistics.

SB3's ``EvalCallback`` covers one env and would overwrite ``eval/`` keys across tasks;
here every task is evaluated separately, with keys ``eval/<task>/mean_return``. A
``TaskEvalEnv`` holds every task's evaluation sub-envs in one env, so one vector step (one
batched env step, one policy call) serves all tasks: the same episodes as evaluating each
task's own env in turn, in a fraction of the calls.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

from rltransfer import normalization
from rltransfer.lean_predict import predictor_for


@dataclass
class EvalCurve:
    """Evaluation results: ``returns[e, t]`` is the mean return on task ``t`` at ``steps[e]``."""

    task_names: list[str]
    steps: list[int] = field(default_factory=list)
    returns: list[list[float]] = field(default_factory=list)
    stds: list[list[float]] = field(default_factory=list)

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {
            "steps": np.asarray(self.steps, dtype=np.int64),
            "returns": np.asarray(self.returns, dtype=np.float64).reshape(-1, len(self.task_names)).T,
            "stds": np.asarray(self.stds, dtype=np.float64).reshape(-1, len(self.task_names)).T,
        }


@dataclass
class TaskEvalEnv:
    """Every task's evaluation sub-envs in one ``VecEnv``: ``n_envs`` per task, task-major, one episode each."""

    env: VecEnv
    task_names: list[str]
    n_envs: int

    def __post_init__(self) -> None:
        if self.env.num_envs != self.n_envs * len(self.task_names):
            raise ValueError(f"{self.env.num_envs} sub-envs for {len(self.task_names)} tasks x {self.n_envs}")


EvalEnvs = Mapping[str, VecEnv] | TaskEvalEnv


def evaluate_tasks(
    model: BaseAlgorithm,
    eval_envs: EvalEnvs,
    n_episodes: int,
    seed: int,
    deterministic: bool = True,
    train_env: VecEnv | None = None,
) -> dict[str, tuple[float, float]]:
    """Mean and std of the episode return per task, each env re-seeded so every call sees the same starts.

    With ``train_env``, observation-normalisation statistics are copied from it first. A lean
    ``TransferPPO`` predicts through ``rltransfer.lean_predict`` (the same actions, faster).
    """
    out = {}
    predictor = predictor_for(model)
    if isinstance(eval_envs, TaskEvalEnv):
        if train_env is not None:
            normalization.sync(train_env, eval_envs.env)
        return _evaluate_together(predictor, eval_envs, n_episodes, seed, deterministic)
    for name, env in eval_envs.items():
        if train_env is not None:
            normalization.sync(train_env, env)
        env.seed(seed)
        rewards, _ = evaluate_policy(
            predictor, env, n_eval_episodes=n_episodes, deterministic=deterministic, return_episode_rewards=True
        )
        out[name] = (float(np.mean(rewards)), float(np.std(rewards)))
    return out


def _evaluate_together(
    predictor: Any, ev: TaskEvalEnv, n_episodes: int, seed: int, deterministic: bool
) -> dict[str, tuple[float, float]]:
    """``evaluate_policy`` over all tasks at once, its episode returns sorted by task.

    Sub-env ``j`` of every task is seeded ``seed + j``, as in that task's own env, and runs one
    episode; within a task the returns keep the order in which they finish, so means and
    standard deviations are those of the task-by-task evaluation (bit for bit where the
    policy's actions do not depend on the batch's other rows: categorical policies here;
    Gaussian means can differ in the last bit, since a product's rounding depends on its rows).
    """
    if n_episodes != ev.n_envs:
        raise ValueError(f"a TaskEvalEnv runs one episode per sub-env: {ev.n_envs} per task, not {n_episodes}")
    # SB3's VecEnv.seed(s) gives sub-env i the seed s + i; here i counts within each task.
    ev.env.unwrapped._seeds = [seed + i % ev.n_envs for i in range(ev.env.num_envs)]
    returns: list[list[float]] = [[] for _ in ev.task_names]

    def record(local: dict[str, Any], _: dict[str, Any]) -> None:
        # Called for every sub-env still short of its episode, before evaluate_policy counts it.
        if local["done"]:
            i, info = local["i"], local["info"]
            if local["is_monitor_wrapped"]:
                if "episode" in info:
                    returns[i // ev.n_envs].append(info["episode"]["r"])
            else:
                returns[i // ev.n_envs].append(local["current_rewards"][i])

    evaluate_policy(predictor, ev.env, n_eval_episodes=ev.env.num_envs, deterministic=deterministic, callback=record)
    return {name: (float(np.mean(r)), float(np.std(r))) for name, r in zip(ev.task_names, returns, strict=True)}


class PerTaskEvalCallback(BaseCallback):
    """Evaluate every task at step 0, every ``eval_freq`` env steps, and at the end of training."""

    def __init__(self, eval_envs: EvalEnvs, eval_freq: int, n_episodes: int, seed: int) -> None:
        super().__init__()
        self.eval_envs = eval_envs if isinstance(eval_envs, TaskEvalEnv) else dict(eval_envs)
        self.eval_freq, self.n_episodes, self.seed = eval_freq, n_episodes, seed
        names = self.eval_envs.task_names if isinstance(self.eval_envs, TaskEvalEnv) else self.eval_envs
        self.curve = EvalCurve(list(names))
        self._next = 0
        self._resumed = False  # a resumed run was evaluated at its start already

    def state_dict(self) -> dict[str, Any]:
        c = self.curve
        return {
            "steps": list(c.steps),
            "returns": [list(r) for r in c.returns],
            "stds": [list(s) for s in c.stds],
            "next": self._next,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.curve = EvalCurve(self.curve.task_names, list(state["steps"]), list(state["returns"]), list(state["stds"]))
        self._next = int(state["next"])
        self._resumed = True

    def _evaluate(self) -> None:
        results = evaluate_tasks(self.model, self.eval_envs, self.n_episodes, self.seed, train_env=self.training_env)
        self.curve.steps.append(int(self.num_timesteps))
        self.curve.returns.append([results[t][0] for t in self.curve.task_names])
        self.curve.stds.append([results[t][1] for t in self.curve.task_names])
        for task, (mean, std) in results.items():
            self.logger.record(f"eval/{task}/mean_return", mean)
            self.logger.record(f"eval/{task}/std_return", std)
        self.logger.record("eval/mean_return", float(np.mean([m for m, _ in results.values()])))
        self.logger.dump(self.num_timesteps)
        self._next = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq

    def _on_training_start(self) -> None:
        if not self._resumed:
            self._evaluate()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._evaluate()
        return True

    def _on_training_end(self) -> None:
        if not self.curve.steps or self.curve.steps[-1] != self.num_timesteps:
            self._evaluate()


class TaskRolloutLogger(BaseCallback):
    """``rollout/<task>/ep_rew_mean`` and ``ep_len_mean`` over the last 100 episodes of each task."""

    def __init__(self, env_task_ids: np.ndarray, task_names: list[str], window: int = 100) -> None:
        super().__init__()
        self.env_task_ids, self.task_names = env_task_ids, task_names
        self.returns: dict[str, deque[float]] = {t: deque(maxlen=window) for t in task_names}
        self.lengths: dict[str, deque[int]] = {t: deque(maxlen=window) for t in task_names}

    def state_dict(self) -> dict[str, Any]:
        return {
            "returns": {t: list(d) for t, d in self.returns.items()},
            "lengths": {t: list(d) for t, d in self.lengths.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for t in self.task_names:
            self.returns[t].extend(state["returns"][t])
            self.lengths[t].extend(state["lengths"][t])

    def _on_step(self) -> bool:
        for i, info in enumerate(self.locals["infos"]):
            episode = info.get("episode")
            if episode is not None:
                task = self.task_names[self.env_task_ids[i]]
                self.returns[task].append(episode["r"])
                self.lengths[task].append(episode["l"])
        return True

    def _on_rollout_end(self) -> None:
        for task in self.task_names:
            if self.returns[task]:
                self.logger.record(f"rollout/{task}/ep_rew_mean", float(np.mean(self.returns[task])))
                self.logger.record(f"rollout/{task}/ep_len_mean", float(np.mean(self.lengths[task])))
