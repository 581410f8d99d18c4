"""The lean update's gradient clipping and Adam step: one flat buffer vs per tensor (issue 6).

``TransferPPO.flat_step`` (default) copies a minibatch's gradients into one flat buffer, clips
it with one norm and one multiplication and gives Adam its views; the step counters are views
of one tensor. ``flat_step = False`` clips with torch's foreach kernels and increments each
counter, as before. Both give the same weights (bit for bit where the program is exact). From
one filled rollout buffer per configuration, one ``train()`` per call, the two arms
alternating; per-minibatch times are medians, the speed-up the median of per-round ratios:

* ``cartpole-zoo``: the RL Zoo CartPole config, rltransfer's source policy (20 minibatches of 256);
* ``acrobot``: Acrobot's settings, SB3's default 64-sample minibatches (the default of most families);
* ``multitask-64env``: fine-tuning's setting, 8 CartPole targets x 8 envs, 256-sample minibatches;
* ``pendulum-sde``: Pendulum's settings (gSDE, 64-sample minibatches, 10 epochs).

    python benchmarks/flat_step.py [--repeats 15] [--configs cartpole-zoo acrobot]
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
from sidebyside import alternate, fill_buffer, machine, minibatches_per_update, paired_ratio

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


def update_arm(model: TransferPPO, flat: bool) -> Callable[[], float]:
    """Microseconds per minibatch of one ``train()`` from the same buffer."""
    buffer = copy.deepcopy(model.rollout_buffer)
    minibatches = minibatches_per_update(model)

    def run() -> float:
        model.rollout_buffer = copy.deepcopy(buffer)
        model.flat_step = flat
        started = time.perf_counter()
        model.train()
        return (time.perf_counter() - started) * 1e6 / minibatches

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()}; {args.repeats} alternating rounds per configuration")
    print("| configuration | per tensor (us per minibatch) | flat (us per minibatch) | speed-up |")
    print("| --- | --- | --- | --- |")
    for name in args.configs:
        model = fill_buffer(CONFIGS[name]())
        results: dict[str, list[float]] = alternate(
            {"per tensor": update_arm(model, flat=False), "flat": update_arm(model, flat=True)}, args.repeats
        )
        per_tensor, flat = (statistics.median(results[arm]) for arm in ("per tensor", "flat"))
        speedup = paired_ratio(results, "per tensor", "flat")
        print(f"| {name} | {per_tensor:,.0f} | {flat:,.0f} | {speedup:.3f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
