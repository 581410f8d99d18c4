"""Plain SB3 zips as sources: the settings their weights depend on bind every arm, scratch included.

A plain ``PPO("MlpPolicy")`` zip says in its JSON which activation it used and (through
``_last_original_obs``) whether it trained inside ``VecNormalize``, whose statistics SB3 saves
beside it (RL Zoo and Hugging Face layouts); those are read without unpickling anything.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
import yaml
from specs import HP, grid_spec
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from rltransfer import normalization
from rltransfer.checkpoint import load_checkpoint
from rltransfer.cli import main
from rltransfer.errors import UserError
from rltransfer.experiment.report import build_report
from rltransfer.experiment.run import run_experiment
from rltransfer.experiment.source_checks import preflight, with_source_settings
from rltransfer.experiment.spec import load_spec
from rltransfer.finetuning import finetune
from rltransfer.source_settings import source_architecture
from rltransfer.strategies import parse_strategy
from rltransfer.vecnormalize_file import read_file

TINY = {"n_steps": 32, "batch_size": 32, "n_epochs": 1}


def plain_zip(path: Path, **policy_kwargs: Any) -> Path:
    """An untrained plain SB3 CartPole PPO saved at ``path`` (weights and JSON are all a source needs)."""
    PPO("MlpPolicy", "CartPole-v1", seed=0, policy_kwargs=policy_kwargs, device="cpu", **TINY).save(path)
    return path


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RL Zoo style run directory: ``Acrobot-v1.zip`` trained inside VecNormalize, and
    ``Acrobot-v1/vecnormalize.pkl`` beside it."""
    root = tmp_path_factory.mktemp("zoo") / "Acrobot-v1_1"
    (root / "Acrobot-v1").mkdir(parents=True)
    env = VecNormalize(make_vec_env("Acrobot-v1", n_envs=1, seed=0))
    model = PPO("MlpPolicy", env, seed=0, device="cpu", **TINY)
    model.learn(64)
    model.save(root / "Acrobot-v1.zip")
    env.save(str(root / "Acrobot-v1" / "vecnormalize.pkl"))
    return root


def run_small(tmp_path: Path, spec: dict[str, Any]) -> Path:
    """``spec`` with one seed and 64 target steps, run on one worker; its output directory."""
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**spec, "seeds": 1, "timesteps": 64}))
    run_experiment(tmp_path / "spec.yaml", out=tmp_path / "out", workers=1, progress=False)
    return tmp_path / "out"


def settings(out: Path, arm: str) -> dict[str, Any]:
    """The PPO settings seed 0 of ``arm`` ran with."""
    return json.loads((out / arm / "seed0" / "config.json").read_text())["hyperparams"]


def test_activation_is_read_from_the_zip(tmp_path: Path) -> None:
    relu = load_checkpoint(plain_zip(tmp_path / "relu.zip", activation_fn=th.nn.ReLU, net_arch=[32]))
    arch = source_architecture(relu)
    assert arch == {"trunk_arch": [32], "head_arch": {"pi": [], "vf": []}, "activation_fn": "relu", "normalize": False}
    silu = load_checkpoint(plain_zip(tmp_path / "silu.zip", activation_fn=th.nn.SiLU))
    with pytest.raises(UserError, match=r"activation <class 'torch\.nn\.modules\.activation\.SiLU'>.*'tanh'"):
        source_architecture(silu)


