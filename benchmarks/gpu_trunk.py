"""A large-trunk multi-task training run on each device, side by side (issue 6; goal: cuda >= 5x cpu).

The same run per device: ``MultiTaskActorCriticPolicy`` with a ``--trunk`` (default
1024 x 1024) shared trunk and per-task heads pi [64] / vf [64], on ``--tasks`` CartPole
variants with ``--envs-per-task`` batched sub-environments each, RL Zoo CartPole PPO
hyperparameters (``--batch-size`` overrides the minibatch). Devices alternate round by round
(cpu, cuda, cuda, cpu, ...); rates are medians, the ratio is the median of per-round ratios.
The CPU arm uses ``--cpu-threads`` torch threads (default: every core), as a CPU user would;
the CUDA arm one (its CPU side is the numpy env and SB3's bookkeeping).

    python benchmarks/gpu_trunk.py [--devices cpu cuda] [--timesteps 16384] [--repeats 3]

On a machine without CUDA, ``--devices cpu`` checks the script itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
from rltransfer.envs import get_family
from rltransfer.envs.multitask import make_multitask_vec_env
from rltransfer.policies import MultiTaskActorCriticPolicy
from sidebyside import alternate, machine, paired_ratio

from rltransfer.hyperparams import ppo_kwargs, resolve_hyperparams
from rltransfer.ppo import TransferPPO

HP = resolve_hyperparams("cartpole")
FAMILY = get_family("cartpole")


def run_for(device: str, args: argparse.Namespace) -> Callable[[], float]:
    """Env steps per second of one fresh ``learn(--timesteps)`` on ``device``."""
    variants = [v.name for v in (*FAMILY.variants, *FAMILY.held_out_variants())][: args.tasks]
    policy_kwargs = {"trunk_arch": list(args.trunk), "net_arch": dict(HP["head_arch"])}
    kwargs = {**ppo_kwargs(HP), **({"batch_size": args.batch_size} if args.batch_size else {})}

    def run() -> float:
        torch.set_num_threads(args.cpu_threads if device == "cpu" else 1)
        env = make_multitask_vec_env(FAMILY, variants, n_envs_per_task=args.envs_per_task, seed=0)
        model = TransferPPO(
            MultiTaskActorCriticPolicy, env, seed=0, device=device, policy_kwargs=policy_kwargs, **kwargs
        )
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        model.learn(args.timesteps)
        if device == "cuda":
            torch.cuda.synchronize()
        rate = args.timesteps / (time.perf_counter() - started)
        assert next(model.policy.parameters()).device.type == device
        return rate

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"])
    parser.add_argument("--trunk", type=int, nargs="+", default=[1024, 1024])
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--envs-per-task", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the RL Zoo's (the whole rollout)")
    parser.add_argument("--timesteps", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if "cuda" in args.devices and not torch.cuda.is_available():
        raise SystemExit("cuda is not available here: run with --devices cpu, or on a machine with a CUDA GPU")
    gpu = f"; GPU: {torch.cuda.get_device_name()}" if "cuda" in args.devices else ""
    results = alternate({d: run_for(d, args) for d in args.devices}, args.repeats)
    print(f"machine: {machine()}{gpu}; torch {torch.__version__}; cpu arm: {args.cpu_threads} torch threads")
    print(
        f"trunk {args.trunk}, {args.tasks} tasks x {args.envs_per_task} envs, RL Zoo CartPole PPO, "
        f"{args.timesteps} steps per run, {args.repeats} alternating rounds"
    )
    print("| device | env steps/s (median) | rounds | ratio to cpu |")
    print("| --- | --- | --- | --- |")
    for device in args.devices:
        ratio = f"{paired_ratio(results, device, 'cpu'):.2f}x" if "cpu" in args.devices else "-"
        rounds = ", ".join(f"{r:,.0f}" for r in results[device])
        print(f"| {device} | {statistics.median(results[device]):,.0f} | {rounds} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
