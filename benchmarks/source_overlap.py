"""Grid wall time with the source pretrained beside the scratch runs vs before the grid (issue 6).

A grid whose source is still to pretrain used to pretrain it first, in the runner's process,
while every other core idled. Now the source is one task of the grid's pool and the runs that
don't use it (scratch) train on the other workers meanwhile. Both arms run the same spec from
an empty directory with the same workers (alternating, A B, B A, ...), and give the same files:

* ``sources first``: ``ensure_sources``, ``preflight``, then ``run_grid`` (the earlier order);
* ``overlapped``: ``run_grid(source=None)`` (what ``rltransfer run`` does with 2+ workers).

    python benchmarks/source_overlap.py [experiments/cartpole.yaml] [--quick 0.25] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sidebyside import alternate, machine, paired_ratio
from suite import scaled

from rltransfer.experiment.pool import run_grid
from rltransfer.experiment.runner import default_workers, ensure_sources, preflight, prepare_out
from rltransfer.experiment.spec import ExperimentSpec, load_spec


def grid_seconds(spec: ExperimentSpec, workers: int, overlapped: bool) -> float:
    """Wall seconds of the source and every run of ``spec`` from an empty directory."""
    root = Path(tempfile.mkdtemp(prefix="overlap-"))
    out = root / spec.name
    try:
        started = time.perf_counter()
        prepare_out(spec, out, resume=False)
        if overlapped:
            result = run_grid(spec, out, None, workers)
        else:
            sources = ensure_sources(spec, out, progress=False)
            for source in sources.values():
                preflight(spec, source)
            result = run_grid(spec, out, sources, workers)
        seconds = time.perf_counter() - started
        if not result.complete:
            raise SystemExit(f"{len(result.failed)} runs failed")
        return seconds
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", nargs="?", default="experiments/cartpole.yaml")
    parser.add_argument("--quick", type=float, help="scale every budget by this factor (3 seeds)")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    spec = load_spec(args.spec)
    if args.quick:
        spec = scaled(spec, args.quick, 3)
    arms = {
        "sources first": lambda: grid_seconds(spec, args.workers, overlapped=False),
        "overlapped": lambda: grid_seconds(spec, args.workers, overlapped=True),
    }
    results = alternate(arms, args.repeats)
    print(f"machine: {machine()}, Python {sys.version.split()[0]}; {spec.name}, {args.workers} workers")
    print("| arm | grid wall s (median) | rounds |")
    print("| --- | --- | --- |")
    for name, seconds in results.items():
        print(f"| {name} | {statistics.median(seconds):.1f} | {', '.join(f'{s:.1f}' for s in seconds)} |")
    speedup = paired_ratio(results, "sources first", "overlapped")
    print(f"overlapped grid: {speedup:.2f}x faster (median of per-round ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
