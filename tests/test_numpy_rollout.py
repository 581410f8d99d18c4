"""Rollout steps through numpy (``rltransfer.numpy_rollout``): the program's network, SB3's draws."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import torch as th
from rltransfer.envs import get_family
from rltransfer.envs.multitask import make_multitask_vec_env, make_task_vec_env
from rltransfer.policies import MultiTaskActorCriticPolicy
from stable_baselines3.common.utils import obs_as_tensor

from rltransfer import lean_rollout, numpy_rollout
from rltransfer.hyperparams import resolve_hyperparams
from rltransfer.lean import program_for
from rltransfer.mlp_backprop import Dense
from rltransfer.ppo import TransferPPO
from rltransfer.pretraining import source_policy_kwargs


def _model(family: str, multitask: bool, **kwargs: Any) -> TransferPPO:
    fam = get_family(family)
    if multitask:
        env = make_multitask_vec_env(fam, [v.name for v in fam.targets[:3]], n_envs_per_task=2, seed=0)
        return TransferPPO(MultiTaskActorCriticPolicy, env, seed=0, n_steps=32, batch_size=32, **kwargs)
    env = make_task_vec_env(fam, "source", 4, seed=0)
    policy_kwargs = {**source_policy_kwargs(resolve_hyperparams(family)), **kwargs.pop("policy_kwargs", {})}
    return TransferPPO("MlpPolicy", env, seed=0, n_steps=32, batch_size=32, policy_kwargs=policy_kwargs, **kwargs)


def _obs(multitask: bool, n: int, layout: str, gen: th.Generator) -> Any:
    x = th.randn(n, 4 if multitask else 3, generator=gen) * 2  # CartPole's 4, Pendulum's 3 numbers
    if not multitask:
        return x
    task = th.arange(3).repeat_interleave(n // 3) if layout == "sorted" else th.randint(0, 3, (n,), generator=gen)
    return {"obs": x, "task_id": task.float().unsqueeze(1)}


@pytest.mark.parametrize(
    ("family", "multitask", "layout", "policy_kwargs"),
    [
        ("pendulum", False, "-", {}),
        ("pendulum", False, "-", {"share_features_extractor": False, "activation_fn": th.nn.ReLU}),
        ("cartpole", True, "sorted", {}),
        ("cartpole", True, "mixed", {}),  # unequal task groups: the padded block and back
    ],
)
def test_numpy_net_is_the_program_to_rounding(family: str, multitask: bool, layout: str, policy_kwargs: dict) -> None:
    model = _model(family, multitask, **({"policy_kwargs": policy_kwargs} if policy_kwargs else {}))
    program = program_for(model.policy, numpy_tanh=True)
    assert program is not None
    net = numpy_rollout.numpy_net(program)
    assert net is not None
    gen = th.Generator().manual_seed(0)
    obs = _obs(multitask, 61 if layout == "mixed" else 60, layout, gen)
    with th.no_grad():
        out, values, cache = program.forward(obs)
    latent = program.block_latent(cache, obs) if multitask else cache.pi[-2]  # type: ignore[attr-defined]
    got_out, got_values, got_latent = net.forward(numpy_rollout.as_numpy(obs), latent=True)
    assert got_out.dtype == np.float32 and got_out.shape == tuple(out.shape)
    assert got_latent is not None and got_latent.shape == tuple(latent.shape)
    for got, expected in [(got_out, out), (got_values, values), (got_latent, latent)]:
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)
    # The views follow the parameters: an optimizer step shows in the next forward pass.
    with th.no_grad():
        for p in model.policy.parameters():
            p.mul_(1.5)
        out, values, _ = program.forward(obs)
    np.testing.assert_allclose(net.forward(numpy_rollout.as_numpy(obs))[1], values.numpy(), rtol=1e-5, atol=1e-5)


SDE = {"use_sde": True}
SDE_SHARED_STD = {"use_sde": True, "policy_kwargs": {"full_std": False}}  # get_std broadcasts one std per latent row


@pytest.mark.parametrize(
    ("family", "multitask", "kwargs"),
    [
        ("cartpole", False, {}),
        ("cartpole", True, {}),
        ("pendulum", False, {}),
        ("pendulum", False, SDE),
        ("pendulum", False, SDE_SHARED_STD),
    ],
)
def test_numpy_step_draws_what_policy_forward_draws(family: str, multitask: bool, kwargs: dict) -> None:
    """One rollout step: ``policy(obs)``'s actions, values and log-probabilities, the same generator state.

    (The multi-task gSDE step: ``tests/test_lean_rollout.py``.)
    """
    sde = "use_sde" in kwargs
    model = _model(family, multitask, **kwargs)
    model.learn(64)  # weights (and Pendulum's log_std) away from their initial values
    sampler = lean_rollout.lean_sampler(model.policy, numpy_tanh=True, numpy_forward=True)
    assert isinstance(sampler, functools.partial) and sampler.func.__module__ == numpy_rollout.__name__
    env = model.get_env()
    assert env is not None
    obs = env.reset()
    for seed in range(5):
        if sde:
            model.policy.reset_noise(env.num_envs)
        tensor = obs_as_tensor(obs, model.device)  # type: ignore[arg-type]
        th.manual_seed(seed)
        with th.no_grad():
            expected = model.policy(tensor)
        state = th.get_rng_state()
        th.manual_seed(seed)
        got = sampler(tensor)
        assert th.equal(th.get_rng_state(), state)
        assert got[0].dtype == expected[0].dtype and got[0].shape == expected[0].shape
        if family == "cartpole":
            assert th.equal(got[0], expected[0])
        else:
            th.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-5)
        th.testing.assert_close(got[1], expected[1], rtol=1e-5, atol=1e-5)
        th.testing.assert_close(got[2], expected[2], rtol=1e-5, atol=1e-5)
        obs, *_ = env.step(expected[0].numpy())


def test_numpy_forward_only_where_asked_and_covered() -> None:
    policy = _model("cartpole", False).policy
    for numpy_tanh, numpy_forward in [(False, True), (True, False)]:
        sampler = lean_rollout.lean_sampler(policy, numpy_tanh, numpy_forward)
        assert sampler is not None and sampler.func is lean_rollout.sample_categorical  # type: ignore[attr-defined]
    sde = _model("pendulum", False, use_sde=True).policy
    for numpy_forward, func in [(False, lean_rollout.sample_sde), (True, numpy_rollout.sample_sde)]:
        sampler = lean_rollout.lean_sampler(sde, True, numpy_forward)
        assert sampler is not None and sampler.func is func  # type: ignore[attr-defined]
    program = program_for(policy.double(), numpy_tanh=True)
    assert program is None  # float64 keeps autograd and SB3's rollout
    off_cpu = Dense(th.empty(4, 3, device="meta"), th.empty(4, device="meta"), None)  # as a CUDA layer would be
    assert numpy_rollout.numpy_layer(off_cpu) is None
    assert numpy_rollout.numpy_layer(Dense(th.zeros(4, 3), None, "relu")) is not None


def test_large_products_go_through_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above OpenBLAS's one-thread size numpy would use every core; torch's product gives the same."""
    calls = []
    torch_matmul = th.matmul
    monkeypatch.setattr(th, "matmul", lambda a, b: calls.append(a.shape) or torch_matmul(a, b))
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 64)).astype(np.float32).T  # a parameter's transposed view
    for rows, through_torch in [(8, False), (64, False), (65, True), (512, True)]:
        x = rng.standard_normal((rows, 64)).astype(np.float32)
        calls.clear()
        got = numpy_rollout.matmul(x, w)
        assert got.dtype == np.float32 and bool(calls) is through_torch
        np.testing.assert_allclose(got, x @ w, rtol=1e-4, atol=1e-4)
    stacked = rng.standard_normal((3, 512, 64)).astype(np.float32)
    np.testing.assert_allclose(numpy_rollout.matmul(stacked, w), stacked @ w, rtol=1e-4, atol=1e-4)
