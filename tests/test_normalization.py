"""Observation normalisation: statistics saved with the source, carried into targets, task id untouched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rltransfer.envs import get_family

from rltransfer.checkpoint import load_checkpoint
from rltransfer.errors import UserError
from rltransfer.finetuning import build_model, finetune
from rltransfer.hyperparams import resolve_hyperparams
from rltransfer.normalization import find, load_stats
from rltransfer.pretraining import pretrain
from rltransfer.source_settings import source_architecture


@pytest.fixture(scope="module")
def normalized_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("norm") / "src"
    hp = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "n_envs": 2, "eval_freq": 64, "eval_episodes": 2}
    pretrain("cartpole", seed=0, timesteps=256, hyperparams={**hp, "normalize": True}, out=out)
    return out


def test_source_manifest_carries_statistics(normalized_source: Path) -> None:
    ckpt = load_checkpoint(normalized_source)
    stats = ckpt.obs_normalization
    assert stats is not None and len(stats["mean"]) == 4 and stats["count"] > 256
    assert np.all(np.asarray(stats["var"]) > 0)


def test_zero_shot_with_carried_statistics_reproduces_the_source(normalized_source: Path) -> None:
    """The source variant as the only target, everything transferred: the source's own evaluation."""
    ckpt = load_checkpoint(normalized_source)
    result = finetune("cartpole", ["source"], ckpt, "zero-shot", seed=0, hyperparams={"eval_episodes": 2})
    assert result.report is not None and any("normalisation" in n for n in result.report.notes)
    assert result.curve.returns[0][0] == pytest.approx(ckpt.manifest["eval"]["mean_return"])  # type: ignore[index]
    # The RL Zoo's meaning of ``true``, written out: observations and rewards.
    assert result.manifest["hyperparams"]["normalize"] == {"norm_obs": True, "norm_reward": True}


def test_task_id_is_never_normalised(normalized_source: Path) -> None:
    hp = resolve_hyperparams("cartpole", {"normalize": True, "n_envs": 1})
    family = get_family("cartpole")
    model = build_model(family, [family.variant("long"), family.variant("longer")], hp, seed=0)
    vn = find(model.get_env())  # type: ignore[arg-type]
    assert vn is not None and set(vn.obs_rms) == {"obs"}
    stats = load_checkpoint(normalized_source).obs_normalization
    assert stats is not None
    load_stats(model.get_env(), stats)  # type: ignore[arg-type]
    np.testing.assert_array_equal(vn.obs_rms["obs"].mean, stats["mean"])
    obs = vn.reset()
    assert set(np.unique(obs["task_id"])) == {0, 1}


@pytest.mark.parametrize("value", ["yes", 3, {"norm_bogus": True}])
def test_bad_normalize_values(value: Any) -> None:
    with pytest.raises(UserError, match="normalize"):
        resolve_hyperparams("cartpole", {"normalize": value})


def test_rewards_only_normalisation_trains_and_evaluates(normalized_source: Path) -> None:
    """``normalize: {norm_obs: false, norm_reward: true}``: VecNormalize keeps no observation
    statistics then, so there is nothing to copy to the evaluation env (this crashed), and a
    source's statistics have nowhere to go (a one-line error)."""
    hp = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "n_envs": 1, "eval_freq": 32, "eval_episodes": 1}
    rewards_only = {**hp, "normalize": {"norm_obs": False, "norm_reward": True}}
    result = finetune("cartpole", ["long"], None, "scratch", timesteps=64, hyperparams=rewards_only)
    vn = find(result.model.get_env())  # type: ignore[arg-type]
    assert vn is not None and vn.norm_reward and not vn.norm_obs and len(result.curve.steps) == 3
    with pytest.raises(UserError, match="norm_obs true"):
        finetune("cartpole", ["long"], normalized_source, "finetune", timesteps=64, hyperparams=rewards_only)


@pytest.mark.parametrize(
    ("value", "options"),
    [
        (True, {"norm_obs": True, "norm_reward": True}),
        ({"norm_reward": False}, {"norm_obs": True, "norm_reward": False}),
        ({"clip_obs": 5.0}, {"norm_obs": True, "norm_reward": True, "clip_obs": 5.0}),
        (False, False),
    ],
)
def test_normalize_means_what_it_means_in_the_rl_zoo(value: Any, options: Any) -> None:
    """``VecNormalize``'s defaults for ``true`` and for the keys a mapping leaves out, as the RL Zoo."""
    hp = resolve_hyperparams("cartpole", {"normalize": value, "n_envs": 1})
    assert hp["normalize"] == options
    family = get_family("cartpole")
    vn = find(build_model(family, [family.variant("long")], hp, seed=0).get_env())  # type: ignore[arg-type]
    if options is False:
        assert vn is None
    else:
        assert vn is not None and (vn.norm_obs, vn.norm_reward) == (True, options["norm_reward"])


def test_sources_of_older_rltransfer_keep_observations_only(normalized_source: Path, tmp_path: Path) -> None:
    """A manifest saying ``normalize: true`` was written when that meant observations only: its
    targets keep that (rewards unscaled), so that the transferred value head sees the same scale."""
    old = tmp_path / "old"
    shutil.copytree(normalized_source, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["hyperparams"]["normalize"] = True
    (old / "manifest.json").write_text(json.dumps(manifest))
    obs_only, zoo = {"norm_obs": True, "norm_reward": False}, {"norm_obs": True, "norm_reward": True}
    assert source_architecture(load_checkpoint(old))["normalize"] == obs_only
    assert source_architecture(load_checkpoint(normalized_source))["normalize"] == zoo


def test_distilling_normalised_teachers_names_the_fix(normalized_source: Path) -> None:
    from rltransfer.distill import distill

    with pytest.raises(UserError, match="pretrain them with --hp normalize=false"):
        distill("cartpole", [normalized_source, normalized_source])
