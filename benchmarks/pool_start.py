"""Pool workers forked from a forkserver vs spawned (``RLTRANSFER_START_METHOD``), side by side.

Two measurements, each arm in a fresh process as a user starts it, alternating over ``--repeats``
rounds (medians; ratios are medians of per-round ratios):

* opening pools: three pools of ``--workers`` workers one after another in one process (what a
  runner does when a worker dies, and a test suite does all day), each until every worker has
  imported rltransfer's runner and answered; the first pool's time, then the later pools';
* with ``--spec``: whole ``rltransfer run SPEC`` commands, which open one pool; every command must
  give byte-identical ``scores.csv``.

    python benchmarks/pool_start.py [--repeats 4] [--workers 2] [--spec experiments/cartpole.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sidebyside import alternate, machine, paired_ratio

METHODS = ("spawn", "forkserver")
POOLS = 3

# Run in a fresh interpreter: the runner's own pool context and worker set-up, POOLS times.
OPEN_POOLS = """
import json, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from rltransfer import io
from rltransfer.experiment import pool
times = []
for _ in range({pools}):
    started = time.perf_counter()
    init = (dict(os.environ), io.UMASK)
    with ProcessPoolExecutor({workers}, mp_context=pool._context(), initializer=pool._worker_init, initargs=init) as p:
        list(p.map(abs, range({workers})))  # the initializer, unpickled, imports the runner first
    times.append(time.perf_counter() - started)
print(json.dumps(times))
"""


def _env(method: str) -> dict[str, str]:
    return {**os.environ, "RLTRANSFER_START_METHOD": method}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--spec", help="also time whole `rltransfer run SPEC` commands (experiments/cartpole.yaml)")
    args = parser.parse_args()
    print(f"machine: {machine()}; {args.workers} workers, {args.repeats} rounds")

    pools: dict[str, dict[str, list[float]]] = {m: {"first": [], "later": []} for m in METHODS}

    def open_arm(method: str) -> float:
        script = OPEN_POOLS.format(pools=POOLS, workers=args.workers)
        done = subprocess.run([sys.executable, "-c", script], env=_env(method), check=True, capture_output=True)
        times = json.loads(done.stdout)
        pools[method]["first"].append(times[0])
        pools[method]["later"].append(statistics.median(times[1:]))
        return float(sum(times))

    alternate({m: (lambda m=m: open_arm(m)) for m in METHODS}, args.repeats)
    for which in ("first", "later"):
        cells = ", ".join(f"{m} {statistics.median(pools[m][which]):.2f} s" for m in METHODS)
        ratio = paired_ratio({m: pools[m][which] for m in METHODS}, "forkserver", "spawn")
        print(f"{which} pool: {cells}; forkserver / spawn {ratio:.3f}x")

    if args.spec:
        root = Path(tempfile.mkdtemp(prefix="pool-start-"))
        scores: set[bytes] = set()

        def command_arm(method: str) -> float:
            out = root / method
            shutil.rmtree(out, ignore_errors=True)
            command = [sys.executable, "-m", "rltransfer.cli", "run", args.spec, "--out", str(out)]
            started = time.perf_counter()
            subprocess.run([*command, "--workers", str(args.workers), "--quiet"], env=_env(method), check=True)
            seconds = time.perf_counter() - started
            scores.add((out / "report" / "scores.csv").read_bytes())
            return seconds

        try:
            results = alternate({m: (lambda m=m: command_arm(m)) for m in METHODS}, args.repeats)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        cells = ", ".join(f"{m} {statistics.median(results[m]):.1f} s" for m in METHODS)
        ratio = paired_ratio(results, "forkserver", "spawn")
        print(f"rltransfer run {args.spec}: {cells}; forkserver / spawn {ratio:.2f}x")
        print(f"scores.csv identical in every command: {len(scores) == 1}")
        if len(scores) != 1:
            sys.exit(1)


if __name__ == "__main__":
    main()
