"""Families that need an extra (box2d, mujoco): tiny pretraining and transfer, incl. Hopper -> Walker2d."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rltransfer.envs import get_family

from rltransfer.finetuning import finetune
from rltransfer.pretraining import pretrain

TINY = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "n_envs": 1, "eval_freq": 32, "eval_episodes": 1}


def needs(family: str) -> None:
    if not get_family(family).available:
        pytest.skip(f"needs the {get_family(family).extra} extra")


@pytest.mark.parametrize("family", ["lunarlander", "lunarlandercontinuous"])
def test_lunar_lander_pretrain_and_transfer(family: str, tmp_path: Path) -> None:
    needs(family)
    pretrain(family, seed=0, timesteps=64, hyperparams=TINY, out=tmp_path / "src")
    result = finetune(family, ["heavy", "storm"], tmp_path / "src", "freeze", timesteps=64, hyperparams=TINY)
    assert result.report is not None and len(result.report.copied) == 4
    assert np.all(np.isfinite(result.curve.returns))


def test_hopper_to_walker2d_crosses_spaces(tmp_path: Path) -> None:
    needs("hopper")
    pretrain("hopper", seed=0, timesteps=64, hyperparams=TINY, out=tmp_path / "src")
    result = finetune(
        "hopper", ["hopper/heavy", "walker2d/source"], tmp_path / "src", "finetune", timesteps=64, hyperparams=TINY
    )
    policy = result.model.policy
    assert policy.task_obs_dims == [11, 17] and policy.task_action_dims == [3, 6]
    report = result.report
    assert report is not None
    copied = {e.target for e in report.copied}
    assert "features_extractor.adapters.weight[task 0]" in copied
    assert not any("task 1" in str(t) for t in copied)
    assert result.manifest["targets"][1]["family"] == "walker2d"
    assert any("normalisation" in n for n in report.notes)  # MuJoCo hyperparameters normalise observations


def test_halfcheetah_builds_without_gymnasiums_settotalmass_warning(capfd: pytest.CaptureFixture[str]) -> None:
    needs("halfcheetah")
    import mujoco
    from rltransfer.envs.mujoco_env import HalfCheetahFamilyEnv, settotalmass_muted

    seen: list[str] = []
    mujoco.set_mju_user_warning(seen.append)  # a handler of the user's own
    try:
        env = HalfCheetahFamilyEnv(mass_scale=1.6)
        assert mujoco.get_mju_user_warning() is not None and not seen  # restored, and that warning dropped
        with settotalmass_muted():  # any other warning still reaches the user's handler
            mujoco.get_mju_user_warning()("Nan, Inf or huge value in QACC")
        assert seen == ["Nan, Inf or huge value in QACC"]
    finally:
        mujoco.set_mju_user_warning(None)
    env.close()
    HalfCheetahFamilyEnv().close()  # MuJoCo's default handler: nothing printed either
    assert "settotalmass" not in capfd.readouterr().err
    # The mass scale still applies on top of the total mass the asset sets (14 at scale 1).
    assert float(env.model.body_mass.sum()) == pytest.approx(14.0 * 1.6)
