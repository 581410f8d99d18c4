"""An RL Zoo hyperparameter block pasted as it is: what carries over, and one-line errors for what does not."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from rltransfer.errors import UserError
from rltransfer.experiment.spec import parse_spec
from rltransfer.hyperparams import resolve_hyperparams

# rl-baselines3-zoo's hyperparams/ppo.yml, CartPole-v1 (a Python dict literal for normalize, as the Zoo writes it).
ZOO_CARTPOLE = """
n_envs: 8
n_timesteps: !!float 1e5
policy: 'MlpPolicy'
n_steps: 32
batch_size: 256
gae_lambda: 0.8
gamma: 0.98
n_epochs: 20
ent_coef: 0.0
learning_rate: lin_0.001
clip_range: lin_0.2
normalize: "{'norm_obs': True, 'norm_reward': False}"
"""


def test_a_zoo_block_resolves_as_its_meaning() -> None:
    block: dict[str, Any] = yaml.safe_load(ZOO_CARTPOLE)
    hp = resolve_hyperparams("cartpole", block)
    assert "policy" not in hp and hp["n_timesteps"] == 100_000 and hp["learning_rate"] == "lin_0.001"
    plain = {k: v for k, v in block.items() if k != "policy"}
    plain["normalize"] = {"norm_obs": True, "norm_reward": False}
    assert hp == resolve_hyperparams("cartpole", plain)
    assert hp["normalize"]["norm_obs"] is True and hp["normalize"]["norm_reward"] is False


def test_a_spec_takes_a_pasted_zoo_block() -> None:
    raw = {"family": "cartpole", "targets": ["long"], "arms": ["scratch"], "hyperparams": yaml.safe_load(ZOO_CARTPOLE)}
    assert parse_spec(raw).hyperparams["batch_size"] == 256


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"policy": "CnnPolicy"}, "policy 'CnnPolicy': rltransfer trains its own MLP policy"),
        (
            {"policy_kwargs": "dict(net_arch=dict(pi=[256, 256], vf=[256, 256]), activation_fn=nn.ReLU)"},
            "policy_kwargs: rltransfer builds its policy from trunk_arch, head_arch and activation_fn",
        ),
        ({"normalize": "{'norm_obs': True,"}, "is no dict literal; write it as a mapping"),
        ({"normalize": "{'norm_obs': 'yes'}"}, "normalize.norm_obs must be true or false, got 'yes'"),
        ({"normalize": {"clip_obs": -1}}, "normalize.clip_obs must be a positive number, got -1"),
    ],
)
def test_what_does_not_carry_over_is_one_line(changes: dict[str, Any], says: str) -> None:
    block = {**yaml.safe_load(ZOO_CARTPOLE), **changes}
    with pytest.raises(UserError, match=says) as error:
        resolve_hyperparams("cartpole", block)
    assert "\n" not in str(error.value)
