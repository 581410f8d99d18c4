"""A user's own families for the tests of ``module:ATTRIBUTE`` and YAML families: a module to
write, a family written as data, and the command line in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import yaml

# A user's module: an environment class of their own (a Pendulum whose gravity is `g`) and a family.
MODULE = """
from gymnasium.envs.classic_control.pendulum import PendulumEnv
from rltransfer.envs import Family, Param, Variant


class Swing(PendulumEnv):
    def __init__(self, g: float = 10.0, render_mode=None):
        super().__init__(render_mode=render_mode, g=g)


FAMILY = Family(
    name="swing",
    title="Swing{tag}",
    entry_point="{module}:Swing",
    params=(Param("g", 10.0, 1.0, 30.0, "gravity"),),
    variants=(
        Variant("source", {{}}, "source"),
        Variant("g12", {{"g": 12.0}}, "near"),
        Variant("g15", {{"g": 15.0}}, "far"),
    ),
    max_episode_steps=50,
    threshold=-300.0,
    hyperparams={{"n_timesteps": 4096, "gamma": 0.9}},
)
NOT_A_FAMILY = 3
"""


def write_module(directory: Path, body: str = MODULE) -> str:
    """A uniquely named module under ``directory``; returns its name."""
    name = f"userfam_{uuid.uuid4().hex[:8]}"
    (directory / f"{name}.py").write_text(textwrap.dedent(body).format(module=name, tag=name[-8:]))
    return name


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line in a fresh process run from ``cwd``, where the user's module lies (not on PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import sys; from rltransfer.cli import main; sys.exit(main(sys.argv[1:]))"
    # -c would put the working directory on the path itself; the console script does not: mimic it.
    cmd = [sys.executable, "-I", "-c", code, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


PENDULUM_G = {
    "name": "pend-g",
    "env": "Pendulum-v1",
    "params": {"g": [10.0, 1.0, 30.0]},
    "near": {"g12": {"g": 12.0}},
    "far": {"g15": {"g": 15.0}},
    "threshold": -250,
}


def write_family(directory: Path, definition: dict[str, Any]) -> Path:
    path = directory / f"{definition['name']}.yaml"
    path.write_text(yaml.safe_dump(definition))
    return path
