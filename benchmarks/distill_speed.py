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
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import torch
from sidebyside import alternate, machine, paired_ratio

from rltransfer import distill as current
from rltransfer.pretraining import pretrain

REPO = Path(__file__).resolve().parents[1]


def earlier_module(rev: str, where: Path) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{rev}:rltransfer/distill.py"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    path = where / "distill_earlier.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("distill_earlier", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


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
        modules = {"earlier": earlier_module(args.against, root), "now": current}
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
