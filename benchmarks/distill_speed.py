"""``rltransfer.distill`` now against the module of an earlier commit, side by side in one process.

Two CartPole teachers (``source`` and ``long``, pretrained ``--teacher-steps`` each) are distilled
with the default settings by both modules, alternating over ``--repeats`` rounds; printed: the
median wall time per arm, the median per-round ratio, and whether both students evaluate alike.
The earlier module is read with ``git show REV:rltransfer/distill.py`` (default: the commit
before teacher distributions were computed once per state).

    python benchmarks/distill_speed.py [--against f1db0be] [--repeats 3] [--teacher-steps 30000]
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rltransfer.envs import get_family
from sidebyside import alternate, machine, module_at, paired_ratio

from rltransfer import distill as current
from rltransfer.pretraining import pretrain
from rltransfer.source_policy import source_variant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="f1db0be", help="the git revision to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--teacher-steps", type=int, default=30000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        teachers = []
        for variant in ("source", "long"):
            pretrain("cartpole", variant, seed=0, timesteps=args.teacher_steps, out=root / variant)
            teachers.append(root / variant)
        earlier = module_at(args.against, "rltransfer/distill.py", root)
        # Its imports resolve to today's package, where source_variant has since taken the family
        # (observation-shift sources): the earlier call, source_variant(ckpt), is adapted here.
        if "family" in inspect.signature(source_variant).parameters and hasattr(earlier, "source_variant"):
            earlier.source_variant = lambda ckpt: source_variant(ckpt, get_family("cartpole"))  # type: ignore[attr-defined]
        modules = {"earlier": earlier, "now": current}
        returns: dict[str, set[str]] = {name: set() for name in modules}

        def arm(name: str) -> float:
            started = time.perf_counter()
            result = modules[name].distill("cartpole", teachers)
            seconds = time.perf_counter() - started
            returns[name].add(repr(sorted(result.student_returns.items())))
            return seconds

        results = alternate({name: (lambda n=name: arm(n)) for name in modules}, args.repeats)
    print(f"machine: {machine()}; {args.repeats} rounds; earlier = {args.against}")
    for name in modules:
        rounds = ", ".join(f"{s:.2f}" for s in results[name])
        print(f"{name:>8}: {statistics.median(results[name]):.2f} s median ({rounds}); students {returns[name]}")
    print(f"now / earlier: {paired_ratio(results, 'now', 'earlier'):.2f}x wall time")
    if returns["now"] != returns["earlier"]:
        print("the students' evaluation returns differ between the modules")
        sys.exit(1)


if __name__ == "__main__":
    main()
