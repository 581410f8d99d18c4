"""A budget no PPO update learns from (a ``lin_`` learning rate at 0 by the first update) is said
before the run trains: once per run, and once per group of arms for a grid (its workers stay quiet)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from specs import grid_spec

from rltransfer import NoLearningWarning, finetune, pretrain
from rltransfer.cli import main
from rltransfer.errors import MinibatchWarning
from rltransfer.finetuning import build_model
from rltransfer.hyperparams import learning_updates, no_learning, ppo_value, resolve_hyperparams, truncated_minibatch
from rltransfer.tasks import resolve_targets


@pytest.mark.parametrize(
    ("rate", "budget", "updates"),
    [
        ("lin_0.001", 64, 0),  # one rollout: its update comes at progress 0
        ("lin_0.001", 32, 0),  # less than one rollout: PPO still takes a whole one
        ("lin_0.001", 65, 1),  # two rollouts: the first update at progress 1 - 64/65
        ("lin_0.001", 128, 1),  # a budget of whole rollouts: the last update has rate 0 (as in the RL Zoo)
        ("lin_0.001", 640, 9),
        (3e-4, 64, 1),  # a constant rate: every update learns
        ("3e-4", 200, 4),
    ],
)
def test_updates_that_learn(rate: Any, budget: int, updates: int) -> None:
    assert learning_updates(rate, budget, 64) == updates
    assert (no_learning(rate, budget, 32, 2) is None) == (updates > 0)


def test_the_reason_names_the_budget_the_rollout_and_the_fix() -> None:
    why = no_learning("lin_0.001", 100, 32, 6)
    assert why == (
        "no update learns: 100 env steps are one rollout (192: n_steps 32 x 6 sub-envs), and learning_rate "
        "lin_0.001 is 0 by the update that follows it; give more than 192 steps (or a constant learning_rate)"
    )
    assert no_learning(ppo_value({}, "learning_rate"), 100, 32, 6) is None  # PPO's default rate, a constant
    never = no_learning(lambda progress: 0.0, 1000, 32, 6)  # a schedule of the user's own
    assert never == "no update learns: learning_rate its schedule is not above 0 at any of the 6 updates"


def test_a_run_that_cannot_learn_warns_and_trains_nothing(tiny: dict[str, Any]) -> None:
    """The warning is true: the trunk and heads end where they started."""
    with pytest.warns(NoLearningWarning, match=r"64 env steps are one rollout \(128: n_steps 32 x 4 sub-envs\)"):
        result = finetune("cartpole", ["long", "heavy"], None, "scratch", timesteps=64, hyperparams=tiny)
    start = build_model(resolve_targets("cartpole", ["long", "heavy"]), None, result.manifest["hyperparams"], seed=0)
    after = result.model.policy.state_dict()
    for name, before in start.policy.state_dict().items():
        assert np.array_equal(before.numpy(), after[name].numpy()), name
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoLearningWarning)
        learned = finetune("cartpole", ["long", "heavy"], None, "scratch", timesteps=129, hyperparams=tiny)
    moved = learned.model.policy.state_dict()  # two rollouts: the first update learns
    assert any(not np.array_equal(before.numpy(), moved[n].numpy()) for n, before in start.policy.state_dict().items())
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoLearningWarning)
        pretrain("cartpole", timesteps=64, hyperparams={**tiny, "learning_rate": 3e-4})
    with pytest.warns(NoLearningWarning, match="one rollout"):
        pretrain("cartpole", timesteps=64, hyperparams=tiny)


def test_the_command_line_says_it_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["pretrain", "--family", "cartpole", "--timesteps", "64", "--out", str(tmp_path / "src"), "--quiet"]
    assert main([*args, "--hp", "n_envs=2", "--hp", "batch_size=64", "--hp", "n_epochs=1"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "rltransfer: warning: no update learns: 64 env steps are one rollout (64: n_steps 32 x 2 sub-envs), and "
        "learning_rate lin_0.001 is 0 by the update that follows it; give more than 64 steps (or a constant "
        "learning_rate)"
    ]
    assert (tmp_path / "src" / "manifest.json").exists()  # a warning, not an error: the run is there


def test_a_grid_says_it_once_per_group_of_arms_before_it_trains(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Two worker processes, four runs that cannot learn, a source that can: one line, from the runner,
    none from the workers; ``--dry-run`` says it too, and a resumed grid with nothing left to train nothing."""
    spec = grid_spec("still", arms=["scratch", "freeze", "zero-shot"], timesteps=32)  # 1 env x 32 steps per rollout
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    line = (
        "rltransfer: warning: experiment 'still', arms scratch, freeze: no update learns: 32 env steps are one "
        "rollout (32: n_steps 32 x 1 sub-envs), and learning_rate lin_0.001 is 0 by the update that follows it; "
        "give more than 32 steps (or a constant learning_rate)"
    )
    args = ["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]
    assert main([*args, "--dry-run"]) == 0
    assert capfd.readouterr().err.splitlines() == [line]
    assert main([*args, "--workers", "2"]) == 0
    assert capfd.readouterr().err.splitlines() == [line]  # the workers' stderr is this process's
    assert len(list((tmp_path / "out").glob("*/seed*/manifest.json"))) == 6
    assert main([*args, "--resume"]) == 0
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    ("batch", "says"),
    [
        (64, None),
        (32, None),
        (48, "batch_size 48 does not divide a rollout of 64 (n_steps 32 x 2 sub-envs): every epoch ends with a "
         "minibatch of 16; a factor of 64 avoids it"),
        (256, "batch_size 256 is above a rollout of 64 (n_steps 32 x 2 sub-envs): every epoch is one minibatch of 64"),
    ],
)  # fmt: skip
def test_minibatches_that_do_not_divide_a_rollout(batch: int, says: str | None) -> None:
    assert truncated_minibatch(batch, 32, 2) == says


