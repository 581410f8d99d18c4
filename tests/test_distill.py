"""Distillation of several source policies into one multi-task student, then transfer from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from rltransfer.cli import main
from rltransfer.distill import distill
from rltransfer.errors import UserError
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


def test_distill_input_errors(teachers: list[Path], student: Path) -> None:
    with pytest.raises(UserError, match="at least two"):
        distill("cartpole", teachers[:1])
    with pytest.raises(UserError, match="not an rltransfer source checkpoint of the 'acrobot'"):
        distill("acrobot", teachers)
    with pytest.raises(UserError, match="not an rltransfer source"):
        distill("cartpole", [teachers[0], student])


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
