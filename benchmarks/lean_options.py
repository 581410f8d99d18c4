"""The lean update's options side by side: what the flat gradient step and the numpy loss save (issue 6).

Three arms, each one ``train()`` per call from the same filled rollout buffer, alternating:

* ``before``: ``flat_step`` and ``numpy_loss`` off (the twelfth session's update): gradients
  clipped with torch's foreach kernels, every step counter incremented, the loss in torch;
* ``flat``: ``TransferPPO.flat_step`` (``FusedAdamStepper.clip_and_step``): the gradients
  copied into one flat buffer, clipped with one norm and one multiplication, Adam given its
  views, the step counters views of one tensor (the same weights; bit for bit where exact);
* ``default``: ``flat`` and ``TransferPPO.numpy_loss`` (the categorical loss in numpy,
  ``rltransfer.numpy_loss``; equal to rounding).

Per-minibatch times are medians, speed-ups medians of per-round ratios. With ``--iterations``,
a second table runs whole learn iterations (rollout, log dump, update) of ``before`` and
``default`` alternating on one model, in env steps/s. Configurations:

* ``cartpole-zoo``: the RL Zoo CartPole config, rltransfer's source policy (20 minibatches of 256);
* ``acrobot``: Acrobot's settings, SB3's default 64-sample minibatches (the default of most families);
* ``multitask-64env``: fine-tuning's setting, 8 CartPole targets x 8 envs, 256-sample minibatches;
* ``pendulum-sde``: Pendulum's settings (gSDE, 64-sample minibatches, 10 epochs).

    python benchmarks/lean_options.py [--repeats 15] [--iterations 30] [--configs cartpole-zoo acrobot]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable

import torch
from rltransfer.envs import get_family
from rltransfer.envs.multitask import make_multitask_vec_env, make_task_vec_env
from rltransfer.policies import MultiTaskActorCriticPolicy
from sidebyside import alternate, fill_buffer, learn_iterations, machine, minibatches_per_update, paired_ratio

from rltransfer.hyperparams import ppo_kwargs, resolve_hyperparams
from rltransfer.ppo import TransferPPO
from rltransfer.pretraining import source_policy_kwargs


def single_task(family: str, n_steps: int | None = None) -> TransferPPO:
    hp = resolve_hyperparams(family)
    env = make_task_vec_env(get_family(family), "source", hp["n_envs"], seed=0)
    kwargs = {**ppo_kwargs(hp), **({"n_steps": n_steps} if n_steps else {})}
    return TransferPPO("MlpPolicy", env, seed=0, policy_kwargs=source_policy_kwargs(hp), **kwargs)


def multitask_64env() -> TransferPPO:
    hp = resolve_hyperparams("cartpole")
    fam = get_family("cartpole")
    env = make_multitask_vec_env(fam, [v.name for v in fam.variants][:8], n_envs_per_task=8, seed=0)
    policy_kwargs = {"trunk_arch": list(hp["trunk_arch"]), "net_arch": dict(hp["head_arch"])}
    kwargs = {**ppo_kwargs(hp), "n_epochs": 4}  # 2,048 samples: 8 minibatches of 256 per epoch
    return TransferPPO(MultiTaskActorCriticPolicy, env, seed=0, policy_kwargs=policy_kwargs, **kwargs)


CONFIGS: dict[str, Callable[[], TransferPPO]] = {
    "cartpole-zoo": lambda: single_task("cartpole"),
    "acrobot": lambda: single_task("acrobot", n_steps=64),  # 1,024 samples: 16 minibatches of 64 per epoch
    "multitask-64env": multitask_64env,
    "pendulum-sde": lambda: single_task("pendulum", n_steps=256),
}


ARMS = {"before": (False, False), "flat": (True, False), "default": (True, True)}  # flat_step, numpy_loss


def update_arm(model: TransferPPO, flat: bool, numpy_loss: bool) -> Callable[[], float]:
    """Microseconds per minibatch of one ``train()`` from the same buffer."""
    buffer = copy.deepcopy(model.rollout_buffer)
    minibatches = minibatches_per_update(model)

    def run() -> float:
        model.rollout_buffer = copy.deepcopy(buffer)
        model.flat_step, model.numpy_loss = flat, numpy_loss
        started = time.perf_counter()
        model.train()
        return (time.perf_counter() - started) * 1e6 / minibatches

    return run


def iteration_arm(run: Callable[[], float], model: TransferPPO, flat: bool, numpy_loss: bool) -> Callable[[], float]:
    """Env steps/s of one learn iteration with the given options."""

    def arm() -> float:
        model.flat_step, model.numpy_loss = flat, numpy_loss
        return run()

    return arm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--iterations", type=int, default=0, help="alternating learn iterations per arm (0: none)")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()}; {args.repeats} alternating rounds per configuration")
    print("| configuration | before (us per minibatch) | flat | default | flat vs before | default vs before |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.configs:
        model = fill_buffer(CONFIGS[name]())
        results = alternate({arm: update_arm(model, *options) for arm, options in ARMS.items()}, args.repeats)
        times = " | ".join(f"{statistics.median(results[arm]):,.0f}" for arm in ARMS)
        speedups = " | ".join(f"{paired_ratio(results, 'before', arm):.3f}x" for arm in ("flat", "default"))
        print(f"| {name} | {times} | {speedups} |", flush=True)
    if args.iterations:
        print(f"\nWhole learn iterations, {args.iterations} per arm alternating (env steps/s):")
        print("| configuration | before | default | default vs before |")
        print("| --- | --- | --- | --- |")
        for name in args.configs:
            model = CONFIGS[name]()
            run = learn_iterations(model, 10**9)
            arms = {arm: iteration_arm(run, model, *ARMS[arm]) for arm in ("before", "default")}
            results = alternate(arms, args.iterations)
            rates = " | ".join(f"{statistics.median(results[arm]):,.0f}" for arm in arms)
            print(f"| {name} | {rates} | {paired_ratio(results, 'default', 'before'):.3f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
