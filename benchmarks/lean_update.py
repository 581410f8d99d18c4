"""Where a PPO update spends its time, and what the lean update saves (issue 6).

RL Zoo CartPole config (8 envs x 32 steps = one 256-sample minibatch, 20 epochs) with
rltransfer's source policy. From one filled rollout buffer, alternating arms; times are
medians, speed-ups medians of per-round ratios:

* update: one ``train()`` (20 minibatches) with SB3's ``PPO.train``, the lean update with
  SB3's Adam and torch's tanh (bit-identical to SB3: minibatches run without autograd, see
  ``rltransfer.mlp_backprop``), with fused Adam, and with fused Adam and numpy's tanh (the
  default); the same
  for rltransfer's multi-task policy on ``--tasks`` CartPole targets (default 2, 8 envs in all);
* update, Gaussian: the same for a diagonal-Gaussian policy (Pendulum's hyperparameters
  without gSDE, 256 steps per env: minibatches of 64, 10 epochs), rltransfer's source policy
  and the multi-task policy on 3 Pendulum targets (2 envs each); and the source policy with
  the Zoo's gSDE;
* rollout: one ``collect_rollouts`` (32 vector steps) with SB3's code, the lean one with
  torch's network and the default (the network in numpy, ``rltransfer.numpy_rollout``), all
  on the batched env; the same for the Gaussian policies above (256 vector steps), the gSDE
  source policy (4 envs) and the gSDE multi-task policy on 3 Pendulum targets;
* profile: SB3's ``PPO.train`` under cProfile, grouped by what the time is spent on.

    python benchmarks/lean_update.py [--repeats 15] [--no-profile]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from rltransfer.envs import get_family
from rltransfer.envs.multitask import make_multitask_vec_env, make_task_vec_env
from rltransfer.policies import MultiTaskActorCriticPolicy
from sidebyside import alternate, fill_buffer, machine, minibatches_per_update
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import CallbackList

from rltransfer.hyperparams import ppo_kwargs, resolve_hyperparams
from rltransfer.ppo import TransferPPO
from rltransfer.pretraining import source_policy_kwargs

HP = resolve_hyperparams("cartpole")
# Cumulative cProfile time of these functions ("file suffix", "function") inside SB3's PPO.train.
PARTS = {
    "policy forward (evaluate_actions)": [("common/policies.py", "evaluate_actions")],
    "  of which torch.distributions objects": [
        ("common/distributions.py", "proba_distribution"),
        ("common/distributions.py", "log_prob"),
        ("common/distributions.py", "entropy"),
    ],
    "backward (autograd)": [("torch/_tensor.py", "backward")],
    "optimizer step (Adam)": [("torch/optim/optimizer.py", "wrapper")],
    "grad-norm clipping": [("nn/utils/clip_grad.py", "clip_grad_norm_")],
    "rollout buffer -> minibatch tensors": [("common/buffers.py", "get")],
}


def filled_model(fused_adam: bool, tasks: int = 0, numpy_tanh: bool = True) -> TransferPPO:
    """A model after two updates, with a freshly collected rollout in its buffer.

    ``tasks`` > 0: rltransfer's multi-task policy on that many CartPole targets (8 envs in all).
    """
    fam = get_family("cartpole")
    if tasks:
        env = make_multitask_vec_env(fam, [v.name for v in fam.targets[:tasks]], n_envs_per_task=8 // tasks, seed=0)
        policy: Any = MultiTaskActorCriticPolicy
        policy_kwargs = {"trunk_arch": list(HP["trunk_arch"]), "net_arch": dict(HP["head_arch"])}
    else:
        env = make_task_vec_env(fam, "source", HP["n_envs"], seed=0)
        policy, policy_kwargs = "MlpPolicy", source_policy_kwargs(HP)
    kwargs = {**ppo_kwargs(HP), "n_steps": 256 // env.num_envs}  # one 256-sample minibatch per epoch
    model = TransferPPO(policy, env, seed=0, policy_kwargs=policy_kwargs, fused_adam=fused_adam, **kwargs)
    model.numpy_tanh = numpy_tanh
    return fill_buffer(model)


def gaussian_model(tasks: int = 0, sde: bool = False) -> TransferPPO:
    """A Gaussian policy on Pendulum (gSDE as the Zoo's, or none) after two updates, its buffer filled."""
    hp = {**resolve_hyperparams("pendulum"), "use_sde": sde}
    fam = get_family("pendulum")
    if tasks:
        env = make_multitask_vec_env(fam, [v.name for v in fam.targets[:tasks]], n_envs_per_task=2, seed=0)
        policy: Any = MultiTaskActorCriticPolicy
        policy_kwargs = {"trunk_arch": list(hp["trunk_arch"]), "net_arch": dict(hp["head_arch"])}
    else:
        env = make_task_vec_env(fam, "source", hp["n_envs"], seed=0)
        policy, policy_kwargs = "MlpPolicy", source_policy_kwargs(hp)
    kwargs = {**ppo_kwargs(hp), "n_steps": 256}
    return fill_buffer(TransferPPO(policy, env, seed=0, policy_kwargs=policy_kwargs, **kwargs))


def update_arm(model: TransferPPO, lean: bool) -> Callable[[], float]:
    """Milliseconds per ``train()`` from the same buffer (weights drift; cost does not)."""
    buffer = copy.deepcopy(model.rollout_buffer)

    def run() -> float:
        model.rollout_buffer = copy.deepcopy(buffer)
        model.lean = lean
        started = time.perf_counter()
        model.train()
        return (time.perf_counter() - started) * 1e3

    return run


def sb3_vs_lean(model: TransferPPO, label: str, repeats: int) -> dict[str, list[float]]:
    """SB3's ``PPO.train`` and the lean one (the default) on the same model, alternating."""
    arms = {
        f"SB3 PPO.train, {label}": update_arm(model, lean=False),
        f"lean (default), {label}": update_arm(model, lean=True),
    }
    return alternate(arms, repeats)


def rollout_arm(model: TransferPPO, lean: bool, numpy_rollouts: bool = True) -> Callable[[], float]:
    """Milliseconds per ``collect_rollouts`` of ``n_steps`` vector steps."""
    _, callback = model._setup_learn(10**9, CallbackList([]), reset_num_timesteps=False)
    callback.on_training_start(locals(), globals())

    def run() -> float:
        model.lean, model.numpy_rollouts = lean, numpy_rollouts
        assert model.env is not None
        started = time.perf_counter()
        model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
        return (time.perf_counter() - started) * 1e3

    return run


def profile_sb3_train(model: TransferPPO, rounds: int = 10) -> None:
    """Shares of SB3's ``PPO.train`` time by part (cProfile inflates Python-heavy parts)."""
    buffer = copy.deepcopy(model.rollout_buffer)
    profiler = cProfile.Profile()
    for _ in range(rounds):
        model.rollout_buffer = copy.deepcopy(buffer)
        profiler.runcall(PPO.train, model)
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]

    def cumulative(file_suffix: str, function: str) -> float:
        return sum(v[3] for (f, _, fn), v in stats.items() if f.endswith(f"{file_suffix}") and fn == function)

    total = cumulative("ppo/ppo.py", "train")
    shares = {part: sum(cumulative(f, fn) for f, fn in keys) for part, keys in PARTS.items()}
    top_level = [p for p in shares if not p.startswith(" ")]
    shares["rest: loss arithmetic, statistics, logging"] = total - sum(shares[p] for p in top_level)
    print(f"\nSB3 PPO.train under cProfile ({rounds} updates x 20 minibatches): share of its time")
    print("| part | share |")
    print("| --- | --- |")
    for part, seconds in shares.items():
        print(f"| {part} | {100 * seconds / total:.0f}% |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--tasks", type=int, default=2, help="tasks of the multi-task arms (dividing 8; 0: none)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    np.random.seed(0)
    exact = filled_model(fused_adam=False, numpy_tanh=False)
    fused, default = filled_model(fused_adam=True, numpy_tanh=False), filled_model(fused_adam=True)
    arms = {
        "SB3 PPO.train": update_arm(exact, lean=False),
        "lean, SB3's Adam, torch's tanh (bit-identical)": update_arm(exact, lean=True),
        "lean, fused Adam, torch's tanh": update_arm(fused, lean=True),
        "lean (default: fused Adam, numpy's tanh)": update_arm(default, lean=True),
    }
    update = alternate(arms, args.repeats)
    if args.tasks:
        multitask = filled_model(fused_adam=True, tasks=args.tasks)
        multitask_update = sb3_vs_lean(multitask, f"{args.tasks}-task policy", args.repeats)
    gaussian, gaussian_multitask, sde = gaussian_model(), gaussian_model(tasks=3), gaussian_model(sde=True)
    gaussian_update = sb3_vs_lean(gaussian, "Gaussian", args.repeats)
    sde_update = sb3_vs_lean(sde, "gSDE", args.repeats)
    gaussian_multitask_update = sb3_vs_lean(gaussian_multitask, "Gaussian 3-task policy", args.repeats)
    rollout = alternate(
        {
            "SB3 collect_rollouts": rollout_arm(exact, lean=False),
            "lean collect_rollouts, torch's network (numpy's tanh)": rollout_arm(default, True, numpy_rollouts=False),
            "lean collect_rollouts (default: numpy's network)": rollout_arm(default, lean=True),
        },
        args.repeats,
    )
    gaussian_rollouts = {
        label: alternate(
            {
                f"SB3 collect_rollouts, {label}": rollout_arm(m, lean=False),
                f"lean, torch's network, {label}": rollout_arm(m, True, numpy_rollouts=False),
                f"lean (default), {label}": rollout_arm(m, lean=True),
            },
            args.repeats,
        )
        for label, m in (("Gaussian", gaussian), ("Gaussian 3-task policy", gaussian_multitask))
    }
    sde_multitask = gaussian_model(tasks=3, sde=True)
    sde_rollouts = {
        label: alternate(
            {
                f"SB3 collect_rollouts, {label}": rollout_arm(m, lean=False),
                f"lean (default), {label}": rollout_arm(m, lean=True),
            },
            args.repeats,
        )
        for label, m in (("gSDE", sde), ("gSDE 3-task policy", sde_multitask))
    }
    print(f"machine: {machine()}; torch threads 1; RL Zoo CartPole config; {args.repeats} alternating rounds")
    print("times: medians; speed-ups: medians of per-round ratios")
    print("| phase | arm | ms | per minibatch / vector step | speed-up |")
    print("| --- | --- | --- | --- | --- |")
    phases = [
        ("update", update, 20),
        ("update", gaussian_update, minibatches_per_update(gaussian)),
        ("update", gaussian_multitask_update, minibatches_per_update(gaussian_multitask)),
        ("update", sde_update, minibatches_per_update(sde)),
        ("rollout", rollout, HP["n_steps"]),
        ("rollout", gaussian_rollouts["Gaussian"], gaussian.n_steps),
        ("rollout", gaussian_rollouts["Gaussian 3-task policy"], gaussian_multitask.n_steps),
        ("rollout", sde_rollouts["gSDE"], sde.n_steps),
        ("rollout", sde_rollouts["gSDE 3-task policy"], sde_multitask.n_steps),
    ]
    if args.tasks:
        phases.insert(1, ("update", multitask_update, 20))
    for phase, results, per in phases:
        base = next(iter(results.values()))
        for name, times in results.items():
            ms = statistics.median(times)
            speedup = statistics.median(b / t for b, t in zip(base, times, strict=True))
            print(f"| {phase} | {name} | {ms:.1f} | {1e3 * ms / per:.0f} us | {speedup:.2f}x |")
    if not args.no_profile:
        profile_sb3_train(exact)
    return 0


if __name__ == "__main__":
    sys.exit(main())
