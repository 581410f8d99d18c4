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

from rltransfer.hyperparams import ppo_kwargs, resolve_hyperparams
from rltransfer.lean_predict import predictor_for
from rltransfer.ppo import TransferPPO

# Per setup: family, targets, steps learnt before evaluating.
SETUPS = {
    "cartpole": ("cartpole", ["long", "longer", "gravity30"], 20_000),
    "pendulum": ("pendulum", ["g15", "m1.5", "l1.3"], 8_192),  # the Zoo's gSDE; evaluation takes the mean
}


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()}; torch threads 1; {args.repeats} alternating rounds; 10 eval envs")
    print("| setup | agent | us per vector step | speed-up |")
    print("| --- | --- | --- | --- |")
    for setup in SETUPS:
        model = trained(setup)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
