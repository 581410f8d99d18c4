"""Sample-efficiency suite: every ready experiment, one headline table.

For each spec (default: every ``experiments/*.yaml``) the grid is run (or resumed) and, per
target and transfer arm, the table gives the time-to-threshold ratio transfer/scratch (mean
steps; a run that never reaches the threshold counts as the full budget, so such ratios are
bounds) with a 95% stratified bootstrap CI over seeds, the AUC gain over scratch with its CI,
and the negative-transfer flag; a second table counts, per experiment and arm, the targets
where transfer was positive, null or NEGATIVE. ``--quick`` scales every budget (source and
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
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sidebyside import machine

from rltransfer.compare import stratified_independent_bootstrap_ci, time_to_threshold
from rltransfer.errors import UserError
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


def ttt_ratio(arm: np.ndarray, scratch: np.ndarray, budget: float) -> tuple[float, float, float]:
    """Mean steps to threshold, arm / scratch, with never-reached runs counted as the budget."""

    def ratio(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(x) / max(np.mean(y), 1.0))

    a, s = np.minimum(arm, budget), np.minimum(scratch, budget)
    low, high = stratified_independent_bootstrap_ci(a, s, ratio)
    return ratio(a, s), low, high


@dataclass(frozen=True)
class Row:
    """One target and transfer arm of one experiment, as the table prints it."""

    experiment: str
    budget: str
    task: str
    arm: str
    ttt: tuple[float, float, float]  # ratio transfer/scratch, CI low, CI high
    auc: tuple[float, float, float]  # gain over scratch, CI low, CI high
    reached: float
    flag: str  # "positive", "NEGATIVE" or ""

    def line(self) -> str:
        (r, lo, hi), (d, dlo, dhi) = self.ttt, self.auc
        return (
            f"| {self.experiment} | {self.task} | {self.arm} | {r:.2f} [{lo:.2f}, {hi:.2f}] | {d:+.1f} "
            f"[{dlo:+.1f}, {dhi:+.1f}] | {self.reached:.0%} | {self.flag} |"
        )


def budget_of(spec: ExperimentSpec) -> str:
    """``source steps [xS sources] -> target steps, seeds`` as run (a given checkpoint: its directory's name)."""
    if spec.source.checkpoint is not None:
        source = Path(spec.source.checkpoint).name
    else:
        steps = spec.source.timesteps or resolve_hyperparams(spec.family)["n_timesteps"]
        sources = len(spec.source.seeds)
        source = f"{steps / 1000:g}k" + (f" x{sources} sources" if sources > 1 else "")
    return f"{source} -> {spec.timesteps / 1000:g}k, {len(spec.seeds)} seeds"


def rows_for(spec: ExperimentSpec, out: Path) -> list[Row]:
    report = out / "report"
    summary = json.loads((report / "summary.json").read_text())
    with np.load(report / "curves.npz") as data:
        steps = data["steps"]
        curves = {arm: data[arm] for arm in summary["arms"]}
    thresholds = np.asarray(spec.thresholds)
    ttt = {arm: time_to_threshold(c, steps, thresholds) for arm, c in curves.items()}
    budget, as_run = float(steps[-1]), budget_of(spec)
    rows = []
    for c in summary["comparisons"]:
        arm, task = c["arm"], c["task"]
        if arm == "scratch" or task == "all tasks":
            continue
        t = spec.task_names.index(task)
        d = c["auc_difference"]
        flag = "NEGATIVE" if c["negative_transfer"] else ("positive" if c["positive_transfer"] else "")
        rows.append(
            Row(
                spec.name,
                as_run,
                task,
                arm,
                ttt_ratio(ttt[arm][:, t : t + 1], ttt["scratch"][:, t : t + 1], budget),
                (d["value"], d["low"], d["high"]),
                c["reached_fraction"],
                flag,
            )
        )
    return rows


def arm_summary(rows: list[Row]) -> list[str]:
    """Per experiment and arm: on how many targets transfer was positive, null or NEGATIVE.

    The headline at a glance; the per-target table above it has the intervals behind each flag.
    """
    lines = [
        "| experiment | budget (source -> target, seeds) | arm | positive | null | NEGATIVE | AUC gain per target |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.experiment, row.arm), []).append(row)
    for (experiment, arm), group in groups.items():
        flags = [row.flag for row in group]
        gains = " / ".join(f"{row.task} {row.auc[0]:+.0f}" for row in group)
        lines.append(
            f"| {experiment} | {group[0].budget} | {arm} | {flags.count('positive')} | {flags.count('')} | "
            f"{flags.count('NEGATIVE')} | {gains} |"
        )
    return lines


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
    for (path, spec, out), run in zip(todo, runs, strict=True):
        if run.error is not None:  # e.g. a source that missed source.require_solved: the other specs went on
            print(f"{path}: {run.error}", file=sys.stderr)
        elif run.result.failed:
            print(f"{path}: {len(run.result.failed)} runs failed; rerun to retry", file=sys.stderr)
        else:
            rows += rows_for(spec, out)
    lines = [
        f"machine: {machine()}, Python {sys.version.split()[0]}; "
        + (f"quick: budgets x{args.quick}, {args.seeds} seeds" if args.quick else "full budgets"),
        "",
        "| experiment | target | arm | TTT ratio transfer/scratch [95% CI] | AUC gain [95% CI] | reached | flag |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(row.line() for row in rows),
        "",
        *arm_summary(rows),
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
