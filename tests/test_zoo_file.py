"""Hyperparameters from an RL Zoo YAML file: ``--conf-file FILE[:KEY]`` and ``hyperparams: FILE`` in a spec."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import yaml
from rltransfer.envs import get_family
from test_zoo_hyperparams import ZOO_CARTPOLE

import rltransfer
from rltransfer.cli import main
from rltransfer.errors import UserError
from rltransfer.experiment.spec import load_spec
from rltransfer.zoo_file import zoo_file_block

# As the RL Zoo's hyperparams/ppo.yml writes them (blocks abridged).
ZOO = f"""
atari:
  policy: 'CnnPolicy'
  frame_stack: 4
CartPole-v1:{textwrap.indent(ZOO_CARTPOLE, "  ")}MountainCarContinuous-v0:
  normalize: true
  n_envs: 1
  policy: 'MlpPolicy'
  use_sde: True
  policy_kwargs: "dict(log_std_init=-3.29, ortho_init=False)"
LunarLander-v3:
  env_wrapper:
    - gymnasium.wrappers.TimeLimit:
        max_episode_steps: 500
  n_envs: 16
"""


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    path = tmp_path / "ppo.yml"
    path.write_text(ZOO)
    return path


def test_the_block_of_the_familys_env_id(zoo: Path) -> None:
    block = zoo_file_block(zoo, get_family("cartpole"))
    expected = {k: v for k, v in yaml.safe_load(ZOO_CARTPOLE).items() if k != "policy"}  # what it trains anyway
    assert block == {**expected, "normalize": {"norm_obs": True, "norm_reward": False}}  # the Zoo's dict literal
    # The Zoo's policy_kwargs string becomes rltransfer's keys.
    assert zoo_file_block(zoo, get_family("mountaincarcontinuous")) == {
        "normalize": True,
        "n_envs": 1,
        "use_sde": True,
        "log_std_init": -3.29,
        "ortho_init": False,
    }
    # FILE:KEY names a block, whatever the family.
    assert zoo_file_block(f"{zoo}:CartPole-v1", get_family("acrobot"))["gamma"] == 0.98
    assert rltransfer.zoo_hyperparams(zoo, "cartpole") == block  # the public API, by family name


# The Zoo's MuJoCo blocks: a multi-line policy_kwargs string, and blocks merged from an anchor.
ZOO_MUJOCO = """
HalfCheetah-v3: &mujoco
  normalize: true
  n_envs: 1
  policy: 'MlpPolicy'
  batch_size: 64
  n_steps: 512
  gamma: 0.98
  policy_kwargs: "dict(
                    log_std_init=-2,
                    ortho_init=False,
                    activation_fn=nn.ReLU,
                    net_arch=[dict(pi=[256, 256], vf=[256, 256])]
                  )"
Walker2d-v3:
  <<: *mujoco
  gamma: 0.99
