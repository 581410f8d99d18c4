"""Quality bar for source pretraining (issue: foundation).

CartPole must reach an evaluation return >= 475 within 100k steps on seed 0; Acrobot >= -100,
Pendulum >= -250, MountainCar >= -110 (the RL Zoo's score) and MountainCarContinuous >= 90
within the budgets in rltransfer/ppo.yml. Prints, per family,
the first evaluation step at or above the bar, the best and the final evaluation; exits 1 if a
bar is missed.

    python benchmarks/pretrain_quality.py [--families cartpole mountaincar ...] [--seed 0]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from rltransfer.hyperparams import resolve_hyperparams
from rltransfer.pretraining import pretrain

BARS = {
    "cartpole": (475.0, 100_000),
    "acrobot": (-100.0, None),
    "pendulum": (-250.0, None),
    "mountaincar": (-110.0, None),
    "mountaincarcontinuous": (90.0, None),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--families", nargs="+", default=list(BARS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, torch threads 1, python {platform.python_version()}")
    print("| family | budget | bar | first step >= bar | best eval | final eval | wall s | met |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    ok = True
    for family in args.families:
        bar, budget = BARS[family]
        budget = budget or resolve_hyperparams(family)["n_timesteps"]
        started = time.time()
        result = pretrain(family, seed=args.seed, timesteps=budget)
        returns = [r[0] for r in result.curve.returns]
        first = next((s for s, r in zip(result.curve.steps, returns, strict=True) if r >= bar), None)
        met = first is not None and first <= budget
        ok &= met
        print(
            f"| {family} | {budget:,} | {bar:g} | {first if first is not None else 'never'} | {max(returns):.1f} "
            f"| {returns[-1]:.1f} | {time.time() - started:.0f} | {'yes' if met else 'NO'} |",
            flush=True,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
