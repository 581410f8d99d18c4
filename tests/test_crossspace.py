"""Transfer across observation and action spaces: padding, adapters, masks, exact log-probs."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from rltransfer.envs import Task, get_family, make_cross_vec_env, padded_spaces
from rltransfer.envs.crossspace import PadTask
from rltransfer.policies import MultiTaskActorCriticPolicy
from stable_baselines3 import PPO

from rltransfer.errors import UserError
from rltransfer.finetuning import build_model, finetune
from rltransfer.hyperparams import resolve_hyperparams
from rltransfer.tasks import resolve_targets

HP = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "n_envs": 1, "eval_freq": 64, "eval_episodes": 2}
DISCRETE = ["cartpole/source", "acrobot/source", "mountaincar/source"]  # obs 4/6/2, actions 2/3/3


def task(name: str) -> Task:
    family, _, variant = name.partition("/")
    fam = get_family(family)
    return Task(fam, fam.variant(variant))


def obs_for(model: PPO, k: int, n: int = 16) -> dict[str, th.Tensor]:
    env = make_cross_vec_env([task(t) for t in DISCRETE], n_envs_per_task=n, task_id=k, seed=k)
    obs = env.reset()
    return {key: th.as_tensor(v) for key, v in obs.items()}


@pytest.fixture(scope="module")
def discrete_model() -> PPO:
    hp = resolve_hyperparams("cartpole", HP)
    return build_model(resolve_targets("cartpole", DISCRETE), None, hp, seed=0)


def test_padded_spaces() -> None:
    spaces = padded_spaces([task(t) for t in DISCRETE])
    assert spaces.obs_dims == [4, 6, 2] and spaces.action_dims == [2, 3, 3]
    assert spaces.observation.shape == (6,) and spaces.action == gym.spaces.Discrete(3)
    with pytest.raises(ValueError, match="mix discrete and continuous"):
        padded_spaces([task("cartpole/source"), task("pendulum/source")])


def test_masked_log_probs_and_entropy_equal_the_tasks_own(discrete_model: PPO) -> None:
    policy = discrete_model.policy
    obs = obs_for(discrete_model, 0)  # CartPole: 2 of 3 padded actions exist
    with th.no_grad():
        dist = policy.get_distribution(obs)
        probs = dist.distribution.probs
        assert th.all(probs[:, 2] == 0), "padded action must carry no probability mass"
        latent = policy.mlp_extractor.forward_actor(policy.extract_features(obs))
        own = th.distributions.Categorical(logits=policy.action_net(latent)[:, :2])
        actions = th.tensor([0, 1] * 8)
        np.testing.assert_allclose(dist.log_prob(actions), own.log_prob(actions), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(dist.entropy(), own.entropy(), rtol=1e-6, atol=1e-6)
        # evaluate_actions (the PPO update path) agrees too.
        _, log_prob, entropy = policy.evaluate_actions(obs, actions)
        np.testing.assert_allclose(log_prob, own.log_prob(actions), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(entropy, own.entropy(), rtol=1e-6, atol=1e-6)
        sampled = th.stack([policy.get_distribution(obs).sample() for _ in range(50)])
    assert int(sampled.max()) < 2, "a padded action was sampled"


def test_adapter_ignores_padded_inputs(discrete_model: PPO) -> None:
    policy = discrete_model.policy
    obs = obs_for(discrete_model, 2)  # MountainCar: 2 real inputs of 6
    with th.no_grad():
        before = policy.extract_features(obs).clone()
        policy.features_extractor.adapters.weight[2, :, 2:] += 5.0  # columns of padded inputs
        after = policy.extract_features(obs)
        policy.features_extractor.adapters.weight[2, :, 2:] -= 5.0
    th.testing.assert_close(before, after)


def test_continuous_padding_masks_log_prob() -> None:
    obs_space = gym.spaces.Dict({"obs": gym.spaces.Box(-1, 1, (3,)), "task_id": gym.spaces.Discrete(2)})
    act_space = gym.spaces.Box(-1, 1, (2,))
    policy = MultiTaskActorCriticPolicy(
        obs_space, act_space, lambda _: 1e-3, task_obs_dims=[3, 2], task_action_dims=[1, 2]
    )
    obs = {"obs": th.zeros(4, 3), "task_id": th.tensor([0.0, 0.0, 1.0, 1.0])}
    actions = th.tensor([[0.3, 0.9], [0.3, 0.1], [0.3, 0.9], [0.3, 0.1]])
    with th.no_grad():
        dist = policy.get_distribution(obs)
        lp, ent = dist.log_prob(actions), dist.entropy()
        mean, std = dist.distribution.mean, dist.distribution.stddev
        one_dim = th.distributions.Normal(mean[:, 0], std[:, 0])
    # Task 0 has one action dimension: the padded second one must not count.
    th.testing.assert_close(lp[:2], one_dim.log_prob(actions[:, 0])[:2])
    assert lp[0] == lp[1]
    th.testing.assert_close(ent[:2], one_dim.entropy()[:2])
    assert lp[2] != lp[3]  # task 1 uses both dimensions


def test_pad_task_maps_actions() -> None:
    spaces = padded_spaces([task("pendulum/source"), task("mountaincarcontinuous/source")])
    assert spaces.action == gym.spaces.Box(-1.0, 1.0, (1,), np.float32) and spaces.obs_dims == [3, 2]
    env = PadTask(get_family("pendulum").make("source"), spaces)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3,)
    env.step(np.array([1.0], dtype=np.float32))
    assert env.unwrapped.last_u == pytest.approx(2.0)  # [-1, 1] rescaled onto Pendulum's [-2, 2]
    discrete = PadTask(get_family("cartpole").make("source"), padded_spaces([task(t) for t in DISCRETE]))
    discrete.reset(seed=0)
    with pytest.raises(ValueError, match="padding"):
        discrete.step(2)


def test_cartpole_source_into_acrobot_and_mountaincar(source_dir: Path) -> None:
    result = finetune("cartpole", DISCRETE, source_dir, "finetune", seed=0, timesteps=128, hyperparams=HP)
    report = result.report
    assert report is not None
    copied = {e.target for e in report.copied}
    assert "features_extractor.adapters.weight[task 0]" in copied  # the CartPole task's adapter
    assert "features_extractor.trunk.0.weight" in copied  # the source's second layer
    assert not any("task 1" in str(t) or "task 2" in str(t) for t in copied)
    assert any("adapters of tasks [1, 2] start fresh" in n for n in report.notes)
    assert result.curve.task_names == DISCRETE and np.all(np.isfinite(result.curve.returns))
    assert result.manifest["forgetting"] is not None


def test_zero_shot_on_the_source_space_task_reproduces_the_source(source_dir: Path) -> None:
    from rltransfer.checkpoint import load_checkpoint

    ckpt = load_checkpoint(source_dir)
    result = finetune("cartpole", DISCRETE, ckpt, "zero-shot", seed=0, hyperparams={"eval_episodes": 2})
    source_alone = finetune("cartpole", ["source"], ckpt, "zero-shot", seed=0, hyperparams={"eval_episodes": 2})
    assert result.curve.returns[0][0] == source_alone.curve.returns[0][0]


def test_pendulum_to_mountaincar_continuous(tmp_path: Path) -> None:
    from rltransfer.pretraining import pretrain

    src = tmp_path / "pendulum"
    pretrain("pendulum", seed=0, timesteps=128, hyperparams={**HP, "use_sde": False}, out=src)
    targets = ["pendulum/source", "mountaincarcontinuous/source"]
    result = finetune("pendulum", targets, src, "freeze", seed=0, timesteps=128, hyperparams={**HP, "use_sde": False})
    assert result.report is not None and result.curve.task_names == targets
    policy = result.model.policy
    assert policy.task_obs_dims == [3, 2] and policy.task_action_dims is None  # same action size: no mask


def test_save_load_round_trip_keeps_masks(discrete_model: PPO, tmp_path: Path) -> None:
    discrete_model.save(tmp_path / "m.zip")
    loaded = PPO.load(tmp_path / "m.zip")
    obs = obs_for(discrete_model, 0)
    with th.no_grad():
        a = discrete_model.policy.get_distribution(obs).distribution.probs
        b = loaded.policy.get_distribution(obs).distribution.probs
    th.testing.assert_close(a, b)
    assert loaded.policy.task_action_dims == [2, 3, 3]


def test_mixed_action_kinds_is_a_user_error() -> None:
    with pytest.raises(UserError, match="mix discrete and continuous"):
        finetune("cartpole", ["cartpole/source", "pendulum/source"], None, "scratch", timesteps=64, hyperparams=HP)


def test_spec_with_cross_family_targets() -> None:
    from rltransfer.experiment.spec import parse_spec

    spec = parse_spec(
        {"family": "cartpole", "targets": ["acrobot/source", {"family": "mountaincar", "variant": "weak"}],
         "arms": ["scratch", "freeze"]}
    )  # fmt: skip
    assert spec.task_names == ["acrobot/source", "mountaincar/weak"]
    assert spec.thresholds == (-100.0, -110.0)
