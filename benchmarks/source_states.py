"""Collecting a source's states after pretraining, and resolving a run's hyperparameters: now against
an earlier commit's modules, side by side in one process.

``collect_observations`` gathers the 2,048 states a trained source visits (what domain-adaptive
fine-tuning and the advice compare targets with) through the source's evaluation env, which has
``eval_episodes`` sub-envs (10 by default, 1-2 in the test suite's tiny runs). The earlier module
drew each step's actions with SB3's ``predict`` and summed every earlier row's length per step;
now the rollout's sampler draws them (the same draws) with a running count.
``resolve_hyperparams`` parsed ``rltransfer/ppo.yml`` at every call (every run resolves its own);
it is now parsed once per process. Printed: medians per arm, per-round ratios, and whether both
arms collected the same states and resolved the same hyperparameters.

    python benchmarks/source_states.py [--against 1a91954] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rltransfer.envs import get_family, make_eval_env
from rltransfer.envs.multitask import make_task_vec_env
from sidebyside import alternate, machine, module_at, paired_ratio

from rltransfer import domain, hyperparams
from rltransfer.hyperparams import ppo_kwargs
from rltransfer.ppo import TransferPPO
from rltransfer.pretraining import source_policy_kwargs


def source_model(steps: int) -> TransferPPO:
    hp = hyperparams.resolve_hyperparams("cartpole")
    env = make_task_vec_env(get_family("cartpole"), "source", hp["n_envs"], seed=0)
    model = TransferPPO("MlpPolicy", env, seed=0, policy_kwargs=source_policy_kwargs(hp), **ppo_kwargs(hp))
    model.learn(steps)
    return model


def compare(arms: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, list[float]], bool]:
    """Each arm's wall times over alternating rounds, and whether every call of both gave equal results."""
    outputs: dict[str, list[Any]] = {name: [] for name in arms}

    def run(name: str) -> float:
        torch.manual_seed(1)  # the states are drawn from torch's generator
        started = time.perf_counter()
        outputs[name].append(arms[name]())
        return time.perf_counter() - started

    results = alternate({name: (lambda n=name: run(n)) for name in arms}, repeats)
    first, second = outputs.values()
    equal = all(_equal(a, b) for a, b in zip(first, second, strict=True))
    return results, equal


def _equal(a: Any, b: Any) -> bool:
    return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) else a == b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="1a91954", help="the git revision to compare with")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--source-steps", type=int, default=20000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = source_model(args.source_steps)
    same = True
    print(f"machine: {machine()}; {args.repeats} rounds; earlier = {args.against}")
    with tempfile.TemporaryDirectory() as tmp:
        old_domain = module_at(args.against, "rltransfer/domain.py", Path(tmp))
        old_hyperparams = module_at(args.against, "rltransfer/hyperparams.py", Path(tmp))
        for n_envs in (1, 10):
            env = make_eval_env(get_family("cartpole"), "source", n_envs)
            results, equal = compare(
                {
                    "earlier": partial(old_domain.collect_observations, model, env, 2048, 3),
                    "now": partial(domain.collect_observations, model, env, 2048, 3),
                },
                args.repeats,
            )
            same &= equal
            medians = {name: statistics.median(times) for name, times in results.items()}
            print(
                f"collect 2,048 states, {n_envs:>2} eval env(s): "
                f"earlier {medians['earlier']:.3f} s, now {medians['now']:.3f} s, "
                f"now/earlier {paired_ratio(results, 'now', 'earlier'):.2f}x; same states: {equal}"
            )
        calls = 100
        results, equal = compare(
            {
                "earlier": lambda: [old_hyperparams.resolve_hyperparams("cartpole") for _ in range(calls)],
                "now": lambda: [hyperparams.resolve_hyperparams("cartpole") for _ in range(calls)],
            },
            args.repeats,
        )
        same &= equal
        per = {name: statistics.median(times) / calls * 1e3 for name, times in results.items()}
        print(
            f"resolve_hyperparams: earlier {per['earlier']:.2f} ms, now {per['now']:.3f} ms per call, "
            f"now/earlier {paired_ratio(results, 'now', 'earlier'):.3f}x; same hyperparameters: {equal}"
        )
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
