"""Lean rollouts draw what SB3's ``collect_rollouts`` draws: the same samples and generator state."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch as th
from masked import MaskedPolicy
from rltransfer.envs import get_family
from rltransfer.envs.multitask import make_multitask_vec_env, make_task_vec_env
from rltransfer.policies import MultiTaskActorCriticPolicy
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.utils import obs_as_tensor

from rltransfer import lean_rollout
from rltransfer.hyperparams import resolve_hyperparams
from rltransfer.ppo import TransferPPO
from rltransfer.pretraining import source_policy_kwargs

ROLLOUT_CASES = [
    ("cartpole", "MlpPolicy"),  # rltransfer's source policy: the network runs without autograd or modules
    ("cartpole", "MultiInputPolicy"),
    ("mountaincar", MultiTaskActorCriticPolicy),
    ("acrobot", MaskedPolicy),
    ("pendulum", "MlpPolicy"),  # diagonal Gaussian: normal_ draws, clipped actions
    ("cartpole", "MlpPolicy-numpy"),  # the default: the network in numpy (numpy_rollout), to rounding
    ("pendulum", "MlpPolicy-numpy"),
    ("pendulum", "MlpPolicy-sde"),  # gSDE: exploration matrices drawn at the start and every 4 steps
    ("pendulum", MultiTaskActorCriticPolicy),
    ("pendulum", "MultiTask-sde"),  # gSDE's noise on SB3's K-block latent, one exploration matrix per env
]


@pytest.mark.parametrize(("family", "policy"), ROLLOUT_CASES)
def test_lean_rollouts_are_bit_identical_to_sb3(family: str, policy: Any) -> None:
    """Same samples, values, log-probs, time-limit bootstraps and episode statistics (multi-task: to rounding)."""
    fam = get_family(family)
    runs, generator_states = [], []
    for lean in (False, True):
        kwargs: dict[str, Any] = {}
        if policy in ("MlpPolicy-sde", "MultiTask-sde"):
            kwargs = {"use_sde": True, "sde_sample_freq": 4}
        if policy in ("MlpPolicy", "MlpPolicy-sde", "MlpPolicy-numpy"):
            env = make_task_vec_env(fam, "source", 4, seed=0)
            kwargs["policy_kwargs"] = source_policy_kwargs(resolve_hyperparams(family))
        elif policy is MaskedPolicy:
            env = make_task_vec_env(fam, "source", 4, seed=0)
        else:
            env = make_multitask_vec_env(fam, [v.name for v in fam.targets[:2]], n_envs_per_task=2, seed=0)
        aliases = {"MlpPolicy-sde": "MlpPolicy", "MlpPolicy-numpy": "MlpPolicy"}
        cls = {**aliases, "MultiTask-sde": MultiTaskActorCriticPolicy}.get(policy, policy)
        model = TransferPPO(cls, env, seed=0, n_steps=256, batch_size=256, **kwargs)
        assert lean_rollout.lean_sampler(model.policy) is not None
        model.lean = lean
        # torch's tanh where the rollout is bit-identical; the cases to rounding run numpy's (the
        # default), and with it the network in numpy (all but gSDE)
        rounding = cls is MultiTaskActorCriticPolicy or policy == "MlpPolicy-numpy"
        model.numpy_tanh = rounding
        _, callback = model._setup_learn(10_000, CallbackList([]))
        callback.on_training_start(locals(), globals())
        th.manual_seed(5)
        assert model.env is not None
        assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
        runs.append(model)
        generator_states.append(th.get_rng_state())
    assert th.equal(*generator_states)  # the same draws from torch's generator
    buffers = [m.rollout_buffer for m in runs]
    # Per-task output layers and numpy sum in another order; continuous actions carry that into the states.
    rounded = ["returns", "advantages", "values", "log_probs"] if rounding else []
    if rounded and family == "pendulum":
        rounded += ["actions", "rewards", "observations"]
    # gSDE's state-dependent noise feeds each step's rounding back into the next state, and over
    # 256 pendulum steps 1e-7 grows to ~1e-3 (one step agrees to 1e-6: the test below).
    tol = 3e-3 if policy == "MultiTask-sde" else 1e-5
    for name in ("actions", "rewards", "episode_starts", "returns", "advantages", "values", "log_probs"):
        if name in rounded:
            np.testing.assert_allclose(getattr(buffers[1], name), getattr(buffers[0], name), rtol=tol, atol=tol)
        else:
            np.testing.assert_array_equal(getattr(buffers[0], name), getattr(buffers[1], name), strict=True)
    obs = [b.observations if isinstance(b.observations, dict) else {"obs": b.observations} for b in buffers]
    for key in obs[0]:
        if "observations" in rounded:
            np.testing.assert_allclose(obs[1][key], obs[0][key], rtol=tol, atol=tol)
        else:
            np.testing.assert_array_equal(obs[0][key], obs[1][key])
    episodes = [[(e["r"], e["l"]) for e in m.ep_info_buffer] for m in runs]
    if "rewards" in rounded:
        assert [length for _, length in episodes[0]] == [length for _, length in episodes[1]]
        np.testing.assert_allclose([r for r, _ in episodes[1]], [r for r, _ in episodes[0]], rtol=1e-4)
    else:
        assert episodes[0] == episodes[1]
    assert episodes[0] or family == "acrobot"  # Acrobot's episodes outlast 256 steps
    if family == "mountaincar":  # every episode hits the 200-step limit: bootstrapped rewards
        assert all(length == 200 for _, length in episodes[0])


@pytest.mark.parametrize("numpy_forward", [False, True])
@pytest.mark.parametrize("n_envs_per_task", [1, 2])
def test_multitask_sde_step_matches_policy_forward(n_envs_per_task: int, numpy_forward: bool) -> None:
    """One gSDE rollout step of the multi-task policy: ``policy(obs)``'s draws, to rounding.

    With one env SB3 multiplies its single exploration matrix, with more one matrix per env.
    """
    fam = get_family("pendulum")
    env = make_multitask_vec_env(fam, [v.name for v in fam.targets[:3]], n_envs_per_task=n_envs_per_task, seed=0)
    model = TransferPPO(MultiTaskActorCriticPolicy, env, seed=0, use_sde=True, n_steps=32, batch_size=32)
    model.learn(64)  # weights and log_std away from their initial values
    sampler = lean_rollout.lean_sampler(model.policy, numpy_tanh=True, numpy_forward=numpy_forward)
    assert sampler is not None
    obs = env.reset()
    for _ in range(3):
        model.policy.reset_noise(env.num_envs)
        tensor = obs_as_tensor(obs, model.device)
        th.manual_seed(1)
        with th.no_grad():
            expected = model.policy(tensor)
        th.manual_seed(1)
        with th.no_grad():
            got = sampler(tensor)
        assert got[0].shape == expected[0].shape and got[0].abs().max() > 0.1
        for a, b in zip(got, expected, strict=True):
            th.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        obs, *_ = env.step(expected[0].numpy())


def test_multinomial_one_draws_as_torch_multinomial() -> None:
    gen = th.Generator().manual_seed(0)
    for n, actions in [(1, 2), (8, 2), (64, 3), (5, 7)]:
        logits = th.randn(n, actions, generator=gen) * 4
        logits[0, -1] = -float("inf")  # a masked action: probability 0, never drawn
        probs = th.softmax(logits, -1)
        for seed in range(20):
            th.manual_seed(seed)
            expected, state = th.multinomial(probs, 1, True), th.get_rng_state()
            th.manual_seed(seed)
            assert th.equal(lean_rollout.multinomial_one(probs), expected)
            assert th.equal(th.get_rng_state(), state)


def test_lean_rollout_rejects_non_finite_probabilities() -> None:
    """Where ``th.multinomial`` would refuse NaN probabilities, the lean rollout fails at its end."""
    model = TransferPPO("MlpPolicy", make_task_vec_env(get_family("cartpole"), "source", 2, seed=0), n_steps=16)
    with th.no_grad():
        model.policy.action_net.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="action probabilities were not finite"):
        model.learn(32)
