"""Multi-task actor-critic: save/load round trips, task routing, independent per-task heads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from rltransfer.envs import get_family, make_multitask_vec_env
from rltransfer.policies import TRUNK_PREFIX, MultiTaskActorCriticPolicy, TaskLinear
from rltransfer.policies.multitask import task_one_hot
from stable_baselines3 import PPO

from rltransfer.ppo import TransferPPO

HEAD = 16
CASES = {
    "cartpole": ("cartpole", ["long", "heavy", "longer"], {}),
    "pendulum-sde": ("pendulum", ["g12", "m1.5", "l1.3"], {"use_sde": True, "sde_sample_freq": 4}),
    "pendulum": ("pendulum", ["g12", "m1.5", "l1.3"], {"use_sde": False}),
}


def make_model(case: str, learn: bool = True) -> TransferPPO:
    family, variants, extra = CASES[case]
    env = make_multitask_vec_env(get_family(family), variants, n_envs_per_task=1, seed=0)
    model = TransferPPO(
        MultiTaskActorCriticPolicy,
        env,
        seed=0,
        n_steps=32,
        batch_size=48,
        n_epochs=1,
        device="cpu",
        policy_kwargs={"trunk_arch": [32, 32], "net_arch": {"pi": [HEAD], "vf": [HEAD]}},
        **extra,
    )
    if learn:  # one update, so biases and heads are no longer at their initial values
        model.learn(total_timesteps=96)
    return model


@pytest.fixture(scope="module", params=list(CASES))
def trained(request: pytest.FixtureRequest) -> tuple[str, TransferPPO]:
    return request.param, make_model(request.param)


def obs_batch(model: TransferPPO, n_per_task: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """The same raw observations repeated for every task: rows ``k*n : (k+1)*n`` are task ``k``."""
    space = model.observation_space["obs"]
    rng = np.random.default_rng(seed)
    raw = rng.uniform(-1.0, 1.0, size=(n_per_task, *space.shape)).astype(np.float32)
    n_tasks = model.policy.n_tasks
    return {"obs": np.tile(raw, (n_tasks, 1)), "task_id": np.repeat(np.arange(n_tasks), n_per_task)}


def outputs(policy: MultiTaskActorCriticPolicy, obs: dict[str, np.ndarray]) -> tuple[th.Tensor, th.Tensor]:
    """Per row: the action distribution's parameters (probs, or mean and std) and the value."""
    with th.no_grad():
        obs_t, _ = policy.obs_to_tensor(obs)
        dist = policy.get_distribution(obs_t).distribution
        params = dist.probs if hasattr(dist, "probs") else th.cat([dist.mean, dist.stddev], dim=1)
        return params, policy.predict_values(obs_t)


def assert_same_outputs(a: MultiTaskActorCriticPolicy, b: MultiTaskActorCriticPolicy, obs: Any) -> None:
    pa, va = outputs(a, obs)
    pb, vb = outputs(b, obs)
    assert th.equal(pa, pb)
    assert th.equal(va, vb)


def test_architecture_and_state_dict_layout(trained: tuple[str, TransferPPO]) -> None:
    case, model = trained
    policy = model.policy
    assert isinstance(policy, MultiTaskActorCriticPolicy)
    assert policy.n_tasks == 3
    heads = policy.mlp_extractor
    assert heads.latent_dim_pi == 3 * HEAD and heads.latent_dim_vf == 3 * HEAD
    assert policy.action_net.in_features == 3 * HEAD
    assert policy.value_net.in_features == 3 * HEAD
    assert isinstance(heads.policy_heads[0], TaskLinear)
    assert heads.policy_heads[0].weight.shape == (3, HEAD, 32)
    names = dict(policy.named_parameters())
    assert {k for k in names if k.startswith(TRUNK_PREFIX)} == {
        f"{TRUNK_PREFIX}{i}.{leaf}" for i in (0, 2) for leaf in ("weight", "bias")
    }
    # The shared trunk is one module under three names; named_parameters lists it once.
    assert policy.pi_features_extractor is policy.features_extractor
    assert not any(k.startswith(("pi_features_extractor.", "vf_features_extractor.")) for k in names)
    if case == "pendulum-sde":
        assert policy.log_std.shape == (3 * HEAD, 1)  # gSDE: one row block per task
    elif case == "pendulum":
        assert policy.log_std.shape == (1,)


def test_ppo_save_load_round_trip(trained: tuple[str, TransferPPO], tmp_path: Path) -> None:
    _, model = trained
    path = tmp_path / "model.zip"
    model.save(path)
    loaded = PPO.load(path, device="cpu")
    assert type(loaded) is PPO
    assert isinstance(loaded.policy, MultiTaskActorCriticPolicy)
    assert loaded.policy.trunk_arch == [32, 32]
    obs = obs_batch(model)
    assert_same_outputs(model.policy, loaded.policy, obs)
    actions, _ = model.predict(obs, deterministic=True)
    loaded_actions, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(actions, loaded_actions)
    again = TransferPPO.load(path, device="cpu")
    assert_same_outputs(model.policy, again.policy, obs)


