"""Distillation of several source policies into one multi-task student, then transfer from it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th

from rltransfer import distill as distill_module
from rltransfer import load_agent
from rltransfer.advise import advise
from rltransfer.checkpoint import load_checkpoint
from rltransfer.cli import main
from rltransfer.distill import distill
from rltransfer.errors import UserError
from rltransfer.experiment.run import run_experiment
from rltransfer.finetuning import finetune
from rltransfer.pretraining import pretrain
from rltransfer.strategies import parse_strategy

HP = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "n_envs": 1, "eval_freq": 64, "eval_episodes": 2}


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("teachers")
    out = []
    for variant in ("source", "long"):
        pretrain("cartpole", variant, seed=0, timesteps=256, hyperparams=HP, out=root / variant)
        out.append(root / variant)
    return out


@pytest.fixture(scope="module")
def student(teachers: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("student") / "s"
    result = distill("cartpole", teachers, rounds=3, steps_per_round=256, epochs=4, out=out)
    assert result.losses[-1] < result.losses[0], "the KL to the teachers must fall"
    assert set(result.student_returns) == {"source-0", "long-1"}
    assert result.manifest["kind"] == "distilled" and len(result.manifest["teachers"]) == 2
    return out


def test_student_trunk_transfers(student: Path) -> None:
    result = finetune("cartpole", ["longer"], student, "freeze", seed=0, timesteps=64, hyperparams=HP)
    assert result.report is not None
    assert {e.target for e in result.report.copied} == {
        "features_extractor.trunk.0.weight",
        "features_extractor.trunk.0.bias",
        "features_extractor.trunk.2.weight",
        "features_extractor.trunk.2.bias",
    }
    assert any(e.reason == "per-task head of a multi-task source" for e in result.report.entries)


def test_student_heads_do_not_transfer(student: Path) -> None:
    with pytest.raises(UserError, match="multi-task policy"):
        finetune(
            "cartpole",
            ["longer"],
            student,
            parse_strategy("finetune", {"transfer": "heads"}),
            timesteps=64,
            hyperparams=HP,
        )


def test_a_grid_names_the_arm_that_wants_the_students_heads(student: Path, tmp_path: Path) -> None:
    spec = {
        "name": "from-student",
        "family": "cartpole",
        "source": {"checkpoint": str(student)},
        "targets": ["longer"],
        "arms": ["scratch", "freeze", "zero-shot"],
        "seeds": 1,
        "timesteps": 64,
        "hyperparams": {k: v for k, v in HP.items() if not k.startswith("eval")},
        "eval": {"freq": 64, "episodes": 1},
    }
    with pytest.raises(UserError, match=r"^arm 'zero-shot': the source is a multi-task policy.*drop a zero-shot arm"):
        run_experiment(spec, out=tmp_path / "out", workers=1, progress=False)
    assert not (tmp_path / "out").exists()


def test_advise_points_a_multi_task_run_to_its_sources(student: Path, teachers: list[Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"single-task source policy; .* is a distilled student") as e:
        advise(student, "cartpole", ["longer"])
    assert all(str(t / "model.zip") in str(e.value) for t in teachers)
    assert f"rltransfer evaluate {student} --targets" in str(e.value)
    run = tmp_path / "ft"
    finetune("cartpole", ["longer"], student, "freeze", seed=0, timesteps=64, hyperparams=HP, out=run)
    with pytest.raises(UserError, match=r"is a transfer run.*the source it was trained from \(.*model\.zip\)"):
        advise(run, "cartpole", ["long"])


def test_distill_input_errors(teachers: list[Path], student: Path) -> None:
    with pytest.raises(UserError, match="at least two"):
        distill("cartpole", teachers[:1])
    with pytest.raises(UserError, match="seed must be >= 0, got -1"):
        distill("cartpole", teachers, seed=-1)
    with pytest.raises(UserError, match="at least two"):  # one path as text, not its letters
        distill("cartpole", str(teachers[0]))
    with pytest.raises(UserError, match=f"'{teachers[0]}/model.zip' is not a source of the 'acrobot' family"):
        distill("acrobot", f"{teachers[0]},{teachers[1]}")  # comma-separated, as --sources takes them
    with pytest.raises(
        UserError, match=r"not a source of the 'acrobot' family \(it is a source of family 'cartpole'\): give"
    ):
        distill("acrobot", teachers)
    with pytest.raises(
        UserError, match=r"not a source of the 'cartpole' family \(it is a distilled student: a multi-task"
    ):
        distill("cartpole", [teachers[0], student])
    with pytest.raises(UserError, match=r"records that it trained on other parameters than 'heavy'; drop @heavy"):
        distill("cartpole", [f"{teachers[0]}@heavy", teachers[1]])
    with pytest.raises(UserError, match=r"is the same checkpoint as .*; give each teacher once"):
        distill("cartpole", [teachers[0], teachers[1], teachers[0] / "model.zip"])


def test_cli_distill(teachers: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "distill",
        "--family",
        "cartpole",
        "--sources",
        ",".join(map(str, teachers)),
        "--rounds",
        "1",
        "--steps",
        "64",
        "--out",
        str(tmp_path / "d"),
    ]
    assert main(argv) == 0
    assert (tmp_path / "d" / "model.zip").exists() and "student" in capsys.readouterr().out
    assert main(argv) == 2 and "already holds a finished run" in capsys.readouterr().err
    more = ["--epochs", "2", "--batch-size", "16", "--lr", "5e-4", "--snapshot-every", "off", "--overwrite"]
    assert main([*argv, *more]) == 0 and "KL(teacher || student) by round: " in capsys.readouterr().out
    settings = json.loads((tmp_path / "d" / "manifest.json").read_text())["distillation"]
    assert (settings["epochs"], settings["batch_size"], settings["lr"]) == (2, 16, 5e-4)
    assert main([*argv[:-2], "--out", str(tmp_path / "e"), "--lr", "0"]) == 2
    assert "lr must be > 0" in capsys.readouterr().err and not (tmp_path / "e").exists()


def _weights(out: Path) -> dict[str, th.Tensor]:
    from rltransfer.checkpoint import load_checkpoint

    return load_checkpoint(out).state_dict


def test_each_round_is_logged_and_kept_in_the_manifest(student: Path) -> None:
    manifest = json.loads((student / "manifest.json").read_text())
    curve = manifest["curve"]
    assert [p["round"] for p in curve] == [1, 2, 3] and [p["driver"] for p in curve] == [
        "teachers",
        "student",
        "student",
    ]
    assert [p["steps"] for p in curve] == [256, 512, 768]
    assert all(set(p["returns"]) == {"source-0", "long-1"} for p in curve)
    assert curve[-1]["kl"] < curve[0]["kl"]
    header, *rows = (student / "logs" / "progress.csv").read_text().splitlines()
    assert {"distill/kl", "distill/round", "time/total_timesteps"} <= set(header.split(","))
    assert len(rows) == 3 and list(student.glob("logs/events.out.tfevents.*"))
    assert manifest["resumed"] == [] and "snapshot.pt" not in {f.name for f in student.iterdir()}


def test_a_killed_distillation_resumes_to_the_same_student(
    teachers: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed in its third round, resumed from the snapshot before it: the same weights, KL curve and logs."""
    kwargs: dict[str, Any] = {"rounds": 3, "steps_per_round": 128, "epochs": 2, "batch_size": 64, "snapshot_every": 0}
    whole = distill("cartpole", teachers, out=tmp_path / "whole", **kwargs)

    real, calls = distill_module._batch_loss, [0]

    def dying(*args: Any) -> th.Tensor:
        calls[0] += 1
        if calls[0] == 2 * 4 + 2 * 4 + 3:  # rounds of 2 and 4 minibatches per epoch, then into the third
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(distill_module, "_batch_loss", dying)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        distill("cartpole", teachers, out=out, **kwargs)
    assert not out.exists() and len(list(tmp_path.glob("killed.partial-*/snapshot.pt"))) == 1
    with pytest.raises(UserError, match="pass --resume to continue it"):
        distill("cartpole", teachers, out=out, **kwargs)
    with pytest.raises(UserError, match=r"other settings \(epochs differ\)"):
        distill("cartpole", teachers, out=out, resume=True, **{**kwargs, "epochs": 3})
    monkeypatch.setattr(distill_module, "_batch_loss", real)
    resumed = distill("cartpole", teachers, out=out, resume=True, **kwargs)

    assert resumed.losses == whole.losses
    a, b = _weights(tmp_path / "whole"), _weights(out)
    assert a.keys() == b.keys() and all(th.equal(a[k], b[k]) for k in a)
    assert resumed.student_returns == whole.student_returns
    assert resumed.manifest["curve"] == whole.manifest["curve"]
    assert resumed.manifest["resumed"] == [{"at_round": 2, "at_step": 256, "exact": True, "why_not": None}]
    assert (out / "logs" / "progress.csv").read_text() == (tmp_path / "whole" / "logs" / "progress.csv").read_text()
    assert not list(tmp_path.glob("killed.partial-*"))