def test_sb3s_four_line_minibatch_warning_is_one_line_when_a_run_trains(
    tiny: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SB3 warns for every model it builds, one built to evaluate too; rltransfer once, when a run trains."""
    hp = {**tiny, "batch_size": 48}  # a rollout of 2 tasks x 2 envs x 32 steps: 128
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing at all while a model is only built
        build_model(resolve_targets("cartpole", ["long", "heavy"]), None, resolve_hyperparams("cartpole", hp), seed=0)
    with pytest.warns(MinibatchWarning, match="batch_size 48 does not divide a rollout of 128") as caught:
        finetune("cartpole", ["long", "heavy"], None, "scratch", timesteps=256, hyperparams=hp)
    assert [w.category for w in caught] == [MinibatchWarning]  # and not SB3's own
    args = [
        "transfer",
        "--family",
        "cartpole",
        "--targets",
        "long,heavy",
        "--strategy",
        "scratch",
        "--timesteps",
        "256",
    ]
    hps = [a for key, value in {**hp, "batch_size": 48}.items() for a in ("--hp", f"{key}={value}")]
    assert main([*args, *hps, "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "rltransfer: warning: batch_size 48 does not divide a rollout of 128 (n_steps 32 x 4 sub-envs): every epoch "
        "ends with a minibatch of 32; a factor of 128 avoids it"
    ]


def test_a_grid_says_it_of_its_source_and_its_arms_once(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    hp = {"n_steps": 32, "batch_size": 24, "n_epochs": 1, "n_envs": 1}
    spec = grid_spec("odd", source={"timesteps": 128, "hyperparams": hp}, hyperparams=hp)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--workers", "2", "--quiet"]) == 0
    says = "batch_size 24 does not divide a rollout of 32 (n_steps 32 x 1 sub-envs): every epoch ends with a "
    assert capfd.readouterr().err.splitlines() == [
        f"rltransfer: warning: experiment 'odd', source: {says}minibatch of 8; a factor of 32 avoids it",
        f"rltransfer: warning: experiment 'odd', arms scratch, freeze: {says}minibatch of 8; a factor of 32 avoids it",
    ]