def test_ppo_load_after_param_groups(tmp_path: Path) -> None:
    """Transfer models have several optimizer groups (trunk.*, heads); their zips still load in plain PPO."""
    model = make_model("cartpole", learn=False)
    policy = model.policy
    trunk = [p for n, p in policy.named_parameters() if n.startswith(TRUNK_PREFIX)]
    rest = [p for n, p in policy.named_parameters() if not n.startswith(TRUNK_PREFIX)]
    model.set_param_groups([("trunk", trunk, 0.1), ("heads", rest, 1.0)])
    model.learn(total_timesteps=96)  # so the optimizer has moments to save
    model.save(tmp_path / "model.zip")
    loaded = PPO.load(tmp_path / "model.zip", device="cpu", env=model.get_env())
    assert_same_outputs(model.policy, loaded.policy, obs_batch(model))
    assert len(loaded.policy.optimizer.param_groups) == 1
    # Adam moments survive, re-indexed to the loaded single group's parameter order.
    saved = {
        id(p): st for g in policy.optimizer.param_groups for p in g["params"] if (st := policy.optimizer.state.get(p))
    }
    for p_orig, p_loaded in zip(policy.parameters(), loaded.policy.parameters(), strict=True):
        th.testing.assert_close(loaded.policy.optimizer.state[p_loaded]["exp_avg"], saved[id(p_orig)]["exp_avg"])
    loaded.learn(total_timesteps=96)  # and training continues


def test_policy_save_load_round_trip(trained: tuple[str, TransferPPO], tmp_path: Path) -> None:
    _, model = trained
    path = tmp_path / "policy.pth"
    model.policy.save(str(path))
    loaded = MultiTaskActorCriticPolicy.load(str(path), device="cpu")
    assert loaded.trunk_arch == [32, 32]
    assert loaded.net_arch == {"pi": [HEAD], "vf": [HEAD]}
    assert loaded.use_sde == model.policy.use_sde
    assert_same_outputs(model.policy, loaded, obs_batch(model))


def _perturb_task(policy: MultiTaskActorCriticPolicy, j: int, seed: int = 1) -> None:
    """Add noise to every parameter that belongs to task ``j`` alone."""
    gen = th.Generator().manual_seed(seed)
    heads = policy.mlp_extractor
    with th.no_grad():
        for layer in [*heads.policy_heads, *heads.value_heads]:
            layer.weight[j] += th.randn(layer.weight[j].shape, generator=gen)
            layer.bias[j] += th.randn(layer.bias[j].shape, generator=gen)
        for net, h in ((policy.action_net, heads.head_dim_pi), (policy.value_net, heads.head_dim_vf)):
            block = net.weight[:, j * h : (j + 1) * h]
            block += th.randn(block.shape, generator=gen)
        if policy.use_sde:
            block = policy.log_std[j * heads.head_dim_pi : (j + 1) * heads.head_dim_pi]
            block += th.randn(block.shape, generator=gen)


@pytest.mark.parametrize("j", [0, 1, 2])
def test_heads_are_independent(trained: tuple[str, TransferPPO], j: int, tmp_path: Path) -> None:
    case, model = trained
    # Perturb a copy, never the shared module-scoped model.
    path = tmp_path / "policy.pth"
    model.policy.save(str(path))
    policy = MultiTaskActorCriticPolicy.load(str(path), device="cpu")
    n = 5
    obs = obs_batch(model, n_per_task=n)
    before_p, before_v = outputs(policy, obs)
    _perturb_task(policy, j)
    after_p, after_v = outputs(policy, obs)
    for k in range(3):
        rows = slice(k * n, (k + 1) * n)
        if k == j:
            assert not th.allclose(before_p[rows], after_p[rows]), f"{case}: task {j}'s policy did not change"
            assert not th.allclose(before_v[rows], after_v[rows]), f"{case}: task {j}'s value did not change"
        else:
            assert th.equal(before_p[rows], after_p[rows]), f"{case}: perturbing task {j} changed task {k}"
            assert th.equal(before_v[rows], after_v[rows]), f"{case}: perturbing task {j} changed task {k}"


def test_trunk_is_shared_by_all_tasks(trained: tuple[str, TransferPPO], tmp_path: Path) -> None:
    _, model = trained
    path = tmp_path / "policy.pth"
    model.policy.save(str(path))
    policy = MultiTaskActorCriticPolicy.load(str(path), device="cpu")
    n = 5
    obs = obs_batch(model, n_per_task=n)
    before, _ = outputs(policy, obs)
    with th.no_grad():
        policy.features_extractor.trunk[0].weight.mul_(2.0)
    after, _ = outputs(policy, obs)
    for k in range(3):
        assert not th.allclose(before[k * n : (k + 1) * n], after[k * n : (k + 1) * n])