def test_scratch_runs_the_sources_architecture_and_activation(tmp_path: Path) -> None:
    """Before: the scratch arm took the family's [64, 64] tanh trunk and [64] heads beside
    transfer arms with the zip's, so the comparison differed in more than initialisation."""
    zip_path = plain_zip(tmp_path / "ppo.zip", activation_fn=th.nn.ReLU, net_arch={"pi": [32, 32], "vf": [16]})
    source = {"checkpoint": str(zip_path)}
    spec = grid_spec("plain", source=source, targets=["long", "heavy"], arms=["scratch", "finetune"])
    out = run_small(tmp_path, spec)
    for arm in ("scratch", "finetune"):
        hp = settings(out, arm)
        assert (hp["trunk_arch"], hp["head_arch"], hp["activation_fn"]) == ([32, 32], {"pi": [], "vf": []}, "relu")
    assert "NOT COMPARABLE" not in (out / "report" / "report.md").read_text()
    md = (out / "report" / "report.md").read_text()
    assert "| source pretraining steps | 0 |" in md  # an untrained zip
    assert f"| — | {zip_path} | not recorded | not recorded | 0 |" in md
    assert "A plain SB3 zip records no evaluation of its own" in md and "seeds: paired" not in md
    # Forgetting is measured on the family's source variant, which the zip is taken to have trained on.
    forgetting = json.loads((out / "finetune" / "seed0" / "manifest.json").read_text())["forgetting"]
    assert forgetting["source_task"] == "assumed: the family's source variant" and forgetting["before"] > 0
    assert "its source task is taken as the family's source variant" in md

    # A zip's training steps (recorded from its JSON) are charged to the transfer arms in the report.
    manifest = out / "finetune" / "seed0" / "manifest.json"
    data = json.loads(manifest.read_text())
    assert data["source"]["timesteps"] == 0 and data["source"]["manifest"] is None
    manifest.write_text(json.dumps({**data, "source": {**data["source"], "timesteps": 5000}}))
    text = (build_report(out) / "report.md").read_text()
    assert "| source pretraining steps | 5000 |" in text and "| finetune | long | 5,000 |" in text
    manifest.write_text(json.dumps(data))

    # A grid whose arms ran different settings (as runs of an older rltransfer did) is flagged.
    manifest = out / "scratch" / "seed0" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["hyperparams"]["trunk_arch"] = [64, 64]
    del data["hyperparams"]["normalize"]  # as manifests of an older rltransfer lack it
    manifest.write_text(json.dumps(data))
    report = (build_report(out) / "report.md").read_text()
    assert "NOT COMPARABLE: settings differ between runs" in report
    assert "normalize (unset) (scratch), false (finetune); trunk_arch [64, 64] (scratch), [32, 32] (finetune)" in report


