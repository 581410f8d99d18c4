"""Several experiments in one worker pool vs one after another (``rltransfer run A.yaml B.yaml``).

Two experiments of three equal jobs each (a source, a scratch run and a freeze run, all
``--timesteps`` steps of CartPole and Pendulum) on ``--workers`` workers (default: the cores):

* ``one after another``: ``run_experiment`` per spec, as two ``rltransfer run`` commands would;
* ``one pool``: ``run_experiments`` of both, every grid's sources first, then any grid's runs.

On 2 workers a grid of three jobs takes two rounds, one of them with a worker idle; the pool runs
the six jobs in three. Wall times (reports included) alternate over ``--repeats`` rounds; the
ratio is the median of per-round ratios. ``--backend ray`` runs both arms as Ray tasks on one
local Ray instance of ``--workers`` CPUs, started once for all rounds (needs the ``ray`` extra).

    python benchmarks/many_grids.py [--timesteps 8192] [--repeats 3] [--workers 2] [--backend ray]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import yaml
from sidebyside import alternate, machine, paired_ratio

from rltransfer.experiment.run import run_experiment, run_experiments
from rltransfer.experiment.runner import default_workers


def specs(root: Path, steps: int) -> list[Path]:
    paths = []
    for family, target in (("cartpole", "long"), ("pendulum", "g12")):
        hp = {"n_steps": 256, "batch_size": 64, "n_epochs": 4, "n_envs": 2}
        spec = {
            "name": family,
            "family": family,
            "source": {"timesteps": steps, "hyperparams": hp},
            "targets": [target],
            "arms": ["scratch", "freeze"],
            "seeds": 1,
            "timesteps": steps,
            "eval": {"freq": steps // 4, "episodes": 2},
            "hyperparams": hp,
        }
        paths.append(root / f"{family}.yaml")
        paths[-1].write_text(yaml.safe_dump(spec))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="many-grids-"))
    paths = specs(root, args.timesteps)
    rounds = [0]
    how: dict[str, Any] = {"workers": args.workers, "progress": False, "backend": args.backend}
    session: AbstractContextManager[None] = nullcontext()
    if args.backend == "ray":
        from rltransfer.experiment.ray_backend import ray_session

        session = ray_session(None, args.workers)  # one instance for every round: its start is not timed

    def sequential() -> float:
        rounds[0] += 1
        started = time.perf_counter()
        for path in paths:
            run_experiment(path, out=root / f"seq{rounds[0]}" / path.stem, **how)
        return time.perf_counter() - started

    def pooled() -> float:
        rounds[0] += 1
        started = time.perf_counter()
        outs = [root / f"pool{rounds[0]}" / path.stem for path in paths]
        runs = run_experiments(paths, outs, **how)
        assert all(run.error is None and run.result.complete for run in runs)
        return time.perf_counter() - started

    with session:
        results = alternate({"one after another": sequential, "one pool": pooled}, args.repeats)
    jobs = f"2 experiments x 3 jobs of {args.timesteps} steps"
    print(f"machine: {machine()}; backend {args.backend}, {args.workers} workers; {jobs}")
    print("| arm | wall time, median [s] | speed-up |")
    print("| --- | --- | --- |")
    for name, times in results.items():
        ratio = paired_ratio(results, "one after another", name)
        print(f"| {name} | {statistics.median(times):.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
