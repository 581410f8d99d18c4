"""Domain adaptation: stored source states, gradient reversal, feature shift, the dann arm."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from specs import grid_spec

from rltransfer.checkpoint import load_checkpoint
from rltransfer.domain import grad_reverse
from rltransfer.errors import UserError
from rltransfer.experiment.run import run_experiment
from rltransfer.finetuning import finetune
from rltransfer.strategies import parse_strategy

HP = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "n_envs": 1, "eval_freq": 64, "eval_episodes": 2}


def test_source_stores_its_states_with_a_checksum(source_dir: Path, tmp_path: Path) -> None:
    obs = load_checkpoint(source_dir).source_observations()
    assert obs is not None and obs.shape == (2048, 4) and np.isfinite(obs).all()
    copy = tmp_path / "copy"
    shutil.copytree(source_dir, copy)
    data = np.load(copy / "source_obs.npy")
    np.save(copy / "source_obs.npy", data + 1.0)
    with pytest.raises(UserError, match="checksum"):
        load_checkpoint(copy).source_observations()


def test_gradient_reversal() -> None:
    x = th.ones(3, requires_grad=True)
    (grad_reverse(x, 0.5) * 2.0).sum().backward()
    assert x.grad is not None and th.allclose(x.grad, th.full((3,), -1.0))


def test_dann_arm_trains_and_reports_feature_shift(source_dir: Path) -> None:
    plain = finetune("cartpole", ["scaled", "noisy"], source_dir, "finetune", seed=0, timesteps=128, hyperparams=HP)
    dann = finetune(
        "cartpole",
        ["scaled", "noisy"],
        source_dir,
        parse_strategy("dann", {"coef": 0.5}),
        seed=0,
        timesteps=128,
        hyperparams=HP,
    )
    for result in (plain, dann):
        shift = result.manifest["feature_mmd"]
        assert set(shift) == {"scaled", "noisy"} and all(np.isfinite(v["after"]) for v in shift.values())
    # Same seed, same first rollout: the "before" measurement is identical across arms.
    assert plain.manifest["feature_mmd"]["scaled"]["before"] == dann.manifest["feature_mmd"]["scaled"]["before"]
    assert dann.manifest["strategy"]["dann"] == 0.5
    # The adversarial updates moved the trunk differently from plain fine-tuning.
    key = "features_extractor.trunk.0.weight"
    assert not th.equal(plain.model.policy.state_dict()[key], dann.model.policy.state_dict()[key])


def test_dann_logs_its_losses(source_dir: Path, tmp_path: Path) -> None:
    finetune("cartpole", ["scaled"], source_dir, "dann", seed=0, timesteps=128, hyperparams=HP, out=tmp_path / "r")
    header = (tmp_path / "r" / "logs" / "progress.csv").read_text().splitlines()[0].split(",")
    assert {"train/dann_domain_loss", "train/dann_domain_accuracy", "train/dann_weight"} <= set(header)
    manifest: dict[str, Any] = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["feature_mmd"]["scaled"]["before"] > 0


def test_dann_needs_stored_source_states(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32).save(tmp_path / "plain.zip")
    with pytest.raises(UserError, match="dann aligns"):
        finetune("cartpole", ["scaled"], tmp_path / "plain.zip", "dann", timesteps=64, hyperparams=HP)


def test_rehearse_keeps_the_source_task_in_training_only(source_dir: Path) -> None:
    strategy = parse_strategy("finetune", {"rehearse": True})
    result = finetune("cartpole", ["long", "longer"], source_dir, strategy, seed=0, timesteps=128, hyperparams=HP)
    assert result.curve.task_names == ["long", "longer"]  # evaluated and reported: the targets only
    assert result.model.policy.n_tasks == 3  # trained: targets + the source task
    assert [t["name"] for t in result.manifest["targets"]] == ["long", "longer", "rehearsal"]
    assert result.manifest["strategy"]["rehearse"] is True
    assert result.manifest["forgetting"] is not None


def test_rehearse_needs_a_source_of_the_same_family(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32).save(tmp_path / "plain.zip")
    with pytest.raises(UserError, match="plain SB3 zip, which does not record the task it trained on"):
        finetune(
            "cartpole",
            ["long"],
            tmp_path / "plain.zip",
            parse_strategy("finetune", {"rehearse": True}),
            timesteps=64,
            hyperparams=HP,
        )
    # A grid refuses it before any run trains, not once per run in the workers.
    spec = grid_spec(
        "rehearse-plain",
        source={"checkpoint": str(tmp_path / "plain.zip")},
        arms=["scratch", {"name": "fr", "strategy": "finetune", "rehearse": True}],
    )
    with pytest.raises(UserError, match="rehearse trains on the source's own task"):
        run_experiment(spec, out=tmp_path / "grid", workers=1, progress=False)
    assert not (tmp_path / "grid").exists()
    with pytest.raises(UserError, match="cannot rehearse"):
        parse_strategy("scratch", {"rehearse": True})
