"""Shared fixtures: one torch thread, tiny PPO budgets, one tiny pretrained CartPole source."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

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
