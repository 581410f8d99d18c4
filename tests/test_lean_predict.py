"""Evaluation through ``LeanPredictor`` gives the episodes SB3's ``model.predict`` gives."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch as th
from rltransfer.envs import get_family
from rltransfer.envs.multitask import make_eval_env, make_multitask_vec_env, make_task_vec_env
from rltransfer.policies import MultiTaskActorCriticPolicy
from stable_baselines3.common.evaluation import evaluate_policy

from rltransfer.domain import collect_observations
from rltransfer.evaluation import evaluate_tasks
from rltransfer.hyperparams import resolve_hyperparams
from rltransfer.lean_predict import LeanPredictor, predictor_for
from rltransfer.ppo import TransferPPO
from rltransfer.pretraining import source_policy_kwargs

# Per family: two targets, steps per rollout, steps learnt.
SETUPS = {"cartpole": (["long", "heavy"], 128, 2048), "pendulum": (["g15", "m1.5"], 64, 512)}


def trained(multitask: bool, family: str = "cartpole") -> TransferPPO:
    """A policy that has learnt a little (long, varied episodes), single- or multi-task."""
    fam = get_family(family)
    targets, n_steps, steps = SETUPS[family]
    if multitask:
        env = make_multitask_vec_env(fam, targets, n_envs_per_task=2, seed=0)
        model = TransferPPO(MultiTaskActorCriticPolicy, env, seed=0, n_steps=n_steps, batch_size=n_steps)
    else:
        env = make_task_vec_env(fam, "source", 4, seed=0)
        kwargs = source_policy_kwargs(resolve_hyperparams(family))
        model = TransferPPO("MlpPolicy", env, seed=0, n_steps=n_steps, batch_size=n_steps, policy_kwargs=kwargs)
    model.learn(steps)
    return model


@pytest.mark.parametrize("numpy_forward", [False, True])  # torch's network (exact), numpy's (the default)
@pytest.mark.parametrize("multitask", [False, True])
def test_lean_evaluation_equals_sb3_predict(multitask: bool, numpy_forward: bool) -> None:
    model = trained(multitask)
    model.numpy_tanh = numpy_forward
    predictor = predictor_for(model)
    assert isinstance(predictor, LeanPredictor) and (predictor.net is not None) is numpy_forward
    fam = get_family("cartpole")
    env = make_eval_env(fam, "long", 6, task_id=1 if multitask else None, n_tasks=2 if multitask else None)
    episodes: list[Any] = []
    for agent in (model, predictor):
        env.seed(3)
        episodes.append(evaluate_policy(agent, env, n_eval_episodes=6, deterministic=True, return_episode_rewards=True))
    assert episodes[0] == episodes[1]
    assert len(set(episodes[0][1])) > 1  # episodes of different lengths: a real comparison
    obs = env.reset()
    ours, _ = predictor.predict(obs, deterministic=True)
    theirs, _ = model.predict(obs, deterministic=True)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


class SB3Predict:
    """The model behind SB3's own ``predict`` only (``predictor_for`` returns it unchanged)."""

    lean = False

    def __init__(self, model: TransferPPO) -> None:
        self.model = model

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        return self.model.predict(*args, **kwargs)


