"""An RL Zoo hyperparameter block pasted as it is: what carries over, and one-line errors for what does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch as th
import yaml
from specs import grid_spec

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
    ("net_arch", "trunk", "heads"),
    [
        # The Zoo's MuJoCo and PyBullet blocks: actor and critic alike, so the actor's layers are the
        # trunk under linear heads (as a plain SB3 zip's are when it is a source).
        ("[dict(pi=[256, 256], vf=[256, 256])]", [256, 256], {"pi": [], "vf": []}),
        ("dict(pi=[256, 256], vf=[256, 256])", [256, 256], {"pi": [], "vf": []}),
        ("[64, 64]", [64, 64], {"pi": [], "vf": []}),
        # Shared layers first (SB3 before 1.8): they are the trunk, and pi/vf the heads.
        ("[128, dict(pi=[32], vf=[64])]", [128], {"pi": [32], "vf": [64]}),
    ],
)
def test_net_arch_becomes_the_trunk_and_the_heads(net_arch: str, trunk: list[int], heads: dict[str, Any]) -> None:
    block = {**yaml.safe_load(ZOO_CARTPOLE), "policy_kwargs": f"dict(activation_fn=nn.ReLU,\n net_arch={net_arch}\n)"}
    hp = resolve_hyperparams("cartpole", block)
    assert (hp["trunk_arch"], hp["head_arch"], hp["activation_fn"]) == (trunk, heads, "relu")


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"policy": "CnnPolicy"}, "policy 'CnnPolicy': rltransfer trains its own MLP policy"),
        (
            {"policy_kwargs": "dict(net_arch=dict(pi=[64], vf=[256, 256]), activation_fn=nn.ReLU)"},
            "separate actor and critic networks of different sizes have no shared layers to transfer; write trunk_arch",
        ),
        ({"policy_kwargs": "dict(net_arch=[dict(pi=[64]), 64])"}, "is not an SB3 MLP architecture"),
        ({"policy_kwargs": "dict(net_arch=[64])", "trunk_arch": [32]}, "trunk_arch set both in policy_kwargs and as"),
        ({"policy_kwargs": "dict(squash_output=True)"}, r"policy_kwargs.squash_output is not supported"),
        ({"policy_kwargs": "dict(activation_fn=nn.SiLU)"}, "policy_kwargs.activation_fn 'nn.SiLU' unknown"),
        ({"policy_kwargs": "dict(log_std_init=-2 * x)"}, "value '-2 \\* x' is not a literal"),
        ({"policy_kwargs": "[1, 2]"}, "is not a dict\\(...\\) expression"),
        ({"log_std_init": "low"}, "log_std_init must be a number, got 'low'"),
        ({"ortho_init": "no"}, "ortho_init must be true or false, got 'no'"),
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


def test_a_zoo_net_arch_over_a_source_is_read_as_the_trunk(source_dir: Path, tiny: dict[str, Any]) -> None:
    """The source's architecture fills in what the overrides leave out; a Zoo ``net_arch`` sets the
    trunk, so it is compared with the source's (it was refused as 'set both' against the source's keys)."""
    from rltransfer.finetuning import finetune

    same = finetune(
        "cartpole",
        ["long"],
        source_dir,
        "freeze",
        seed=0,
        timesteps=256,
        hyperparams={**tiny, "policy_kwargs": "dict(net_arch=[64, 64])"},
    )
    assert same.report is not None and same.report.copied
    with pytest.raises(
        UserError, match=r"shape mismatch: source features_extractor.trunk.0.weight \(64, 4\) vs target .* \(32, 4\)"
    ):
        finetune(
            "cartpole",
            ["long"],
            source_dir,
            "freeze",
            seed=0,
            hyperparams={**tiny, "policy_kwargs": "dict(net_arch=[32, 32])"},
        )


# rl-baselines3-zoo's MountainCarContinuous-v0 block (its policy options as the Zoo's Python string).
ZOO_MCC = """
normalize: true
n_envs: 1
policy: 'MlpPolicy'
n_timesteps: !!float 20000
batch_size: 256
n_steps: 8
gamma: 0.9999
learning_rate: !!float 7.77e-05
ent_coef: 0.00429
clip_range: 0.1
n_epochs: 10
gae_lambda: 0.9
max_grad_norm: 5
vf_coef: 0.19
use_sde: True
policy_kwargs: "dict(log_std_init=-3.29, ortho_init=False, activation_fn=nn.ReLU)"
"""


def test_the_zoos_policy_options_reach_the_source_and_the_multitask_policy() -> None:
    from rltransfer.envs import get_family

    from rltransfer.finetuning import build_model
    from rltransfer.pretraining import source_policy_kwargs

    hp = resolve_hyperparams("mountaincarcontinuous", yaml.safe_load(ZOO_MCC))
    assert (hp["log_std_init"], hp["ortho_init"], hp["activation_fn"]) == (-3.29, False, "relu")
    assert "policy_kwargs" not in hp
    kwargs = source_policy_kwargs(hp)
    assert kwargs["log_std_init"] == -3.29 and kwargs["ortho_init"] is False
    model = build_model(get_family("mountaincarcontinuous"), ["source", "weak"], {**hp, "n_steps": 64}, seed=0)
    policy = model.policy
    assert policy.ortho_init is False and th.allclose(policy.log_std, th.full_like(policy.log_std, -3.29))
    for head in (*policy.mlp_extractor.policy_heads, *policy.mlp_extractor.value_heads):
        gram = head.weight[0] @ head.weight[0].T  # nn.Linear's own init: rows far from orthogonal
        assert not th.allclose(gram, th.diag(gram.diagonal()), atol=1e-3)
        assert head.bias.abs().sum() > 0
    default = build_model(get_family("mountaincarcontinuous"), ["source", "weak"], {**hp, "ortho_init": True}, seed=0)
    gram = (
        default.policy.mlp_extractor.policy_heads[0].weight[0]
        @ default.policy.mlp_extractor.policy_heads[0].weight[0].T
    )
    assert th.allclose(gram, th.diag(gram.diagonal()), atol=1e-4)  # orthogonal rows, as before


@pytest.mark.parametrize("ortho", [True, False])
def test_cross_space_adapters_follow_ortho_init(ortho: bool) -> None:
    from rltransfer.finetuning import build_model
    from rltransfer.tasks import resolve_targets

    tasks = resolve_targets("cartpole", ["source", "acrobot/source"])  # observation sizes 4 and 6: adapters
    hp = {**resolve_hyperparams("cartpole"), "ortho_init": ortho}
    adapters = build_model(tasks, None, hp, seed=0).policy.features_extractor.adapters
    weight = adapters.weight[0]  # task 0: 4 inputs -> 64 (columns orthogonal when ortho)
    gram = weight.T @ weight
    assert th.allclose(gram, th.diag(gram.diagonal()), atol=1e-4) is ortho
    assert bool(adapters.bias.abs().sum() > 0) is not ortho


def test_counts_are_taken_as_users_write_them() -> None:
    """``1e5`` (text to YAML, which wants a dot), ``!!float 1e5`` and ``64.0`` are whole numbers of
    steps; ``10.5`` is not (``--hp n_timesteps=1e3`` raised a ValueError)."""
    hp = resolve_hyperparams("cartpole", {"n_timesteps": "1e3", "n_steps": "64", "batch_size": 32.0, "n_envs": 4.0})
    assert (hp["n_timesteps"], hp["n_steps"], hp["batch_size"], hp["n_envs"]) == (1000, 64, 32, 4)
    assert all(type(hp[k]) is int for k in ("n_timesteps", "n_steps", "batch_size", "n_envs"))
    for bad in ({"n_timesteps": "10.5"}, {"n_steps": 10.5}, {"n_timesteps": True}):
        with pytest.raises(UserError, match="must be a positive integer"):
            resolve_hyperparams("cartpole", bad)
    spec = parse_spec(grid_spec("counts", timesteps="3e5", seeds=2.0))
    assert spec.timesteps == 300_000 and spec.seeds == (0, 1)
