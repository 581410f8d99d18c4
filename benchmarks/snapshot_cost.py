"""What mid-run snapshots cost: seconds and bytes per snapshot, and training with one after every update.

For each configuration, one ``finetune`` (or ``pretrain``) run with ``snapshot_every=0`` (a
snapshot at every PPO iteration, the worst case) times each ``Snapshots.save`` and reads the
file's size; runs with ``snapshot_every=None`` (never) and ``0`` then alternate, and the ratio
of their wall times (median of per-round ratios) is the worst-case slowdown. At the default
``snapshot_every: 300`` the slowdown is the per-snapshot time divided by 300 s.

    python benchmarks/snapshot_cost.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from sidebyside import alternate, machine, paired_ratio

from rltransfer.finetuning import finetune
from rltransfer.io import SNAPSHOT_FILE
from rltransfer.pretraining import pretrain
from rltransfer.snapshot import Snapshots

CONFIGS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    # The demo's multi-task fine-tuning (RL Zoo CartPole config, 3 targets x 8 envs).
    "cartpole finetune, 3 targets": (
        finetune,
        {"family": "cartpole", "targets": ["long", "longer", "gravity30"], "checkpoint": None, "strategy": "scratch"},
    ),
    # A 1024x1024 trunk: the weights and Adam moments dominate (about 13 MB of float32 each way).
    "cartpole finetune, 1024x1024 trunk": (
        finetune,
        {
            "family": "cartpole",
            "targets": ["long", "longer", "gravity30"],
            "checkpoint": None,
            "strategy": "scratch",
            "hyperparams": {"trunk_arch": [1024, 1024]},
        },
    ),
    # A MuJoCo source (RL Zoo HalfCheetah config): each MjData copied whole.
    "halfcheetah pretrain": (pretrain, {"family": "halfcheetah"}),
}


def one_run(fn: Callable[..., Any], kwargs: dict[str, Any], every: float | None, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        fn(**kwargs, seed=0, timesteps=steps, out=Path(tmp) / "run", snapshot_every=every)
        return time.perf_counter() - started


def measure_saves(fn: Callable[..., Any], kwargs: dict[str, Any], steps: int) -> tuple[list[float], int]:
    """Seconds of every ``Snapshots.save`` in one run, and the snapshot file's size."""
    times: list[float] = []
    size = 0
    original = Snapshots.save

    def timed(self: Snapshots) -> None:
        nonlocal size
        started = time.perf_counter()
        original(self)
        times.append(time.perf_counter() - started)
        size = (self.directory / SNAPSHOT_FILE).stat().st_size

    Snapshots.save = timed  # type: ignore[method-assign]
    try:
        one_run(fn, kwargs, 0, steps)
    finally:
        Snapshots.save = original  # type: ignore[method-assign]
    return times, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timesteps", type=int, default=12288)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()}; torch threads 1; {args.timesteps} steps per run; {args.repeats} rounds")
    print("| configuration | snapshots | ms per snapshot (median) | snapshot size | every update vs never |")
    print("| --- | --- | --- | --- | --- |")
    for name, (fn, kwargs) in CONFIGS.items():
        try:
            times, size = measure_saves(fn, kwargs, args.timesteps)
        except ImportError as e:  # the mujoco extra
            print(f"| {name} | skipped: {e} | | | |")
            continue
        if not times:  # a snapshot is taken between updates: none in a run of one or two rollouts
            print(f"| {name} | none in {args.timesteps} steps: raise --timesteps | | | |")
            continue
        rounds = alternate(
            {
                "never": lambda fn=fn, kwargs=kwargs: one_run(fn, kwargs, None, args.timesteps),
                "every": lambda fn=fn, kwargs=kwargs: one_run(fn, kwargs, 0, args.timesteps),
            },
            args.repeats,
        )
        ratio = paired_ratio(rounds, "every", "never")
        print(
            f"| {name} | {len(times)} | {1000 * statistics.median(times):.1f} | {size / 1e6:.2f} MB | "
            f"{ratio:.3f}x wall time |"
        )


if __name__ == "__main__":
    main()
