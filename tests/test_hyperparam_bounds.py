"""A hyperparameter outside what PPO or the policy takes is one line naming it, at set-up
(before: an AssertionError, IndexError or TypeError from inside SB3 or the first update)."""

from __future__ import annotations

from typing import Any

import pytest
from rltransfer.envs import FAMILIES

from rltransfer.errors import UserError
from rltransfer.hyperparams import resolve_hyperparams


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"n_steps": 0}, "n_steps must be a positive integer, got 0"),
        ({"batch_size": 1.5}, "batch_size must be a positive integer"),
        ({"n_epochs": True}, "n_epochs must be a positive integer"),
        ({"learning_rate": -1}, "learning_rate must be a number > 0, got -1"),
        ({"learning_rate": "lin_-0.1"}, "learning_rate must be a number > 0"),
        ({"clip_range": 0}, "clip_range must be a number > 0"),
        ({"max_grad_norm": float("nan")}, "max_grad_norm must be a number > 0"),
        ({"vf_coef": -0.5}, "vf_coef must be a number >= 0"),
        ({"target_kl": 0}, "target_kl must be a number > 0"),
        ({"gamma": 1.5}, r"gamma must lie in \(0, 1\]"),
        ({"gae_lambda": -0.1}, r"gae_lambda must lie in \[0, 1\]"),
        ({"sde_sample_freq": -2}, "sde_sample_freq must be an integer >= -1"),
        ({"use_sde": 1}, "use_sde must be true or false"),
        ({"ent_coef": "lin_0.01"}, "takes a schedule for learning_rate, clip_range, clip_range_vf only"),
        ({"n_steps": 1, "n_envs": 1}, "a rollout needs at least 2 samples"),
        ({"trunk_arch": []}, "trunk_arch must hold at least one layer width"),
        ({"trunk_arch": [64, 0]}, "trunk_arch must be a list of positive layer widths"),
        ({"head_arch": 3}, r"head_arch must be a mapping \{pi: \[...\], vf: \[...\]\}"),
        ({"head_arch": {"pi": [64], "q": []}}, "head_arch must be a mapping"),
        ({"head_arch": {"pi": [-1]}}, "head_arch.pi must be a list of positive layer widths"),
    ],
)
def test_a_bad_value_is_one_line(override: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message) as e:
        resolve_hyperparams("cartpole", override)
    assert "\n" not in str(e.value)


def test_every_shipped_block_and_the_values_ppo_takes_pass() -> None:
    for family in FAMILIES:
        resolve_hyperparams(family)
    ok = {
        "learning_rate": "3e-4",  # YAML 1.1 reads 3e-4 as text; SB3 gets the number
        "clip_range": "lin_0.2",
        "clip_range_vf": None,
        "target_kl": None,
        "ent_coef": -0.01,  # unusual, but PPO takes it
        "gamma": 1,
        "gae_lambda": 0,
        "sde_sample_freq": -1,
        "head_arch": {"pi": [], "vf": [32]},
    }
    resolve_hyperparams("pendulum", ok)


def test_the_command_line_says_it_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from rltransfer.cli import main

    assert main(["pretrain", "--family", "cartpole", "--hp", "trunk_arch=[]", "--out", "never-written"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "rltransfer: error: trunk_arch must hold at least one layer width, e.g. [64, 64]: the trunk is what transfers"
    ]
