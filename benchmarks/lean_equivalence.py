"""Does the lean update learn as SB3's own code does? Learning curves over seeds (issue 6).

The multi-task policy's hand-written update agrees with autograd's to float rounding, not bit
for bit, so its runs drift apart from SB3's after some updates, as runs of two seeds do; what
must hold is the same learning in distribution. Per seed, the same multi-task scratch run
(CartPole, targets long / longer / gravity30, the RL Zoo hyperparameters, evaluation every
3,000 steps) once with ``TransferPPO``'s lean code and once with SB3's own
(``TransferPPO.lean = False``). Per task and over all tasks: each arm's mean AUC and final
return, and the 95% bootstrap interval of the difference (lean - SB3), which should contain 0;
also the wall time of each arm. ``--family pendulum`` checks the diagonal-Gaussian update
instead (targets g15 / m1.5 / l1.3, the family's hyperparameters without gSDE),
``--family pendulum-sde`` the gSDE one (the family's hyperparameters as they are).
``--family cartpole-source`` checks the single-task update (source pretraining on CartPole's
source variant with the RL Zoo hyperparameters: the network whose update is bit-identical to
SB3's with ``numpy_tanh`` off, and equal to rounding with numpy's tanh, the default).

    python benchmarks/lean_equivalence.py [--family cartpole] [--seeds 8] [--timesteps 30000] [--workers 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from typing import Any

import numpy as np
from sidebyside import machine

from rltransfer.compare import area_under_curve, final_return, mean_difference, stratified_independent_bootstrap_ci

# Per setup: the family, the targets and what changes in its hyperparameters (evaluation every 3,000 steps).
# Targets ``["source"]``: single-task source pretraining instead of multi-task fine-tuning.
SETUPS: dict[str, tuple[str, list[str], dict[str, Any]]] = {
    "cartpole": ("cartpole", ["long", "longer", "gravity30"], {}),
    "cartpole-source": ("cartpole", ["source"], {}),
    "pendulum": ("pendulum", ["g15", "m1.5", "l1.3"], {"use_sde": False}),
    "pendulum-sde": ("pendulum", ["g15", "m1.5", "l1.3"], {}),  # the Zoo's gSDE
}


def run(job: tuple[bool, int, int, str]) -> tuple[bool, int, np.ndarray, np.ndarray, float]:
    """One scratch run: (lean, seed, steps, returns (tasks, evals), seconds)."""
    lean, seed, timesteps, setup = job
    import torch

    from rltransfer.finetuning import finetune
    from rltransfer.ppo import TransferPPO
    from rltransfer.pretraining import pretrain

    torch.set_num_threads(1)
    TransferPPO.lean = lean
    started = time.perf_counter()
    family, targets, extra = SETUPS[setup]
    hp = {"eval_freq": 3000, "eval_episodes": 10, **extra}
    if targets == ["source"]:
        curve = pretrain(family, seed=seed, timesteps=timesteps, hyperparams=hp).curve
    else:
        curve = finetune(family, targets, None, "scratch", seed=seed, timesteps=timesteps, hyperparams=hp).curve
    seconds = time.perf_counter() - started
    arrays = curve.as_arrays()
    return lean, seed, arrays["steps"], arrays["returns"], seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=sorted(SETUPS), default="cartpole")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--timesteps", type=int, default=30000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    jobs = [(lean, seed, args.timesteps, args.family) for seed in range(args.seeds) for lean in (True, False)]
    targets = SETUPS[args.family][1]
    with mp.get_context("spawn").Pool(args.workers) as pool:
        results = pool.map(run, jobs)
    steps = results[0][2]
    curves: dict[bool, Any] = {lean: [] for lean in (True, False)}
    seconds: dict[bool, list[float]] = {lean: [] for lean in (True, False)}
    for lean, _, run_steps, returns, secs in sorted(results, key=lambda r: (r[0], r[1])):
        assert np.array_equal(run_steps, steps)
        curves[lean].append(returns)
        seconds[lean].append(secs)
    scores = {
        "AUC": {lean: area_under_curve(np.stack(c), steps) for lean, c in curves.items()},
        "final return (last 3 evaluations)": {lean: final_return(np.stack(c), last_k=3) for lean, c in curves.items()},
    }
    print(f"machine: {machine()}; {args.seeds} seeds per arm, {args.timesteps} target steps, scratch, {args.family}")
    print(
        f"wall s per run (median, {args.workers} runs in parallel): lean {statistics.median(seconds[True]):.1f}, ",
        end="",
    )
    print(f"SB3's code {statistics.median(seconds[False]):.1f}")
    print("| metric | task | lean mean | SB3 mean | lean - SB3 [95% CI] | interval contains 0 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for metric, by_arm in scores.items():
        lean, sb3 = by_arm[True], by_arm[False]
        for t, task in [*enumerate(targets), (None, "all tasks")]:
            x, y = (lean, sb3) if t is None else (lean[:, [t]], sb3[:, [t]])
            low, high = stratified_independent_bootstrap_ci(x, y, mean_difference)
            print(
                f"| {metric} | {task} | {x.mean():.1f} | {y.mean():.1f} | {mean_difference(x, y):+.1f} "
                f"[{low:+.1f}, {high:+.1f}] | {'yes' if low <= 0 <= high else 'NO'} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
