"""Parallel efficiency of independent training runs, one process per core (issue 6; target >= 0.9).

A grid of runs is embarrassingly parallel: N single-threaded processes on N cores. Each
worker imports, builds its model (RL Zoo CartPole config, rltransfer defaults), waits at a
barrier, then trains; only the training is timed. Efficiency = aggregate env steps per
second of N concurrent runs / (N x steps per second of one run alone). Rounds alternate
"1 run" and "N runs"; efficiency is the median of per-round efficiencies.

    python benchmarks/grid_scaling.py [--processes 2] [--timesteps 16384] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from multiprocessing.synchronize import Barrier

from sidebyside import machine


def worker(seed: int, timesteps: int, barrier: Barrier, results: mp.Queue) -> None:
    """One independent run: set up, wait for the others, train; report (start, end) times."""
    import torch
    from rltransfer.envs import get_family
    from rltransfer.envs.multitask import make_task_vec_env

    from rltransfer.hyperparams import ppo_kwargs, resolve_hyperparams
    from rltransfer.ppo import TransferPPO
    from rltransfer.pretraining import source_policy_kwargs

    torch.set_num_threads(1)
    hp = resolve_hyperparams("cartpole")
    env = make_task_vec_env(get_family("cartpole"), "source", hp["n_envs"], seed=seed)
    model = TransferPPO("MlpPolicy", env, seed=seed, policy_kwargs=source_policy_kwargs(hp), **ppo_kwargs(hp))
    barrier.wait()
    started = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes on Linux
    model.learn(timesteps)
    results.put((started, time.perf_counter()))


def concurrent(n: int, timesteps: int) -> float:
    """Aggregate env steps per second of ``n`` runs started together."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n)
    results: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(i, timesteps, barrier, results)) for i in range(n)]
    for p in procs:
        p.start()
    times = [results.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"worker exited with {p.exitcode}")
    wall = max(end for _, end in times) - min(start for start, _ in times)
    return n * timesteps / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timesteps", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    single: list[float] = []
    multi: list[float] = []
    for r in range(args.repeats):
        order = [1, args.processes] if r % 2 == 0 else [args.processes, 1]
        for n in order:
            (single if n == 1 else multi).append(concurrent(n, args.timesteps))
    one, many = statistics.median(single), statistics.median(multi)
    n = args.processes
    efficiency = statistics.median(m / (n * o) for m, o in zip(multi, single, strict=True))
    print(f"machine: {machine()}; one torch thread per process; RL Zoo CartPole, {args.timesteps} steps per run")
    print(f"{args.repeats} alternating rounds, rates: medians; 1-min load average before: {load_before:.2f}")
    print("(other processes on the machine take cores from the N-process arm; rerun on an idle machine)")
    print("| processes | aggregate env steps/s | per run | parallel efficiency |")
    print("| --- | --- | --- | --- |")
    print(f"| 1 | {one:,.0f} | {one:,.0f} | 1.00 |")
    print(f"| {n} | {many:,.0f} | {many / n:,.0f} | {efficiency:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
