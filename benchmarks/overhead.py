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

    python benchmarks/overhead.py [--timesteps 12288] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
from rltransfer.envs import get_family
from rltransfer.envs.multitask import make_task_vec_env
from sidebyside import machine
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from rltransfer.hyperparams import ppo_kwargs, resolve_hyperparams
from rltransfer.ppo import TransferPPO
from rltransfer.pretraining import pretrain, source_policy_kwargs
from rltransfer.training import learn

HP = resolve_hyperparams("cartpole")


def sb3(timesteps: int, seed: int) -> float:
    model = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=HP["n_envs"], seed=seed), seed=seed, **ppo_kwargs(HP))
    started = time.perf_counter()
    model.learn(timesteps)
    return timesteps / (time.perf_counter() - started)


def sb3_trunk(timesteps: int, seed: int) -> float:
    """Plain SB3 PPO with rltransfer's source architecture: what the architecture alone costs."""
    env = make_vec_env("CartPole-v1", n_envs=HP["n_envs"], seed=seed)
    model = PPO("MlpPolicy", env, seed=seed, policy_kwargs=source_policy_kwargs(HP), **ppo_kwargs(HP))
    started = time.perf_counter()
    model.learn(timesteps)
    return timesteps / (time.perf_counter() - started)


def rltransfer_loop(fast: bool) -> Callable[[int, int], float]:
    def run(timesteps: int, seed: int) -> float:
        env = make_task_vec_env(get_family("cartpole"), "source", HP["n_envs"], seed=seed, batched=fast)
        model = TransferPPO(
            "MlpPolicy", env, seed=seed, policy_kwargs=source_policy_kwargs(HP), fused_adam=fast, **ppo_kwargs(HP)
        )
        model.lean = fast
        started = time.perf_counter()
        learn(model, timesteps, [])
        return timesteps / (time.perf_counter() - started)

    return run


def pretrain_api(timesteps: int, seed: int) -> float:
    started = time.perf_counter()
    pretrain("cartpole", seed=seed, timesteps=timesteps)
    return timesteps / (time.perf_counter() - started)


ARMS: dict[str, Callable[[int, int], float]] = {
    "sb3 PPO MlpPolicy + DummyVecEnv": sb3,
    "sb3 PPO, rltransfer's trunk architecture": sb3_trunk,
    "rltransfer, all speed-ups off": rltransfer_loop(False),
    "rltransfer default (batched, lean, fused Adam)": rltransfer_loop(True),
    "pretrain() incl. evaluations": pretrain_api,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=12288)
    parser.add_argument("--repeats", type=int, default=5)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
