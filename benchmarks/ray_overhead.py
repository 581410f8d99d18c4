"""Ray backend overhead (issue 7): a grid of 2x the cores through Ray vs the local process pool.

The same CartPole grid (2 arms x cores seeds, one pretrained source shared by both) runs through
``run_grid`` (a fresh spawn pool, ``workers = cores``) and ``run_grid_ray`` (a fresh local Ray
instance with ``num_cpus = cores``), alternating which goes first, ``--repeats`` times. Both
backends start fresh worker processes, so both pay for importing torch in each worker. Prints the
medians and two ratios: the grid alone (Ray already started, as on a running cluster) and end to end
(``ray.init`` and ``ray.shutdown`` included). Checks that both backends produce the same curves.

Ray sets ``OMP_NUM_THREADS=1`` in the worker of a one-CPU task, which alone makes a run about 10 %
faster here (even with ``torch.set_num_threads(1)``). The local pool's workers get the same setting,
so the comparison measures Ray's own overhead; ``--as-shipped`` leaves the local pool's environment
as it is.

    python benchmarks/ray_overhead.py [--repeats 3] [--timesteps 20000] [--as-shipped]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rltransfer.experiment.pool import run_grid
from rltransfer.experiment.ray_backend import require_ray, run_grid_ray
from rltransfer.experiment.runner import default_workers, ensure_sources
from rltransfer.experiment.spec import parse_spec


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def curves(out: Path) -> dict[str, list[float]]:
    found = {}
    for path in sorted(out.glob("*/seed*/curves.npz")):
        with np.load(path) as data:
            found[str(path.relative_to(out))] = data["returns"].tolist()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timesteps", type=int, default=20_000, help="target steps per run")
    parser.add_argument("--as-shipped", action="store_true", help="local pool without OMP_NUM_THREADS=1")
    args = parser.parse_args()
    if not args.as_shipped:
        os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned pool workers, as Ray's workers get it
    ray = require_ray()
    torch.set_num_threads(1)
    cores = default_workers()
    spec = parse_spec(
        {
            "name": "ray-overhead",
            "family": "cartpole",
            "source": {"timesteps": 10_000},
            "targets": ["long"],
            "arms": ["scratch", "finetune"],
            "seeds": cores,
            "timesteps": args.timesteps,
            "eval": {"freq": args.timesteps // 4, "episodes": 5},
        }
    )
    root = Path(tempfile.mkdtemp(prefix="ray-overhead-"))
    source = ensure_sources(spec, root / "source-exp", progress=False)
    runs = 2 * cores
    print(f"machine: {cpu_name()}, {cores} cores; grid: {runs} runs of {args.timesteps:,} CartPole steps")
    print(f"local pool workers: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    local_s: list[float] = []
    grid_s: list[float] = []
    total_s: list[float] = []
    reference = None
    try:
        for r in range(args.repeats):
            for backend in ("local", "ray") if r % 2 == 0 else ("ray", "local"):
                out = root / f"{backend}{r}"
                started = time.perf_counter()
                if backend == "local":
                    result = run_grid(spec, out, source, cores)
                    local_s.append(time.perf_counter() - started)
                else:
                    ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False,
                             logging_level=logging.ERROR, _temp_dir=str(root / "ray"))  # fmt: skip
                    grid_started = time.perf_counter()
                    result = run_grid_ray(spec, out, source)
                    grid_s.append(time.perf_counter() - grid_started)
                    ray.shutdown()
                    total_s.append(time.perf_counter() - started)
                assert result.complete and len(result.finished) == runs, result.failed
                reference = reference or curves(out)
                assert curves(out) == reference, f"{backend} results differ"
                print(f"  repeat {r}: {backend:5s} {time.perf_counter() - started:6.1f} s", flush=True)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    local, grid, total = (statistics.median(x) for x in (local_s, grid_s, total_s))
    # Side by side: each repeat's Ray time over the local time measured next to it (robust to load drift).
    paired_grid = statistics.median(g / loc for g, loc in zip(grid_s, local_s, strict=True))
    paired_total = statistics.median(t / loc for t, loc in zip(total_s, local_s, strict=True))
    print("| backend | median wall s | vs local (ratio of medians) | vs local (median of paired ratios) |")
    print("| --- | --- | --- | --- |")
    print(f"| local process pool ({cores} workers) | {local:.1f} | 1.00 | 1.00 |")
    print(f"| Ray, grid on a started instance | {grid:.1f} | {grid / local:.2f} | {paired_grid:.2f} |")
    print(f"| Ray, with ray.init + shutdown | {total:.1f} | {total / local:.2f} | {paired_total:.2f} |")
    print(f"overhead (paired): grid {100 * (paired_grid - 1):+.1f} %, end to end {100 * (paired_total - 1):+.1f} %")
    print("goal: <= 15 % overhead")
    return 0


if __name__ == "__main__":
    sys.exit(main())
