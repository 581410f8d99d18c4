"""Cost of a K-task policy per env step relative to a one-task policy (issue 6; target <= 1.15x).

Same total data in every arm: 8 sub-environments (K=1: 8 copies of one CartPole variant;
K=8: one of each of 8 variants), RL Zoo CartPole hyperparameters, ``MultiTaskActorCriticPolicy``
with rltransfer's default architecture (trunk [64, 64], per-task heads pi [64] / vf [64]).
Two measurements, each alternating the arms call by call (A B, B A, ...) so that they see the
same machine state; costs are medians of per-round ratios:

* end to end: env steps per second of one ``learn`` iteration (a rollout of 8 x 32 steps on
  the batched env, then its update), ``--iterations`` per arm, each model learning on;
* one update step: a minibatch of the lean ``train()`` (forward, loss, backward, clipping,
  Adam), from a filled rollout buffer, ``--repeats`` per arm.

The Zoo's minibatch is the whole 256-sample rollout, 32 samples per task: sorted by task it is
the (K, G) block as it is. ``--batch-size 64`` splits it into 4 random minibatches whose task
groups differ in size, so each goes through a zero-padded block (the general case).
``--envs 64`` is fine-tuning's own setting for 8 tasks (8 sub-envs per task): a 2,048-sample
rollout in 8 random 256-sample minibatches per epoch, zero-padded blocks of ~32 rows per task.

    python benchmarks/multitask_cost.py [--tasks 1 8] [--iterations 60] [--repeats 40] [--batch-size 256] [--envs 8]
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
from rltransfer.envs.multitask import make_multitask_vec_env
from rltransfer.policies import MultiTaskActorCriticPolicy
from sidebyside import alternate, fill_buffer, learn_iterations, machine, minibatches_per_update, paired_ratio

from rltransfer.hyperparams import ppo_kwargs, resolve_hyperparams
from rltransfer.ppo import TransferPPO

HP = resolve_hyperparams("cartpole")
FAMILY = get_family("cartpole")
VARIANTS = [v.name for v in (*FAMILY.variants, *FAMILY.held_out_variants())]


def model_for(k: int, seed: int = 0, batch_size: int | None = None, envs: int = 8) -> TransferPPO:
    if k > len(VARIANTS) or envs % k:
        raise SystemExit(f"K={k}: needs K <= {len(VARIANTS)} dividing --envs {envs}")
    env = make_multitask_vec_env(FAMILY, VARIANTS[:k], n_envs_per_task=envs // k, seed=seed)
    policy_kwargs = {"trunk_arch": list(HP["trunk_arch"]), "net_arch": dict(HP["head_arch"])}
    kwargs = {**ppo_kwargs(HP), **({"batch_size": batch_size} if batch_size else {})}
    return TransferPPO(MultiTaskActorCriticPolicy, env, seed=seed, policy_kwargs=policy_kwargs, **kwargs)


def end_to_end(k: int, batch_size: int, iterations: int, envs: int) -> Callable[[], float]:
    """Env steps per second of one ``learn`` iteration (rollout of ``envs`` x 32 steps and its update)."""
    model = model_for(k, batch_size=batch_size, envs=envs)
    run = learn_iterations(model, model.n_steps * envs * (iterations + 4))
    for _ in range(3):  # warm-up: the first updates allocate Adam's state
        run()
    return run


def update_step(k: int, batch_size: int, envs: int) -> Callable[[], float]:
    """Microseconds per minibatch of one lean ``train()`` (20 epochs) from a filled buffer."""
    model = fill_buffer(model_for(k, batch_size=batch_size, envs=envs))
    buffer = copy.deepcopy(model.rollout_buffer)

    def run() -> float:
        model.rollout_buffer = copy.deepcopy(buffer)
        started = time.perf_counter()
        model.train()
        return (time.perf_counter() - started) / minibatches_per_update(model) * 1e6

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--iterations", type=int, default=60, help="alternating learn iterations per arm")
    parser.add_argument("--repeats", type=int, default=40, help="alternating train() calls per arm")
    parser.add_argument("--batch-size", type=int, default=int(HP["batch_size"]))
    parser.add_argument(
        "--envs", type=int, default=8, help="sub-envs in every arm (fine-tuning's own: 8 per task, so 64 at K=8)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    arms = {k: end_to_end(k, args.batch_size, args.iterations, args.envs) for k in args.tasks}
    steps = alternate(arms, args.iterations)
    update = alternate({k: update_step(k, args.batch_size, args.envs) for k in args.tasks}, args.repeats)
    base = args.tasks[0]
    print(
        f"machine: {machine()}; torch threads 1; RL Zoo CartPole config (minibatch {args.batch_size}), "
        f"{args.envs} sub-envs"
    )
    print(
        f"{args.iterations} alternating learn iterations, {args.repeats} alternating train() calls; "
        f"rates: medians; costs: medians of per-round ratios to K={base}"
    )
    print("| K tasks | env steps/s | cost per env step | update step (us) | cost per update |")
    print("| --- | --- | --- | --- | --- |")
    for k in args.tasks:
        print(
            f"| {k} | {statistics.median(steps[k]):,.0f} | {paired_ratio(steps, base, k):.2f}x "
            f"| {statistics.median(update[k]):,.0f} | {paired_ratio(update, k, base):.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
