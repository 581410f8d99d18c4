"""Batched family envs vs DummyVecEnv at 64 sub-environments (issue 6).

Per family, a 4-task multi-task env with 16 sub-environments per task (64 in all), built
once as a ``DummyVecEnv`` of Monitor-wrapped single envs and once batched. Two
measurements, each alternating the two envs (A, B, A, B, ...) and reporting medians:

* env stepping: random valid actions, ``VecEnv.step`` only;
* rollout collection: ``TransferPPO.collect_rollouts`` with a multi-task policy (training
  switched off), i.e. env stepping plus policy forward and SB3's buffer bookkeeping; both
  envs run rltransfer's lean rollout code, and a third arm runs SB3's own code
  (``model.lean = False``) on the ``DummyVecEnv``: what a plain SB3 user's rollouts cost.

Ratios are medians of per-round ratios (each round measures both envs back to back), which
stay meaningful when other processes share the machine.

    python benchmarks/batched_envs.py [--families cartpole acrobot] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from rltransfer.envs import get_family
from rltransfer.envs.multitask import make_multitask_vec_env
from rltransfer.policies import MultiTaskActorCriticPolicy
from sidebyside import alternate, machine, paired_ratio
from stable_baselines3.common.vec_env import VecEnv

from rltransfer.ppo import TransferPPO


def build(family: str, batched: bool) -> VecEnv:
    fam = get_family(family)
    tasks = [v.name for v in fam.variants][:4]
    return make_multitask_vec_env(fam, tasks, n_envs_per_task=16, seed=0, batched=batched)


def step_rate(env: VecEnv, steps: int) -> Callable[[], float]:
    """Env steps per second of ``env.step`` over ``steps`` vector steps of random actions."""
    rng = np.random.default_rng(0)
    space = env.action_space
    n = env.num_envs
    env.reset()

    def run() -> float:
        if space.shape:
            actions = rng.uniform(space.low, space.high, size=(steps, n, *space.shape)).astype(np.float32)  # type: ignore[attr-defined]
        else:
            actions = rng.integers(0, space.n, size=(steps, n))  # type: ignore[attr-defined]
        started = time.perf_counter()
        for a in actions:
            env.step(a)
        return steps * n / (time.perf_counter() - started)

    return run


def rollout_rate(env: VecEnv, rollouts: int, lean: bool = True) -> Callable[[], float]:
    """Env steps per second of PPO rollout collection (32 steps per sub-env, no training)."""
    model = TransferPPO(MultiTaskActorCriticPolicy, env, n_steps=32, batch_size=256, seed=0, device="cpu")
    model.lean = lean
    model.train = lambda: None  # type: ignore[method-assign]
    model.learn(32 * env.num_envs)  # warm-up and _setup_learn
    total = rollouts * 32 * env.num_envs

    def run() -> float:
        started = time.perf_counter()
        model.learn(total, reset_num_timesteps=False)
        return total / (time.perf_counter() - started)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--families", nargs="+", default=["cartpole", "acrobot", "mountaincar", "pendulum", "mountaincarcontinuous"]
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200, help="vector steps per env-stepping measurement")
    parser.add_argument("--rollouts", type=int, default=3, help="rollouts (of 32 x 64 steps) per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()}; torch threads 1; 64 sub-envs (4 tasks x 16); {args.repeats} alternating rounds")
    print("rates: medians; ratios: medians of per-round ratios")
    print("| family | env step: Dummy | batched | ratio | rollout: Dummy | batched | ratio | plain SB3 | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for family in args.families:
        dummy, batched, plain = build(family, False), build(family, True), build(family, False)
        steps = alternate(
            {"dummy": step_rate(dummy, args.steps), "batched": step_rate(batched, args.steps)}, args.repeats
        )
        arms = {
            "dummy": rollout_rate(dummy, args.rollouts),
            "batched": rollout_rate(batched, args.rollouts),
            "sb3": rollout_rate(plain, args.rollouts, lean=False),
        }
        rolls = alternate(arms, args.repeats)
        cells = []
        for results in (steps, rolls):
            dummy_rate, batched_rate = (statistics.median(results[k]) for k in ("dummy", "batched"))
            cells.append(f"{dummy_rate:,.0f} | {batched_rate:,.0f} | {paired_ratio(results, 'batched', 'dummy'):.1f}x")
        sb3 = f"{statistics.median(rolls['sb3']):,.0f} | {paired_ratio(rolls, 'batched', 'sb3'):.1f}x"
        print(f"| {family} | {cells[0]} | {cells[1]} | {sb3} |", flush=True)
    print("(env steps per second)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
