"""Transfer-vs-scratch quality bars on a ready experiment (issues: transfer, experiments).

Runs (or resumes) an experiment spec and prints, per target and arm: median time to threshold
and the share of seeds reaching it, its ratio to scratch (a run that never reaches the
threshold counts as the full budget, so ratios against an unreached scratch are upper bounds),
jumpstart, the AUC difference to scratch with its 95% CI, and the report's flags.

    python benchmarks/transfer_quality.py experiments/cartpole.yaml --seeds 5
    python benchmarks/transfer_quality.py experiments/cartpole-negative.yaml --seeds 5 --expect-negative
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

from rltransfer.compare.summary import Estimate
from rltransfer.experiment.run import run_experiment
from rltransfer.experiment.spec import load_spec
from rltransfer.report.tables import fmt_estimate


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)  # summary.json writes infinities as "inf", NaN as null


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--out", help="default: runs/bench-<experiment>")
    parser.add_argument("--expect-negative", action="store_true", help="exit 1 unless some arm is flagged negative")
    parser.add_argument("--max-ttt-ratio", type=float, default=0.5, help="bar for near targets (default 0.5)")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    out = Path(args.out or f"runs/bench-{spec.name}")
    started = time.time()
    result, report = run_experiment(spec, out=out, seeds=args.seeds, workers=args.workers, resume=True, progress=False)
    if report is None or result.failed:
        print(f"grid incomplete: {len(result.failed)} failed runs", file=sys.stderr)
        return 1
    summary = json.loads((report / "summary.json").read_text())
    distance = {n: t.variant.distance for n, t in zip(spec.task_names, spec.targets, strict=True)}
    print(
        f"machine: {platform.machine()} {platform.processor()}, {args.seeds} seeds, spec {args.spec}, "
        f"grid wall time {time.time() - started:.0f}s (finished runs reused)"
    )
    print("| target | arm | TTT median (reached) | TTT / scratch | jumpstart | AUC - scratch [95% CI] | flags |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    budget = float(spec.timesteps)
    scratch_ttt = {}
    for c in summary["comparisons"]:
        if c["arm"] == "scratch":
            scratch_ttt[c["task"]] = min(_num(c["time_to_threshold_median"]), budget)
    near_ok: dict[str, bool] = {}
    negative = False
    for c in summary["comparisons"]:
        task, arm = c["task"], c["arm"]
        if arm == "scratch" or task == "all tasks":
            continue
        ttt = _num(c["time_to_threshold_median"])
        ratio = min(ttt, budget) / scratch_ttt[task] if scratch_ttt.get(task) else math.nan
        diff = fmt_estimate(Estimate.from_dict(c["auc_difference"]))  # one seed: no interval, [—, —]
        flags = ", ".join(
            f for f, on in (("NEGATIVE", c["negative_transfer"]), ("positive", c["positive_transfer"])) if on
        )
        negative |= bool(c["negative_transfer"])
        if distance.get(task) == "near" and arm != "zero-shot":
            near_ok[task] = near_ok.get(task, False) or ratio <= args.max_ttt_ratio
        ttt_text = "never" if math.isinf(ttt) else f"{ttt:,.0f}"
        print(
            f"| {task} ({distance.get(task)}) | {arm} | {ttt_text} ({c['reached_fraction']:.0%}) | {ratio:.2f} | "
            f"{c['metrics']['jumpstart']['mean']['value']:.1f} | {diff} | {flags} |"
        )
    ok = all(near_ok.values())
    for task, good in near_ok.items():
        print(
            f"near target {task}: a trained transfer arm reaches the threshold in <= {args.max_ttt_ratio}x "
            f"scratch's steps: {'yes' if good else 'NO'}"
        )
    if args.expect_negative:
        print(f"negative transfer flagged: {'yes' if negative else 'NO'}")
        ok &= negative
    print(f"report: {report / 'report.md'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
