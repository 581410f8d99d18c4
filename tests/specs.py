"""Tiny experiment specs shared by the runner, reliability and Ray tests (seconds per grid)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# A rollout of 32 steps on one env, one epoch: the smallest budget PPO accepts.
HP: dict[str, Any] = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "n_envs": 1}


def grid_spec(name: str, /, **changes: Any) -> dict[str, Any]:
    """2 arms x 2 seeds on one CartPole target, 128 steps each, from a 128-step source."""
    spec: dict[str, Any] = {
        "name": name,
        "family": "cartpole",
        "source": {"timesteps": 128, "hyperparams": HP},
        "targets": ["long"],
        "arms": ["scratch", "freeze"],
        "seeds": 2,
        "timesteps": 128,
        "eval": {"freq": 64, "episodes": 2},
        "hyperparams": HP,
    }
    spec.update(changes)
    return spec


def run_cli(spec: Path, out: Path, workers: str) -> subprocess.CompletedProcess[str]:
    """``rltransfer run SPEC --out OUT --workers N --quiet`` in a fresh process (exit code, stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "rltransfer.cli", "run", str(spec), "--out", str(out), "--workers", workers, "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def start_cli(args: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    """``rltransfer ARGS`` started in a fresh process (stderr piped), for tests that kill or interrupt it."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, "-m", "rltransfer.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)  # fmt: skip