def test_the_student_sees_raw_observations_where_the_family_normalises(tmp_path: Path) -> None:
    """Acrobot's YAML normalises; the teachers were trained without, so the student must be too."""
    hp = {**HP, "normalize": False}
    sources = []
    for variant in ("source", "long1-far"):
        pretrain("acrobot", variant, seed=0, timesteps=64, hyperparams=hp, out=tmp_path / variant)
        sources.append(tmp_path / variant)
    result = distill("acrobot", sources, rounds=1, steps_per_round=64, epochs=1)
    assert result.manifest["hyperparams"]["normalize"] is False
    assert np.isfinite(result.losses).all()
    with pytest.raises(UserError, match="drop normalize"):
        distill("acrobot", sources, hyperparams={"normalize": True})
    with pytest.raises(UserError, match="rounds must be > 0"):
        distill("acrobot", sources, rounds=0)


def test_runs_without_a_directory_leave_nothing_in_the_temp_dir(
    teachers: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SB3's ``configure(None)`` makes an empty ``/tmp/SB3-<time>`` per call; in-memory runs must not."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    distill("cartpole", teachers, rounds=1, steps_per_round=32, epochs=1)
    pretrain("cartpole", seed=0, timesteps=64, hyperparams=HP)
    assert list(tmp_path.iterdir()) == []


def test_the_student_is_an_agent_and_charges_its_teachers(student: Path, teachers: list[Path]) -> None:
    """``load_agent`` repeats the student's final evaluation; a transfer from it is charged the
    steps it collected and its teachers' pretraining."""
    manifest = json.loads((student / "manifest.json").read_text())
    agent = load_agent(student)
    assert agent.kind == "distilled" and agent.task_names == ["source-0", "long-1"]
    assert {t: m for t, (m, _) in agent.evaluate().items()} == manifest["eval"]["student"]
    teacher_steps = sum(load_checkpoint(t).trained_steps or 0 for t in teachers)
    assert teacher_steps > 0
    assert load_checkpoint(student).trained_steps == manifest["curve"][-1]["steps"] + teacher_steps


def test_plain_sb3_zips_teach_when_named_with_their_task(teachers: list[Path], tmp_path: Path) -> None:
    """A plain SB3 zip does not record the task it trained on: ``PATH@VARIANT`` names it, and the
    student's manifest records it as a source's would (an agent rebuilds its tasks from it)."""
    import gymnasium as gym
    from stable_baselines3 import PPO

    zip_path = tmp_path / "heavy.zip"
    env = gym.make("rltransfer/CartPole-heavy-v0")
    PPO("MlpPolicy", env, seed=0, n_steps=32, batch_size=32, device="cpu").save(zip_path)
    with pytest.raises(UserError, match=r"plain SB3 zip, which does not record the task .*heavy.zip@VARIANT"):
        distill("cartpole", [teachers[1], zip_path])
    result = distill(
        "cartpole", f"{teachers[1]},{zip_path}@heavy", rounds=1, steps_per_round=64, epochs=1, out=tmp_path / "s"
    )
    records = [t["variant"] for t in result.manifest["teachers"]]
    assert [(r["name"], r["distance"]) for r in records] == [("long", "near"), ("heavy", "near")]
    assert records[1]["params"]["masscart"] == 2.0 and records[1]["params"]["masspole"] == 0.5
    agent = load_agent(tmp_path / "s")
    assert agent.task_names == ["long-0", "heavy-1"]
    assert {t: m for t, (m, _) in agent.evaluate().items()} == result.manifest["eval"]["student"]