def test_a_relative_checkpoint_is_found_beside_the_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: ``checkpoint: ../models/ppo.zip`` was read from the working directory only, so a
    spec naming its source as family and RL Zoo files are named ran from its own directory alone."""
    (tmp_path / "models").mkdir()
    plain_zip(tmp_path / "models" / "ppo.zip")
    specs = tmp_path / "project" / "specs"
    specs.mkdir(parents=True)
    spec = grid_spec("beside", source={"checkpoint": "../../models/ppo.zip"}, seeds=1, timesteps=64)
    (specs / "spec.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(tmp_path / "project")  # the path is relative to specs/, not to here
    assert load_spec("specs/spec.yaml").source.checkpoint == Path("specs/../../models/ppo.zip")
    run_experiment("specs/spec.yaml", out="out", workers=1, progress=False)
    assert (Path("out") / "freeze" / "seed0" / "manifest.json").is_file()
    monkeypatch.chdir(tmp_path)  # the grid reads it again from elsewhere: resumed, rebuilt
    assert main(["run", "project/specs/spec.yaml", "--out", "project/out", "--resume", "--dry-run"]) == 0
    assert main(["report", "project/out"]) == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5", "spec.yaml:3: source.checkpoint must be a path (a run directory or an SB3 .zip), got 5"),
        ("nope.zip", "source.checkpoint 'nope.zip' is in neither the working directory nor beside the spec ("),
        ("/nope/x.zip", "source.checkpoint '/nope/x.zip' does not exist; give the path of a run directory"),
    ],
)
def test_a_checkpoint_that_is_not_there_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, value: str, message: str
) -> None:
    (tmp_path / "spec.yaml").write_text(f"name: x\nfamily: cartpole\nsource: {{checkpoint: {value}}}\n"
                                        "targets: [long]\narms: [scratch, freeze]\n")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert main(["run", "spec.yaml", "--out", "g"]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "g").exists()


def test_scratch_runs_the_architecture_the_spec_pretrains(tmp_path: Path) -> None:
    source = {"timesteps": 64, "hyperparams": {**HP, "trunk_arch": [16], "activation_fn": "relu"}}
    out = run_small(tmp_path, grid_spec("wide", source=source))
    for arm in ("scratch", "freeze"):
        assert (settings(out, arm)["trunk_arch"], settings(out, arm)["activation_fn"]) == ([16], "relu")
    # A source whose settings are not the spec's (a directory replaced by hand) stops the grid.
    source = out / "source"
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["hyperparams"]["activation_fn"] = "tanh"
    (source / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="trained with activation_fn='tanh' but the spec's runs use 'relu'"):
        preflight(with_source_settings(load_spec(tmp_path / "spec.yaml")), source)


def test_zoo_statistics_start_the_targets_normalisation(zoo_run: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(zoo_run / "Acrobot-v1.zip")
    saved = VecNormalize.load(str(zoo_run / "Acrobot-v1" / "vecnormalize.pkl"), make_vec_env("Acrobot-v1"))
    assert ckpt.trained_normalized and ckpt.obs_normalization is not None
    assert np.array_equal(ckpt.obs_normalization["mean"], saved.obs_rms.mean)
    # The Zoo's VecNormalize scaled rewards too: the targets train under the same options.
    options = {"norm_obs": True, "norm_reward": True, "clip_obs": 10.0, "clip_reward": 10.0}
    assert source_architecture(ckpt)["normalize"] == options
    result = finetune("acrobot", ["long1-far"], ckpt, "zero-shot", hyperparams=TINY, out=tmp_path / "run")
    vn = normalization.find(result.model.get_env())
    assert vn is not None and vn.norm_reward and np.array_equal(vn.obs_rms["obs"].mean, saved.obs_rms.mean)
    lineage = json.loads((tmp_path / "run" / "manifest.json").read_text())["source"]["vec_normalize"]
    assert lineage["path"] == str(zoo_run / "Acrobot-v1" / "vecnormalize.pkl") and len(lineage["sha256"]) == 64
    # The zip's own num_timesteps is the only record of its training: the run's lineage keeps it.
    assert ckpt.trained_steps == 64
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["source"]["timesteps"] == 64


def test_hugging_face_layout_and_missing_statistics(zoo_run: Path, tmp_path: Path, capsys: Any) -> None:
    hf = tmp_path / "hf"
    hf.mkdir()
    shutil.copy(zoo_run / "Acrobot-v1.zip", hf / "ppo-Acrobot-v1.zip")
    args = ["transfer", "--source", str(hf / "ppo-Acrobot-v1.zip"), "--family", "acrobot", "--targets", "long1-far"]
    args += ["--strategy", "zero-shot", "--out", str(tmp_path / "run"), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trained on normalised observations" in err and "vec_normalize.pkl" in err
    assert not (tmp_path / "run").exists()
    shutil.copy(zoo_run / "Acrobot-v1" / "vecnormalize.pkl", hf / "vec_normalize.pkl")
    assert load_checkpoint(hf / "ppo-Acrobot-v1.zip").obs_normalization is not None


def test_statistics_file_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {marker}",))

    crafted = tmp_path / "vecnormalize.pkl"
    crafted.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UserError, match="is not a VecNormalize file saved by SB3"):
        read_file(crafted)
    assert not marker.exists()
    # Rewards normalised only: no observation statistics, the source saw raw observations.
    rewards_only = VecNormalize(make_vec_env("CartPole-v1"), norm_obs=False, clip_reward=5.0)
    rewards_only.save(str(tmp_path / "rewards.pkl"))
    saved = read_file(tmp_path / "rewards.pkl")
    assert saved.obs_stats is None
    assert saved.options == {"norm_obs": False, "norm_reward": True, "clip_obs": 10.0, "clip_reward": 5.0}


@pytest.mark.parametrize("source_sde", [False, True])
def test_a_log_std_of_the_other_exploration_names_use_sde(tmp_path: Path, source_sde: bool) -> None:
    # Pendulum's settings explore with gSDE (a matrix log_std); a plain zip may not (a vector).
    path = tmp_path / "pendulum.zip"
    PPO("MlpPolicy", "Pendulum-v1", seed=0, use_sde=source_sde, device="cpu", **TINY).save(path)

    def transfer(parts: str, use_sde: bool, out: Path | None = None) -> None:
        strategy = parse_strategy("finetune", {"transfer": parts})
        hp = {**TINY, "use_sde": use_sde}
        finetune("pendulum", ["g12"], path, strategy=strategy, timesteps=32, hyperparams=hp, out=out)

    with pytest.raises(UserError) as caught:
        transfer("all", use_sde=not source_sde)
    message = str(caught.value)
    assert f"set use_sde={str(source_sde).lower()} as the source's" in message
    assert "(transfer: heads)" in message and "trunk_arch" not in message
    # As the message says: the source's exploration carries over, or is left out.
    transfer("all", use_sde=source_sde, out=tmp_path / "same")
    transfer("heads", use_sde=not source_sde, out=tmp_path / "heads")
