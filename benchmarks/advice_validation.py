"""Validate transferability advice against realised transfer gains (issue 9; goal Spearman >= 0.6).

Runs (or resumes) the advice validation grids, ``experiments/advice-*.yaml`` by default: per
family, targets spanning positive, null and negative transfer (near and far dynamics, custom
far variants, observation shifts), each trained on its own (``mode: per-target``) by scratch,
freeze and finetune-heads. Then computes the advice for each experiment's source and targets
and prints one markdown table and the pooled Spearman correlation between the advice's
predicted gain and the realised gain (best transfer arm's AUC minus scratch's, both divided by
the target's threshold minus a random policy's return).

    python benchmarks/advice_validation.py [SPEC ...] [--root runs] [--seeds N] [--json FILE]

``--seeds`` overrides the specs' seed count (a finished grid resumed with more seeds trains only
the new ones); the printed Spearman comes with a 95% interval from resampling each arm's seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sidebyside import machine

from rltransfer.advice_validation import validate_experiments
from rltransfer.experiment.run import run_experiments
from rltransfer.experiment.spec import load_spec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specs", nargs="*", help="default: experiments/advice-*.yaml")
    parser.add_argument("--root", default="runs", help="grids run in ROOT/<experiment name> (resumed if there)")
    parser.add_argument("--seeds", type=int, help="seeds per arm, 0..N-1 (default: the specs')")
    parser.add_argument("--json", help="also write every point as JSON")
    args = parser.parse_args()
    paths = [Path(p) for p in args.specs] or sorted(Path("experiments").glob("advice-*.yaml"))
    dirs = [Path(args.root) / load_spec(path).name for path in paths]
    started = time.time()
    # One pool for every grid: workers idle only at the very end.
    for path, run in zip(paths, run_experiments(paths, dirs, args.seeds, resume=True, progress=False), strict=True):
        if run.error is not None or run.result.failed:
            print(f"{path}: {run.error or f'{len(run.result.failed)} runs failed'}; rerun to retry", file=sys.stderr)
            return 1
    print(f"grids: {time.time() - started:.0f}s", file=sys.stderr, flush=True)
    v = validate_experiments(dirs)
    print(f"machine: {machine()}; specs: {', '.join(str(p) for p in paths)}\n")
    print(
        "| experiment | target | zero-shot score | feature MMD² | predicted | realised (best arm) | advice "
        "| advised option's AUC gain |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for p in v.points:
        verdict = {True: "best or tied", False: "**worse**", None: "untested"}[p.agrees]
        advised = "—" if p.advised_gain is None else f"{p.advised_gain:+.0f} ({p.advised_arm}): {verdict}"
        print(
            f"| {p.experiment} | {p.target} | {p.advice.zero_shot_score:.2f} | {p.advice.feature_mmd:.3f} "
            f"| {p.predicted_gain:.2f} | {p.realised_gain:+.3f} ({p.best_arm}) | {p.recommendation} | {advised} |"
        )
    families = ", ".join(
        f"{f}: {r:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if (ci := v.per_family_ci.get(f)) else "")
        for f, r in v.per_family.items()
    )
    ci = "" if v.spearman_ci is None else f" [{v.spearman_ci[0]:.2f}, {v.spearman_ci[1]:.2f}]"
    print(f"\nSpearman(predicted, realised) = **{v.spearman:.2f}**{ci} over {len(v.points)} targets ({families})")
    agree, tested = v.agreement
    print(f"Advised strategy best or tied with the best (95% CIs): {agree} of {tested} tested targets")
    if args.json:
        Path(args.json).write_text(json.dumps(v.to_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
