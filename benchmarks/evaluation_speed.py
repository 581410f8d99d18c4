"""Per-task evaluation: SB3's ``model.predict`` vs rltransfer's ``LeanPredictor`` (issue 6).

Fine-tuning evaluates every task every ``eval_freq`` steps (10 episodes each, one per env of
a batched eval env), and with SB3's ``evaluate_policy`` calling ``predict`` once per vector
step that took about half of a run. Per setup, a multi-task policy trained a little (so that
episodes vary), evaluated on one of its tasks by ``evaluate_policy`` with three agents,
alternating (A B C, B C A, ...):

* ``model.predict`` (SB3's code);
* ``LeanPredictor`` running the network in torch without module calls (``numpy_tanh`` off);
* ``LeanPredictor`` running it as numpy operations (the default, ``rltransfer.numpy_rollout``).

Times are per vector step (one ``predict`` call for 10 envs), medians; speed-ups are medians of
per-round ratios.

A second table times one whole evaluation round of every task, task by task (each task's own
eval env in turn) against all tasks in one env (``TaskEvalEnv``: one vector step serves every
task), alternating, and checks that both give the same returns.

    python benchmarks/evaluation_speed.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from rltransfer.envs import get_family
from rltransfer.envs.multitask import make_eval_env, make_multitask_vec_env
from rltransfer.policies import MultiTaskActorCriticPolicy
from sidebyside import alternate, machine
from stable_baselines3.common.evaluation import evaluate_policy

from rltransfer.evaluation import TaskEvalEnv, evaluate_tasks
from rltransfer.hyperparams import ppo_kwargs, resolve_hyperparams
from rltransfer.lean_predict import predictor_for
from rltransfer.ppo import TransferPPO
from rltransfer.tasks import resolve_targets

# Per setup: family, targets, steps learnt before evaluating.
SETUPS = {
    "cartpole": ("cartpole", ["long", "longer", "gravity30"], 20_000),
    "pendulum": ("pendulum", ["g15", "m1.5", "l1.3"], 8_192),  # the Zoo's gSDE; evaluation takes the mean
    "cartpole-7": ("cartpole", ["source", "long", "heavy", "gravity15", "longer", "gravity30", "weak"], 20_000),
}
PREDICT_SETUPS = ("cartpole", "pendulum")


class Counting:
    """An agent whose ``predict`` calls are counted (one per vector step of ``evaluate_policy``)."""

    def __init__(self, agent: Any) -> None:
        self.agent, self.calls = agent, 0

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.agent.predict(*args, **kwargs)


def trained(setup: str) -> TransferPPO:
    family, targets, steps = SETUPS[setup]
    hp = resolve_hyperparams(family)
    fam = get_family(family)
    env = make_multitask_vec_env(fam, targets, n_envs_per_task=int(hp["n_envs"]) // len(targets) or 1, seed=0)
    policy_kwargs = {"trunk_arch": list(hp["trunk_arch"]), "net_arch": dict(hp["head_arch"])}
    kwargs = ppo_kwargs(hp)
    kwargs["batch_size"] = min(int(kwargs.get("batch_size", 64)), int(kwargs["n_steps"]) * env.num_envs)
    model = TransferPPO(MultiTaskActorCriticPolicy, env, seed=0, policy_kwargs=policy_kwargs, **kwargs)
    model.learn(steps)
    return model


def evaluation_arm(model: TransferPPO, setup: str, numpy_forward: bool | None) -> Callable[[], float]:
    """Microseconds per vector step of a 10-episode evaluation; ``None``: SB3's ``model.predict``."""
    family, targets, _ = SETUPS[setup]
    env = make_eval_env(get_family(family), targets[1], 10, task_id=1, n_tasks=len(targets))

    def run() -> float:
        model.numpy_tanh = bool(numpy_forward)
        agent = Counting(model if numpy_forward is None else predictor_for(model))
        env.seed(0)
        started = time.perf_counter()
        evaluate_policy(agent, env, n_eval_episodes=10, deterministic=True)  # type: ignore[arg-type]
        return (time.perf_counter() - started) / agent.calls * 1e6

    return run


def round_arms(model: TransferPPO, setup: str) -> tuple[dict[str, Callable[[], float]], dict[str, list]]:
    """Milliseconds per evaluation round of every task: task by task, and all together."""
    family, targets, _ = SETUPS[setup]
    tasks = resolve_targets(family, targets)
    separate = {name: tasks.eval_env(k, 10) for k, name in enumerate(tasks.eval_names)}
    together = TaskEvalEnv(tasks.eval_env_all(10), tasks.eval_names, 10)
    returns: dict[str, list] = {"task by task": [], "all tasks in one env": []}

    def arm(envs: Any, name: str) -> Callable[[], float]:
        def run() -> float:
            started = time.perf_counter()
            returns[name].append(evaluate_tasks(model, envs, 10, seed=0))
            return (time.perf_counter() - started) * 1e3

        return run

    return {
        "task by task": arm(separate, "task by task"),
        "all tasks in one env": arm(together, "all tasks in one env"),
    }, returns


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()}; torch threads 1; {args.repeats} alternating rounds; 10 eval envs")
    print("| setup | agent | us per vector step | speed-up |")
    print("| --- | --- | --- | --- |")
    models = {setup: trained(setup) for setup in SETUPS}
    for setup in PREDICT_SETUPS:
        model = models[setup]
        arms = {
            "SB3 model.predict": evaluation_arm(model, setup, None),
            "LeanPredictor, torch's network": evaluation_arm(model, setup, False),
            "LeanPredictor, numpy's network (default)": evaluation_arm(model, setup, True),
        }
        results = alternate(arms, args.repeats)
        base = results["SB3 model.predict"]
        for name, times in results.items():
            speedup = statistics.median(b / t for b, t in zip(base, times, strict=True))
            print(f"| {setup} | {name} | {statistics.median(times):.0f} | {speedup:.2f}x |", flush=True)
    print()
    print("| setup | tasks | task by task (ms per round) | all in one env | speed-up | largest relative difference |")
    print("| --- | --- | --- | --- | --- | --- |")
    for setup, model in models.items():
        arms, returns = round_arms(model, setup)
        results = alternate(arms, args.repeats)
        a, b = returns["task by task"][0], returns["all tasks in one env"][0]
        diff = max(abs(b[t][0] - a[t][0]) / max(abs(a[t][0]), 1e-12) for t in a)
        speedup = statistics.median(x / y for x, y in zip(*results.values(), strict=True))
        medians = [statistics.median(t) for t in results.values()]
        print(f"| {setup} | {len(a)} | {medians[0]:.1f} | {medians[1]:.1f} | {speedup:.2f}x | {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
