"""Shared fixtures: one torch thread, tiny PPO budgets, a tiny pretrained CartPole source, the Ray tests' grid,
the command line run in-process from a test's directory (``here``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

# SB3-style tiny budgets: a rollout is 2 envs x 32 steps, one epoch, one minibatch.
TINY: dict[str, Any] = {
    "n_steps": 32,
    "batch_size": 64,
    "n_epochs": 1,
    "n_envs": 2,
    "eval_freq": 64,
    "eval_episodes": 2,
}


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True, scope="session")
def _sb3_logs_in_the_session_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Plain SB3 models the tests train without a logger of their own would each leave an empty
    ``/tmp/SB3-<time>`` (SB3's ``configure(None)``); ``SB3_LOGDIR`` gives them one shared folder here."""
    previous = os.environ.get("SB3_LOGDIR")
    os.environ["SB3_LOGDIR"] = str(tmp_path_factory.mktemp("sb3-logs"))
    yield
    if previous is None:
        os.environ.pop("SB3_LOGDIR", None)
    else:
        os.environ["SB3_LOGDIR"] = previous


@pytest.fixture
def tiny() -> dict[str, Any]:
    """A fresh copy of the tiny hyperparameter overrides (tests may add keys)."""
    return dict(TINY)


@pytest.fixture(scope="session")
def source_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CartPole source checkpoint directory (model.zip + manifest.json), pretrained for 256 steps."""
    from rltransfer.pretraining import pretrain

    out = tmp_path_factory.mktemp("source") / "cartpole-source-seed0"
    pretrain("cartpole", seed=0, timesteps=256, hyperparams=TINY, out=out)
    return out


@pytest.fixture(scope="session")
def long_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A grid whose runs last seconds, and its local-backend result.

    With 128-step runs (under a second each) the head node's worker can finish the whole grid
    before the second node's worker has started: the driver reuses its lease on the head.
    """
    from ray_results import run_locally
    from specs import grid_spec

    path = tmp_path_factory.mktemp("long") / "spec.yaml"
    path.write_text(yaml.safe_dump(grid_spec("ray-long", timesteps=2048, eval={"freq": 512, "episodes": 2})))
    return path, run_locally(path, path.parent / "ref")


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """``here(*args)``: the command line in this process, run from ``tmp_path`` (where the user's
    module lies, not on the path: it is found as the working directory); ``(exit code, out, err)``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # what load_family appends goes with the test
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # modules edited within one second reload

    from rltransfer.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        for name in [m for m in sys.modules if m.startswith("userfam_")]:
            del sys.modules[name]  # as a fresh process would: edited modules are read again
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run
