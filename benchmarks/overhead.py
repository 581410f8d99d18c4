"""rltransfer's single-task training vs plain SB3 on the identical config (issue 6).

RL Zoo CartPole hyperparameters (``rltransfer/ppo.yml``: 8 envs x 32 steps, one 256-sample
minibatch, 20 epochs, linear schedules). Arms, alternated round by round, env steps per
second of ``learn`` (medians over rounds) and ratio to plain SB3 (median of per-round
ratios, robust to other load on the machine):

* ``sb3``: ``PPO("MlpPolicy", make_vec_env("CartPole-v1", 8))``, the reference;
* ``sb3 PPO, rltransfer's trunk architecture``: plain SB3 with rltransfer's source policy
  (shared trunk [64, 64], heads [64]: about 1.4x the multiply-adds of ``MlpPolicy``), which
  separates what the architecture costs from what rltransfer's machinery costs;
* ``rltransfer, all speed-ups off``: ``TransferPPO`` with rltransfer's trunk policy on a
  ``DummyVecEnv`` of the family env, SB3's own rollouts and update, SB3's Adam, NaN guard:
  the pure overhead of rltransfer's classes (target ratio >= 0.95);
* ``rltransfer default``: the same with the batched env, lean rollouts/updates, fused Adam;
* ``pretrain()``: the public API end to end (model set-up, evaluations at step 0, every
  ``eval_freq`` and at the end, logs), timed around the whole call.

Then the four model arms once more, alternating *learn iteration by iteration* (a rollout of
8 x 32 steps and its update, tens of milliseconds; ``--iterations`` per arm, every model
learning on): on a shared machine whose speed drifts over seconds, whole runs of different
arms see different machines, iterations side by side see the same one.

    python benchmarks/overhead.py [--timesteps 12288] [--repeats 5] [--iterations 200]
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
from rltransfer.envs.multitask import make_task_vec_env
from sidebyside import alternate, learn_iterations, machine, paired_ratio
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from rltransfer.hyperparams import ppo_kwargs, resolve_hyperparams
from rltransfer.ppo import TransferPPO
from rltransfer.pretraining import pretrain, source_policy_kwargs
from rltransfer.training import NanGuard, learn

HP = resolve_hyperparams("cartpole")


def sb3_model(seed: int) -> PPO:
    return PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=HP["n_envs"], seed=seed), seed=seed, **ppo_kwargs(HP))


def sb3_trunk_model(seed: int) -> PPO:
    """Plain SB3 PPO with rltransfer's source architecture: what the architecture alone costs."""
    env = make_vec_env("CartPole-v1", n_envs=HP["n_envs"], seed=seed)
    return PPO("MlpPolicy", env, seed=seed, policy_kwargs=source_policy_kwargs(HP), **ppo_kwargs(HP))


def rltransfer_model(fast: bool) -> Callable[[int], TransferPPO]:
    def build(seed: int) -> TransferPPO:
        env = make_task_vec_env(get_family("cartpole"), "source", HP["n_envs"], seed=seed, batched=fast)
        model = TransferPPO(
            "MlpPolicy", env, seed=seed, policy_kwargs=source_policy_kwargs(HP), fused_adam=fast, **ppo_kwargs(HP)
        )
        model.lean = fast
        return model

    return build


def timed_learn(build: Callable[[int], Any], guarded: bool) -> Callable[[int, int], float]:
    """Env steps per second of a whole ``learn`` (``guarded``: rltransfer's, with its NaN guard)."""

    def run(timesteps: int, seed: int) -> float:
        model = build(seed)
        started = time.perf_counter()
        if guarded:
            learn(model, timesteps, [])
        else:
            model.learn(timesteps)
        return timesteps / (time.perf_counter() - started)

    return run


def pretrain_api(timesteps: int, seed: int) -> float:
    started = time.perf_counter()
    pretrain("cartpole", seed=seed, timesteps=timesteps)
    return timesteps / (time.perf_counter() - started)


# Model arms: (builder, whether rltransfer's ``learn`` with its NaN guard runs it).
MODELS: dict[str, tuple[Callable[[int], Any], bool]] = {
    "sb3 PPO MlpPolicy + DummyVecEnv": (sb3_model, False),
    "sb3 PPO, rltransfer's trunk architecture": (sb3_trunk_model, False),
    "rltransfer, all speed-ups off": (rltransfer_model(False), True),
    "rltransfer default (batched, lean, fused Adam)": (rltransfer_model(True), True),
}
ARMS: dict[str, Callable[[int, int], float]] = {
    **{name: timed_learn(build, guarded) for name, (build, guarded) in MODELS.items()},
    "pretrain() incl. evaluations": pretrain_api,
}


def by_iteration(iterations: int) -> dict[str, list[float]]:
    """Env steps/s of each model arm's learn iterations, alternating arm by arm."""
    arms = {}
    for name, (build, guarded) in MODELS.items():
        run = learn_iterations(build(0), 256 * (iterations + 4), [NanGuard()] if guarded else [])
        for _ in range(3):  # warm-up: the first updates allocate Adam's state
            run()
        arms[name] = run
    return alternate(arms, iterations)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=12288)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=200, help="alternating learn iterations per arm (0: none)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, list[float]] = {name: [] for name in ARMS}
    names = list(ARMS)
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else reversed(names):
            results[name].append(ARMS[name](args.timesteps, r))
    base = results[names[0]]
    print(f"machine: {machine()}; torch threads 1; RL Zoo CartPole config, {args.timesteps} steps per run")
    print(f"{args.repeats} alternating rounds; ratio = median of per-round ratios")
    print("| arm | env steps/s (median) | ratio to SB3 | per-round ratios |")
    print("| --- | --- | --- | --- |")
    for name in names:
        ratios = [a / b for a, b in zip(results[name], base, strict=True)]
        listed = ", ".join(f"{r:.2f}" for r in ratios)
        print(f"| {name} | {statistics.median(results[name]):,.0f} | {statistics.median(ratios):.2f} | {listed} |")
    if args.iterations:
        steps = by_iteration(args.iterations)
        base_name = names[0]
        print(f"\n{args.iterations} alternating learn iterations per arm (256 env steps each)")
        print("| arm | env steps/s (median) | ratio to SB3 (median of per-iteration ratios) |")
        print("| --- | --- | --- |")
        for name in MODELS:
            print(f"| {name} | {statistics.median(steps[name]):,.0f} | {paired_ratio(steps, name, base_name):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