"""


def test_the_zoos_mujoco_blocks(tmp_path: Path) -> None:
    path = tmp_path / "ppo.yml"
    path.write_text(ZOO_MUJOCO)
    block = zoo_file_block(path, get_family("walker2d"))
    assert block["gamma"] == 0.99 and block["batch_size"] == 64  # its own value over the anchor's
    assert {k: block[k] for k in ("log_std_init", "ortho_init", "activation_fn", "trunk_arch", "head_arch")} == {
        "log_std_init": -2,
        "ortho_init": False,
        "activation_fn": "relu",
        "trunk_arch": [256, 256],
        "head_arch": {"pi": [], "vf": []},
    }


def test_a_file_that_is_one_block_is_taken_whole(tmp_path: Path) -> None:
    path = tmp_path / "mine.yml"
    path.write_text("n_steps: 64\nbatch_size: 64\nlearning_rate: !!float 3e-4\n")
    assert zoo_file_block(path, get_family("pendulum")) == {"n_steps": 64, "batch_size": 64, "learning_rate": 3e-4}


@pytest.mark.parametrize(
    ("text", "ref", "family", "message"),
    [
        (
            ZOO,
            "{zoo}",
            "mountaincar",
            r"has no block for mountaincar \(keyed MountainCar-v<N> or mountaincar\); "
            r"its blocks: atari, CartPole-v1, MountainCarContinuous-v0, LunarLander-v3; name one as .*:KEY",
        ),
        (
            ZOO + "CartPole-v0: {n_envs: 4}\n",
            "{zoo}",
            "cartpole",
            "several blocks for cartpole: CartPole-v1, CartPole-v0; name one as .*:CartPole-v0",
        ),
        (ZOO, "{zoo}:CartPole-v9", "cartpole", "has no block 'CartPole-v9'; its blocks: atari, CartPole-v1"),
        (ZOO, "{zoo}:atari", "cartpole", r"ppo\.yml:atari: policy 'CnnPolicy': rltransfer trains its own MLP"),
        (ZOO, "{zoo}", "lunarlander", r"ppo\.yml:LunarLander-v3: unknown hyperparameter 'env_wrapper'"),
        (ZOO + "Pendulum-v1: 3\n", "{zoo}", "pendulum", r"ppo\.yml:Pendulum-v1 is 3, not a block"),
        ("a: [1", "{zoo}", "cartpole", "malformed YAML"),
        ("- 1\n", "{zoo}", "cartpole", "holds no mapping of hyperparameters"),
        (ZOO, "{zoo}.missing", "cartpole", r"hyperparameter file '.*ppo\.yml\.missing' not found here"),
    ],
)
def test_bad_files_are_one_line(tmp_path: Path, text: str, ref: str, family: str, message: str) -> None:
    zoo = tmp_path / "ppo.yml"
    zoo.write_text(text)
    with pytest.raises(UserError, match=message):
        zoo_file_block(ref.format(zoo=zoo), get_family(family))


def test_pretrain_takes_the_block_and_hp_on_top(zoo: Path, tmp_path: Path) -> None:
    out = tmp_path / "src"
    tiny = ["--hp", "n_envs=1", "--hp", "n_steps=32", "--hp", "batch_size=32", "--hp", "n_epochs=1"]
    argv = ["pretrain", "--family", "cartpole", "--conf-file", str(zoo), *tiny, "--timesteps", "64"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    hp = json.loads((out / "manifest.json").read_text())["hyperparams"]
    assert (hp["gamma"], hp["gae_lambda"], hp["n_steps"], hp["n_envs"]) == (0.98, 0.8, 32, 1)
    assert main(["pretrain", "--family", "cartpole", "--conf-file", f"{zoo}:nope", "--out", str(tmp_path / "x")]) == 2


def test_a_spec_names_a_file_beside_it_and_records_its_values(zoo: Path, tmp_path: Path) -> None:
    spec = {
        "family": "cartpole",
        "source": {"timesteps": 64, "hyperparams": "ppo.yml:MountainCarContinuous-v0"},
        "targets": ["long"],
        "arms": ["scratch"],
        "hyperparams": "ppo.yml",
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    cwd = os.getcwd()
    os.chdir(zoo.anchor)  # found beside the spec, not in the working directory
    try:
        loaded = load_spec(tmp_path / "spec.yaml")
    finally:
        os.chdir(cwd)
    block = zoo_file_block(zoo, get_family("cartpole"))
    assert loaded.hyperparams == block and loaded.raw["hyperparams"] == block
    assert loaded.source.hyperparams == loaded.raw["source"]["hyperparams"]
    assert loaded.source.hyperparams["log_std_init"] == -3.29
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**spec, "hyperparams": "ppo.yml:Nope-v0"}))
    with pytest.raises(UserError, match=r"spec\.yaml:\d+: .*ppo\.yml has no block 'Nope-v0'"):
        load_spec(tmp_path / "spec.yaml")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**spec, "hyperparams": [1]}))
    with pytest.raises(UserError, match=r"must be a mapping of keys to values or an RL Zoo file, got \[1\]"):
        load_spec(tmp_path / "spec.yaml")


def test_a_family_written_as_data_takes_the_block_of_the_id_it_builds_on(tmp_path: Path) -> None:
    family = load_spec(Path(__file__).parent.parent / "experiments" / "mountaincar-goal.yaml").family
    assert family.base_id == "MountainCar-v0"  # `env: MountainCar-v0`; its title is MountaincarGoal
    path = tmp_path / "ppo.yml"
    path.write_text("MountainCar-v0:\n  n_envs: 16\n  normalize: true\nCartPole-v1:\n  n_envs: 8\n")
    assert zoo_file_block(path, family) == {"n_envs": 16, "normalize": True}
    path.write_text("CartPole-v1:\n  n_envs: 8\n")
    with pytest.raises(
        UserError, match=r"no block for mountaincar-goal \(keyed MountainCar-v<N> or mountaincar-goal\)"
    ):
        zoo_file_block(path, family)
