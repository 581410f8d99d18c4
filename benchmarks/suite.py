"""Sample-efficiency suite: every ready experiment, one headline table.

For each spec (default: every ``experiments/*.yaml``) the grid is run (or resumed), and the
overview of ``rltransfer.experiment.overview`` is printed: per target and transfer arm, the
time-to-threshold ratio transfer/scratch with its 95% CI, the AUC gain over scratch with its
CI, and the negative-transfer flag; then, per experiment and arm, the targets where transfer
was positive, null or NEGATIVE; then, per experiment and arm, the final policies on the
family's held-out variants against scratch (``rltransfer generalize``). ``--quick`` scales every budget (source and
target) down and uses 3 seeds, for a machine-sized pass; the tables record the settings used.

    python benchmarks/suite.py --quick experiments/cartpole.yaml experiments/cartpole-to-classic.yaml
    python benchmarks/suite.py --out docs/suite.md            # everything, full budgets (hours)
    python benchmarks/suite.py --backend ray --address auto   # ... on a Ray cluster

Every grid shares one worker pool (``rltransfer run A.yaml B.yaml``), and each is resumed where
an earlier pass left it: a killed suite loses nothing.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

from sidebyside import machine

from rltransfer.errors import UserError
from rltransfer.experiment.generalization import generalize
from rltransfer.experiment.overview import Row, generalization_lines, overview_markdown, rows_for
from rltransfer.experiment.run import run_experiments
from rltransfer.experiment.spec import ExperimentSpec, load_spec, parse_spec
from rltransfer.hyperparams import resolve_hyperparams


def scaled(spec: ExperimentSpec, factor: float, seeds: int) -> ExperimentSpec:
    """The same experiment at ``factor`` times the budgets (evaluation keeps ~10 points).

    Built from the spec's own YAML so the run directory records the settings really used.
    """
    raw = copy.deepcopy(spec.raw)
    timesteps = max(1024, int(spec.timesteps * factor))
    raw.update(name=f"{spec.name}-quick", timesteps=timesteps, seeds=seeds)
    raw["eval"] = {**(raw.get("eval") or {}), "freq": max(256, timesteps // 10)}
    if spec.source.checkpoint is None:
        source_steps = spec.source.timesteps or resolve_hyperparams(spec.family)["n_timesteps"]
        raw["source"] = {**(raw.get("source") or {}), "timesteps": max(1024, int(source_steps * factor))}
        if "seeds" in raw["source"] and not spec.source.paired:  # no more sources than target seeds
            raw["source"]["seeds"] = list(spec.source.seeds[:seeds])
        raw["source"].pop("require_solved", None)  # a scaled-down source is not expected to solve
    return parse_spec(raw, where=f"{spec.path} (quick)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specs", nargs="*", help="default: every experiments/*.yaml whose family is installed")
    parser.add_argument("--quick", type=float, nargs="?", const=0.25, help="budget factor (default 0.25)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds with --quick (default 3)")
    parser.add_argument("--root", default="runs/suite", help="where the grids run")
    parser.add_argument("--out", help="also write the table to this markdown file")
    parser.add_argument("--workers", type=int, help="runs in flight (default: every core, or the cluster's CPUs)")
    parser.add_argument("--backend", choices=("local", "ray"), default="local", help="ray: on a Ray cluster")
    parser.add_argument("--address", help="the Ray cluster (auto or HOST:PORT; default: a local Ray instance)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    args = parser.parse_args()
    paths = [Path(p) for p in args.specs] or sorted(Path("experiments").glob("*.yaml"))
    todo: list[tuple[Path, ExperimentSpec, Path]] = []
    for path in paths:
        spec = load_spec(path)
        if not all(t.family.available for t in spec.targets):
            print(f"skip {path}: its family needs an extra that is not installed", file=sys.stderr)
            continue
        if args.quick:
            spec = scaled(spec, args.quick, args.seeds)
        # One directory per budget factor: a grid directory refuses runs of another spec.
        todo.append((path, spec, Path(args.root) / (f"{spec.name}-x{args.quick:g}" if args.quick else spec.name)))
    started = time.time()
    # Every grid in one pool (every source first): cores idle only at the very end, not per grid.
    try:
        runs = run_experiments(
            [spec for _, spec, _ in todo],
            [out for _, _, out in todo],
            workers=args.workers,
            resume=True,
            progress=not args.quiet,
            backend=args.backend,
            address=args.address,
        )
    except UserError as e:  # bad input found before the pool (or one spec's failed source: nothing to tabulate)
        print(f"suite: {e}", file=sys.stderr)
        return 2
    print(f"{len(todo)} experiments: {time.time() - started:.0f}s", file=sys.stderr, flush=True)
    rows: list[Row] = []
    played: list[tuple[ExperimentSpec, Path]] = []
    for (path, spec, out), run in zip(todo, runs, strict=True):
        if run.error is not None:  # e.g. a source that missed source.require_solved: the other specs went on
            print(f"{path}: {run.error}", file=sys.stderr)
        elif run.result.failed:
            print(f"{path}: {len(run.result.failed)} runs failed; rerun to retry", file=sys.stderr)
        else:
            rows += rows_for(spec, out)
            generalize(out, workers=args.workers or os.cpu_count() or 1)
            played.append((spec, out))
    setting = f"quick: budgets x{args.quick}, {args.seeds} seeds" if args.quick else "full budgets"
    header = f"machine: {machine()}, Python {sys.version.split()[0]}; {setting}\n\n"
    text = header + overview_markdown(rows) + "".join(f"{line}\n" for line in generalization_lines(played))
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