@pytest.mark.parametrize("numpy_forward", [False, True])
@pytest.mark.parametrize("policy", ["categorical", "gaussian", "gsde"])
def test_source_states_are_sb3_predicts_draws(policy: str, numpy_forward: bool) -> None:
    """``collect_observations`` samples through the rollout's sampler: SB3's draws from the same generator."""
    if policy == "categorical":
        model = trained(multitask=False)
    elif policy == "gaussian":
        model = trained(multitask=False, family="pendulum")
    else:
        pendulum = make_task_vec_env(get_family("pendulum"), "source", 4, seed=0)
        model = TransferPPO("MlpPolicy", pendulum, n_steps=64, batch_size=64, use_sde=True, seed=0)
        model.learn(256)
    model.numpy_tanh = numpy_forward
    predictor = predictor_for(model)
    assert isinstance(predictor, LeanPredictor) and predictor.sampler is not None
    fam = get_family("cartpole" if policy == "categorical" else "pendulum")
    env = make_eval_env(fam, "long" if policy == "categorical" else "m1.5", 3)
    states = []
    for agent in (model, SB3Predict(model)):
        th.manual_seed(5)
        states.append(collect_observations(agent, env, 600, seed=3))
    assert states[0].shape == (600, *env.observation_space.shape) and len(np.unique(states[0], axis=0)) > 500
    if numpy_forward and policy != "categorical":  # the numpy network's means: equal to float rounding
        np.testing.assert_allclose(states[0], states[1], rtol=1e-4, atol=1e-4)
    else:
        np.testing.assert_array_equal(states[0], states[1])


def test_stochastic_evaluation_and_other_models_use_sb3_predict() -> None:
    model = trained(multitask=False)
    predictor = predictor_for(model)
    obs = make_task_vec_env(get_family("cartpole"), "source", 4, seed=1).reset()
    th.manual_seed(0)
    ours, _ = predictor.predict(obs, deterministic=False)
    th.manual_seed(0)
    theirs, _ = model.predict(obs, deterministic=False)
    np.testing.assert_array_equal(ours, theirs)
    model.lean = False
    assert predictor_for(model) is model
    model.lean = True
    pendulum = make_task_vec_env(get_family("pendulum"), "source", 1, seed=0)
    expln = TransferPPO("MlpPolicy", pendulum, n_steps=32, use_sde=True, policy_kwargs={"use_expln": True})
    assert predictor_for(expln) is expln  # a gSDE variant outside the hand-run network


@pytest.mark.parametrize("numpy_forward", [False, True])
@pytest.mark.parametrize("multitask", [False, True])
def test_lean_gaussian_evaluation_equals_sb3_predict(multitask: bool, numpy_forward: bool) -> None:
    """The mean, clipped to the torque bounds: the same episodes (multi-task or numpy: to rounding)."""
    fam = get_family("pendulum")
    model = trained(multitask, "pendulum")
    model.numpy_tanh = numpy_forward
    eval_env = make_eval_env(fam, "m1.5", 3, task_id=1 if multitask else None, n_tasks=2 if multitask else None)
    obs = eval_env.reset()
    ours, _ = predictor_for(model).predict(obs, deterministic=True)
    theirs, _ = model.predict(obs, deterministic=True)
    assert np.abs(theirs).max() < 2.0  # the means themselves, unclipped
    if multitask or numpy_forward:
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(ours, theirs)
    with th.no_grad():  # means far outside the torque bounds [-2, 2]: the clip matters
        model.policy.action_net.weight.mul_(1000.0)
    predictor = predictor_for(model)
    assert isinstance(predictor, LeanPredictor)
    ours, _ = predictor.predict(obs, deterministic=True)
    theirs, _ = model.predict(obs, deterministic=True)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape == (3, 1)
    assert np.abs(theirs).max() == 2.0  # clipped
    returns = []
    for agent in (model, predictor):
        eval_env.seed(3)
        returns.append(evaluate_policy(agent, eval_env, n_eval_episodes=3, deterministic=True)[0])
    if multitask or numpy_forward:
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
        assert returns[1] == pytest.approx(returns[0], rel=1e-4)
    else:
        np.testing.assert_array_equal(ours, theirs)
        assert returns[0] == returns[1]


def test_evaluate_tasks_gives_the_same_returns_lean_or_not() -> None:
    model = trained(multitask=False)
    model.numpy_tanh = False  # bit-identical actions (the default's numpy network: to rounding, above)
    env = make_eval_env(get_family("cartpole"), "long", 4)
    lean = evaluate_tasks(model, {"long": env}, 4, seed=2)
    model.lean = False
    assert evaluate_tasks(model, {"long": env}, 4, seed=2) == lean