def test_task_id_shapes_give_same_features(trained: tuple[str, TransferPPO]) -> None:
    _, model = trained
    policy = model.policy
    obs = obs_batch(model)
    x = th.as_tensor(obs["obs"])
    one_hot = th.nn.functional.one_hot(th.as_tensor(obs["task_id"]), 3).float()
    with th.no_grad():
        flat = policy.features_extractor({"obs": x, "task_id": one_hot})
        nested = policy.features_extractor({"obs": x, "task_id": one_hot.unsqueeze(1)})
    assert flat.shape == (x.shape[0], 32 + 3)
    assert th.equal(flat, nested)
    assert th.equal(flat[:, 32:], one_hot)
    assert th.equal(task_one_hot(one_hot.unsqueeze(1), 3), one_hot)


def test_buffer_shaped_task_ids_evaluate_like_rollout_ones(trained: tuple[str, TransferPPO]) -> None:
    """Rollouts pass ``task_id`` as ``(B,)`` (one-hot ``(B, K)``); the buffer as ``(B, 1)`` (``(B, 1, K)``)."""
    _, model = trained
    policy = model.policy
    obs = obs_batch(model)
    with th.no_grad():
        rollout_obs, _ = policy.obs_to_tensor(obs)
        buffer_obs = {"obs": th.as_tensor(obs["obs"]), "task_id": th.as_tensor(obs["task_id"]).float()[:, None]}
        dist = policy.get_distribution(rollout_obs)
        actions = dist.get_actions(deterministic=True)
        values, log_prob, _ = policy.evaluate_actions(buffer_obs, actions)
        th.testing.assert_close(log_prob, dist.log_prob(actions))
        th.testing.assert_close(values, policy.predict_values(rollout_obs))


def test_predict_actions_are_valid(trained: tuple[str, TransferPPO]) -> None:
    _, model = trained
    obs = obs_batch(model)
    actions, _ = model.predict(obs, deterministic=False)
    assert len(actions) == len(obs["task_id"])
    space = model.action_space
    assert all(space.contains(np.asarray(a, dtype=space.dtype)) for a in actions)


@pytest.mark.parametrize("widths", [[], [16], [16, 8]])
def test_task_heads_match_the_all_heads_reference(widths: list[int]) -> None:
    """Running only each sample's own head equals running every head and masking the others."""
    from rltransfer.policies import TaskHeads
    from torch import nn

    th.manual_seed(0)
    heads = TaskHeads(12, 3, {"pi": widths, "vf": widths}, nn.Tanh)
    trunk = th.randn(10, 12)
    task = th.tensor([0, 1, 2, 2, 1, 0, 0, 1, 2, 1])
    one_hot = th.nn.functional.one_hot(task, 3).float()
    x = trunk.unsqueeze(1).expand(-1, 3, -1)
    for layer in heads.policy_heads:
        x = th.tanh(th.einsum("bki,koi->bko", x, layer.weight) + layer.bias)
    reference = (x * one_hot.unsqueeze(-1)).flatten(start_dim=1)
    out = heads.forward_actor(th.cat([trunk, one_hot], dim=1))
    th.testing.assert_close(out, reference)
    with th.no_grad():  # the rollout path (one matmul over all tasks, then gather)
        th.testing.assert_close(heads.forward_actor(th.cat([trunk, one_hot], dim=1)), reference)
    # Gradients too: each task's weights get exactly their own samples' gradient.
    upstream = th.randn_like(reference)
    params = [p for layer in heads.policy_heads for p in layer.parameters()]
    if params:
        got = th.autograd.grad((out * upstream).sum(), params)
        want = th.autograd.grad((reference * upstream).sum(), params)
        for g, w in zip(got, want, strict=True):
            th.testing.assert_close(g, w)


def test_task_heads_with_a_task_absent_from_the_batch() -> None:
    from rltransfer.policies import TaskHeads
    from torch import nn

    heads = TaskHeads(4, 3, {"pi": [5], "vf": [5]}, nn.Tanh)
    one_hot = th.nn.functional.one_hot(th.tensor([2, 2, 0]), 3).float()
    features = th.cat([th.randn(3, 4), one_hot], dim=1)
    for grad in (True, False):
        with th.set_grad_enabled(grad):
            out = heads.forward_actor(features).view(3, 3, 5)
        assert out[:, 1].abs().sum() == 0 and out[0, 2].abs().sum() > 0 and out[0, :2].abs().sum() == 0
