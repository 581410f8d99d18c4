"""Every benchmark script still runs: each with its smallest arguments, in a fresh process.

``pytest -m expensive tests/test_benchmark_scripts.py`` (2.5 minutes on 2 cores): the
scripts are how every figure in ``docs/benchmarks.md`` is reproduced, and nothing else runs them.
The ones that train to convergence or compare over many seeds are listed with why they are left
to their own runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# Script -> its smallest arguments.
QUICK: dict[str, list[str]] = {
    "batched_envs.py": ["--repeats", "1", "--steps", "20", "--rollouts", "1"],
    "distill_speed.py": ["--repeats", "1", "--teacher-steps", "2048"],
    "evaluation_speed.py": ["--repeats", "1"],
    "gpu_trunk.py": ["--devices", "cpu", "--trunk", "64", "--timesteps", "1024", "--repeats", "1"],
    "grid_scaling.py": ["--processes", "2", "--timesteps", "1024", "--repeats", "1"],
    "lean_options.py": ["--repeats", "1"],
    "lean_update.py": ["--repeats", "1", "--no-profile"],
    "many_grids.py": ["--timesteps", "512", "--repeats", "1"],
    "multitask_cost.py": ["--iterations", "2", "--repeats", "2"],
    "overhead.py": ["--timesteps", "1024", "--repeats", "1", "--iterations", "2"],
    "pool_start.py": ["--repeats", "1"],
    "ray_overhead.py": ["--repeats", "1", "--timesteps", "1024"],
    "snapshot_cost.py": ["--repeats", "1", "--timesteps", "1024"],
    "source_states.py": ["--repeats", "1", "--source-steps", "2048"],
    "step_parts.py": ["rollout", "--repeats", "1"],
}
# Scripts left to their own runs, and why.
LONG = {
    "advice_validation.py": "runs every ready experiment's grid",
    "lean_equivalence.py": "learning curves over 8 seeds per arm",
    "pretrain_quality.py": "trains each family's source to its threshold",
    "source_overlap.py": "whole grids side by side",
    "suite.py": "every family's ready experiment",
    "transfer_quality.py": "a grid over 5 seeds",
    "zoo_source.py": "trains an RL Zoo agent for 300k steps",
}
HELPERS = {"sidebyside.py"}  # imported by the scripts, not run


def test_every_script_is_run_here_or_said_why_not() -> None:
    scripts = {path.name for path in BENCHMARKS.glob("*.py")}
    assert scripts == set(QUICK) | set(LONG) | HELPERS


@pytest.mark.expensive
@pytest.mark.parametrize("script", sorted(QUICK))
def test_benchmark_runs(script: str, tmp_path: Path) -> None:
    if script == "ray_overhead.py":
        pytest.importorskip("ray")
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *QUICK[script]],
        cwd=tmp_path,  # whatever a script writes by default lands here
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "machine:" in proc.stdout or "|" in proc.stdout, proc.stdout[-2000:]
