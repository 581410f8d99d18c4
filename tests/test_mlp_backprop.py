"""The hand-written PPO minibatch (network, loss, Adam) equals autograd and ``Optimizer.step`` bit for bit.

Whole updates against SB3's ``PPO.train`` are in ``tests/test_ppo_lean.py`` (the ``single-*`` cases).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from rltransfer.envs import get_family
from rltransfer.envs.multitask import make_multitask_vec_env, make_task_vec_env
from rltransfer.policies import MultiTaskActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from torch.distributions import Categorical
from torch.nn import functional as F

from rltransfer.adam_step import FusedAdamStepper
from rltransfer.hyperparams import resolve_hyperparams
from rltransfer.mlp_backprop import actor_critic_mlp, numpy_tanh_
from rltransfer.multitask_backprop import multitask_mlp, sorted_layouts, task_slots
from rltransfer.ppo import TransferPPO
from rltransfer.ppo_loss import Coefficients, Minibatch, categorical_ppo_loss, logged_stats, total_loss
from rltransfer.pretraining import source_policy_kwargs


def sb3_loss(logits: th.Tensor, values: th.Tensor, b: Minibatch, c: Coefficients) -> tuple[th.Tensor, list[float]]:
    """SB3 2.x ``PPO.train``'s loss for one minibatch, through ``torch.distributions``."""
    dist = Categorical(logits=logits)
    log_prob, entropy = dist.log_prob(b.actions), dist.entropy()
    adv = b.advantages
    if c.normalize_advantage:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    ratio = th.exp(log_prob - b.old_log_prob)
    policy_loss = -th.min(adv * ratio, adv * th.clamp(ratio, 1 - c.clip_range, 1 + c.clip_range)).mean()
    v = values.flatten()
    if c.clip_range_vf is not None:
        v = b.old_values + th.clamp(v - b.old_values, -c.clip_range_vf, c.clip_range_vf)
    value_loss = F.mse_loss(b.returns, v)
    entropy_loss = -th.mean(entropy)
    loss = policy_loss + c.ent_coef * entropy_loss + c.vf_coef * value_loss
    with th.no_grad():
        log_ratio = log_prob - b.old_log_prob
        kl = th.mean((th.exp(log_ratio) - 1) - log_ratio)
        clip_fraction = th.mean((th.abs(ratio - 1) > c.clip_range).float())
    stats = [policy_loss.item(), clip_fraction.item(), value_loss.item(), entropy_loss.item(), kl.item()]
    return loss, stats


def near_clip_batch(n: int, c: Coefficients) -> tuple[th.Tensor, th.Tensor, Minibatch]:
    """Logits, values and a minibatch whose ratios span the range and sit within rounding of its bound.

    Seeds are tried in order until the data holds a tie between the two surrogates outside the
    clip range (by rounding): the case the gradient treats specially, so the test is not vacuous.
    """
    for seed in range(100):
        gen = th.Generator().manual_seed(seed)
        logits = th.randn(n, 3, generator=gen)
        actions = th.randint(0, 3, (n,), generator=gen)
        log_prob = Categorical(logits=logits).log_prob(actions)
        target = (1 + c.clip_range) * (1 + th.randn(n, generator=gen) * 1e-7)
        target[: n // 4] = th.rand(n // 4, generator=gen) * 2
        batch = Minibatch(
            actions=actions,
            old_values=th.randn(n, generator=gen),
            old_log_prob=log_prob - th.log(target),
            advantages=th.randn(n, generator=gen),
            returns=th.randn(n, generator=gen),
        )
        ratio = th.exp(log_prob - batch.old_log_prob)
        clipped = th.clamp(ratio, 1 - c.clip_range, 1 + c.clip_range)
        adv = batch.advantages
        if c.normalize_advantage:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        if ((adv * ratio == adv * clipped) & (ratio != clipped)).any():
            return logits, th.randn(n, 1, generator=gen), batch
    raise AssertionError("no seed gave a tie outside the clip range")


@pytest.mark.parametrize("n", [256, 193])
@pytest.mark.parametrize(
    "coefs",
    [
        Coefficients(0.2, None, 0.0, 0.5, True),
        Coefficients(0.1, 0.3, 0.01, 0.7, False),
    ],
)
def test_loss_gradient_equals_autograd(n: int, coefs: Coefficients) -> None:
    logits, values, batch = near_clip_batch(n, coefs)
    ref_logits, ref_values = logits.clone().requires_grad_(), values.clone().requires_grad_()
    loss, ref_stats = sb3_loss(ref_logits, ref_values, batch, coefs)
    loss.backward()
    result = categorical_ppo_loss(logits, values, batch, coefs)
    assert th.equal(result.grad_logits, ref_logits.grad)
    assert th.equal(result.grad_values, ref_values.grad)
    assert logged_stats([result], coefs) == [ref_stats]
    assert total_loss(ref_stats, coefs) == loss.item()


def test_logged_stats_of_many_minibatches_equal_each_alone() -> None:
    """Stacking minibatches of a size and reducing along a dimension gives each one's own values."""
    coefs = Coefficients(0.2, 0.3, 0.0, 0.5, True)
    results = []
    for n in (256, 256, 193, 256, 193):
        logits, values, batch = near_clip_batch(n, coefs)
        results.append(categorical_ppo_loss(logits * (1 + len(results)), values, batch, coefs))
    together = logged_stats(results, coefs)
    assert together == [logged_stats([r], coefs)[0] for r in results]
    assert len({tuple(row) for row in together}) == len(results)


def _policy(share: bool = True) -> TransferPPO:
    env = make_task_vec_env(get_family("cartpole"), "source", 2, seed=0)
    kwargs = source_policy_kwargs(resolve_hyperparams("cartpole"))
    kwargs["share_features_extractor"] = share
    return TransferPPO("MlpPolicy", env, seed=0, n_steps=32, batch_size=64, policy_kwargs=kwargs)


@pytest.mark.parametrize("share", [True, False])
def test_network_backward_equals_autograd(share: bool) -> None:
    policy = _policy(share).policy
    program = actor_critic_mlp(policy)
    assert program is not None
    obs = th.randn(50, 4)
    g_logits, g_values = th.randn(50, 2), th.randn(50, 1)
    if share:
        latent_pi, latent_vf = policy.mlp_extractor(policy.extract_features(obs))  # type: ignore[arg-type]
    else:
        pi_f, vf_f = policy.extract_features(obs)  # type: ignore[misc]
        latent_pi, latent_vf = policy.mlp_extractor.forward_actor(pi_f), policy.mlp_extractor.forward_critic(vf_f)
    th.autograd.backward([policy.action_net(latent_pi), policy.value_net(latent_vf)], [g_logits, g_values])
    reference = {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None}
    policy.optimizer.zero_grad()
    with th.no_grad():
        logits, values, cache = program.forward(obs)
        program.backward(cache, g_logits, g_values)
    assert th.equal(logits, policy.action_net(latent_pi)) and th.equal(values, policy.value_net(latent_vf))
    assert th.equal(program.actor_logits(obs), logits)
    ours = {name: p.grad for name, p in policy.named_parameters() if p.grad is not None}
    assert ours.keys() == reference.keys() and len(ours) == len(list(policy.parameters()))
    for name, grad in reference.items():
        assert th.equal(ours[name], grad), name


def test_numpy_tanh_is_torch_tanh_to_one_ulp_in_place() -> None:
    x = th.cat([th.randn(100_000) * 4, th.tensor([0.0, -0.0, 1e-30, 30.0, -30.0, float("inf"), -float("inf")])])
    expected = th.tanh(x)
    y = x.clone()
    assert numpy_tanh_(y) is y  # in place on a fresh pre-activation
    ulps = (y.view(th.int32).long() - expected.view(th.int32).long()).abs()
    assert ulps.max() <= 1 and ulps.sum() > 0  # numpy's own kernel (else this test would be vacuous)
    assert th.isnan(numpy_tanh_(th.tensor([float("nan")]))).all()
    # Where numpy cannot stand in, torch's tanh runs and the input is left alone.
    for other in (x.double(), x[:1000].view(100, 10)[:, ::2], x[:10].clone().requires_grad_()):
        before = other.detach().clone()
        assert th.equal(numpy_tanh_(other).detach(), th.tanh(before))
        assert th.equal(other.detach(), before)


@pytest.mark.parametrize("share", [True, False])
def test_numpy_tanh_network_is_the_same_function(share: bool) -> None:
    """``numpy_tanh=True``: the same outputs and gradients as autograd, to float rounding."""
    policy = _policy(share).policy
    exact, fast = actor_critic_mlp(policy), actor_critic_mlp(policy, numpy_tanh=True)
    assert exact is not None and fast is not None
    obs, g_logits, g_values = th.randn(64, 4), th.randn(64, 2), th.randn(64, 1)
    grads, outputs = [], []
    for program in (exact, fast):
        policy.optimizer.zero_grad()
        with th.no_grad():
            logits, values, cache = program.forward(obs)
            program.backward(cache, g_logits, g_values)
        outputs.append((logits, values))
        grads.append({name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None})
    for a, b in zip(outputs[0], outputs[1], strict=True):
        th.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        th.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6)
    assert any(not th.equal(grads[1][n], g) for n, g in grads[0].items())  # numpy's kernel did run


def test_frozen_parameters_get_no_gradient() -> None:
    policy = _policy().policy
    policy.features_extractor.trunk.requires_grad_(False)  # type: ignore[union-attr]
    program = actor_critic_mlp(policy)
    assert program is not None
    with th.no_grad():
        _, _, cache = program.forward(th.randn(8, 4))
        program.backward(cache, th.randn(8, 2), th.randn(8, 1))
    for name, p in policy.named_parameters():
        assert (p.grad is None) is name.startswith("features_extractor."), name


def test_policies_outside_the_hand_written_set_keep_autograd() -> None:
    fam = get_family("cartpole")
    multitask = make_multitask_vec_env(fam, ["long", "heavy"], n_envs_per_task=1, seed=0)
    assert actor_critic_mlp(TransferPPO(MultiTaskActorCriticPolicy, multitask, n_steps=32).policy) is None
    assert actor_critic_mlp(TransferPPO("MultiInputPolicy", multitask, n_steps=32).policy) is None
    env = make_task_vec_env(fam, "source", 1, seed=0)
    elu = TransferPPO("MlpPolicy", env, n_steps=32, policy_kwargs={"activation_fn": th.nn.ELU}).policy
    assert actor_critic_mlp(elu) is None

    class Scaled(ActorCriticPolicy):  # changes what the layers see
        def extract_features(self, obs, features_extractor=None):  # type: ignore[no-untyped-def]
            return super().extract_features(obs * 2, features_extractor)

    assert actor_critic_mlp(TransferPPO(Scaled, env, n_steps=32).policy) is None
    assert actor_critic_mlp(TransferPPO("MlpPolicy", env, n_steps=32).policy) is not None


def _adam(params: list[th.nn.Parameter], lr_scale: bool) -> th.optim.Adam:
    if lr_scale:  # two groups at different rates, as trunk_lr_scale builds them
        groups = [{"params": params[:2], "lr": 1e-3}, {"params": params[2:], "lr": 3e-4}]
        return th.optim.Adam(groups, eps=1e-5, fused=True)
    return th.optim.Adam(params, lr=1e-3, eps=1e-5, fused=True)


@pytest.mark.parametrize("lr_scale", [False, True])
def test_fused_adam_stepper_equals_optimizer_step(lr_scale: bool) -> None:
    gen = th.Generator().manual_seed(0)
    params = [th.nn.Parameter(th.randn(s, generator=gen)) for s in [(64, 4), (64,), (2, 64), (3,)]]
    twin_params = [th.nn.Parameter(p.detach().clone()) for p in params]
    ours, twin = _adam(params, lr_scale), _adam(twin_params, lr_scale)
    stepper = FusedAdamStepper(ours)
    fused = []
    for step in range(5):
        for i, (p, q) in enumerate(zip(params, twin_params, strict=True)):
            g = None if (step == 3 and i == 3) else th.randn(p.shape, generator=gen)  # a parameter without gradient
            p.grad, q.grad = g, None if g is None else g.clone()
        fused.append(stepper.step())
        twin.step()
    # Adam's first step creates the state; a change of which parameters have gradients re-plans.
    assert fused == [False, True, True, True, True]
    stepper.zero_grad()
    assert all(p.grad is None for p in params)
    for p, q in zip(params, twin_params, strict=True):
        assert th.equal(p, q)
    for a, b in zip(ours.state_dict()["state"].values(), twin.state_dict()["state"].values(), strict=True):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert th.equal(a[key], b[key]), key


@pytest.mark.parametrize("lr_scale", [False, True])
def test_clip_and_step_equals_clip_grad_norm_then_step(lr_scale: bool) -> None:
    """The flat buffer's clipping and Adam step: torch's bits with torch's norm, rounding with its own."""
    gen = th.Generator().manual_seed(1)
    shapes = [(64, 4), (64,), (2, 64), (3,)]
    params = [th.nn.Parameter(th.randn(s, generator=gen)) for s in shapes]
    twin_params = [th.nn.Parameter(p.detach().clone()) for p in params]
    any_order_params = [th.nn.Parameter(p.detach().clone()) for p in params]
    ours, twin, any_order = _adam(params, lr_scale), _adam(twin_params, lr_scale), _adam(any_order_params, lr_scale)
    stepper, loose = FusedAdamStepper(ours), FusedAdamStepper(any_order)
    flat = []
    # Below and above the threshold, a parameter without gradient (re-plans), a NaN gradient last.
    scales = [0.01, 1.0, 10.0, 0.01, 3.0, 5.0, 0.02, float("nan")]
    for step, scale in enumerate(scales):
        for i, (p, q, r) in enumerate(zip(params, twin_params, any_order_params, strict=True)):
            g = None if (step == 4 and i == 3) else th.randn(p.shape, generator=gen) * scale
            p.grad, q.grad, r.grad = g, None if g is None else g.clone(), None if g is None else g.clone()
        flat.append(stepper.clip_and_step(params, 0.5))
        loose.clip_and_step(any_order_params, 0.5, any_order=True)
        th.nn.utils.clip_grad_norm_(twin_params, 0.5)
        for p, q in zip(params, twin_params, strict=True):  # clipped gradients left in .grad, as torch leaves them
            if p.grad is None or q.grad is None:
                assert p.grad is None and q.grad is None
            else:
                th.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, equal_nan=True)
        twin.step()
        if step == len(scales) - 2:
            for p, q, r in zip(params, twin_params, any_order_params, strict=True):
                assert th.equal(p, q)
                th.testing.assert_close(r, q, rtol=1e-5, atol=1e-6)
    assert flat == [False, True, True, True, True, True, True, True]
    for p, q, r in zip(params, twin_params, any_order_params, strict=True):
        assert th.isnan(p).any() and th.isnan(q).any() and th.isnan(r).any()  # NaN propagates as in torch
    for a, b in zip(ours.state_dict()["state"].values(), twin.state_dict()["state"].values(), strict=True):
        assert th.equal(a["step"], b["step"])  # the step counters (views of one tensor) count each parameter's steps


def test_clip_and_step_clips_parameters_outside_the_optimizer_as_torch_does() -> None:
    gen = th.Generator().manual_seed(2)
    params = [th.nn.Parameter(th.randn(8, generator=gen)) for _ in range(3)]
    twins = [th.nn.Parameter(p.detach().clone()) for p in params]
    stepper, twin = FusedAdamStepper(_adam(params[:2], False)), _adam(twins[:2], False)
    for _ in range(3):
        for p, q in zip(params, twins, strict=True):
            p.grad = th.randn(8, generator=gen) * 10
            q.grad = p.grad.clone()
        assert not stepper.clip_and_step(params, 0.5)  # the third parameter's gradient counts in the norm
        th.nn.utils.clip_grad_norm_(twins, 0.5)
        twin.step()
        for p, q in zip(params, twins, strict=True):
            assert th.equal(p, q) and th.equal(p.grad, q.grad)  # type: ignore[arg-type]


def test_fused_adam_stepper_leaves_other_optimizers_to_their_step() -> None:
    p = th.nn.Parameter(th.zeros(3))
    hooked = th.optim.Adam([p], fused=True)
    hooked.register_step_post_hook(lambda *_: None)
    others = [
        th.optim.Adam([p]),  # not fused
        th.optim.AdamW([p], fused=True),
        th.optim.Adam([p], fused=True, amsgrad=True),
        hooked,
    ]
    for optimizer in others:
        p.grad = th.ones(3)
        optimizer.step()  # Adam's state exists
        stepper = FusedAdamStepper(optimizer)
        before = p.detach().clone()
        assert not stepper.step()
        assert not th.equal(p, before)  # optimizer.step() ran


def _multitask_policy(k: int, activation: type[th.nn.Module] = th.nn.Tanh) -> MultiTaskActorCriticPolicy:
    fam = get_family("cartpole")
    env = make_multitask_vec_env(fam, [v.name for v in fam.targets[:k]], n_envs_per_task=1, seed=0)
    kwargs = {"activation_fn": activation}
    model = TransferPPO(MultiTaskActorCriticPolicy, env, seed=0, n_steps=32, batch_size=32, policy_kwargs=kwargs)
    policy = model.policy
    assert isinstance(policy, MultiTaskActorCriticPolicy)
    return policy


def test_task_slots_group_samples_by_task_in_order() -> None:
    task = np.array([2, 0, 2, 2, 1, 0])
    slots, group = task_slots(task, 4)
    assert group == 3
    assert slots.tolist() == [6, 0, 7, 8, 3, 1]  # task * G + rank within the task


def test_sorted_layouts_are_each_rows_task_slots() -> None:
    rows = np.sort(np.random.default_rng(0).integers(0, 4, (50, 13)), axis=1)  # 13 rows: never equal groups
    rows[0] = [0] * 6 + [2] * 7  # tasks 1 and 3 absent
    equal = np.repeat(np.arange(4), 4)[None]  # 4 per task, sorted: the block as it is
    for layout, row in zip(sorted_layouts(rows, 4), rows, strict=True):
        slots, group = task_slots(row, 4)
        assert layout.group == group and layout.slots is not None
        assert layout.slots.tolist() == slots.tolist()
    (layout,) = sorted_layouts(equal, 4)
    assert layout.slots is None and layout.group == 4


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("frozen_trunk", [False, True])
@pytest.mark.parametrize("layout", ["mixed", "sorted"])
@pytest.mark.parametrize("numpy_tanh", [False, True])
@pytest.mark.parametrize("activation", [th.nn.Tanh, th.nn.ReLU])
def test_multitask_backward_matches_autograd(
    k: int, frozen_trunk: bool, layout: str, numpy_tanh: bool, activation: type[th.nn.Module]
) -> None:
    """Mixed tasks go through a padded (K, G) block; sorted, equal groups are the block as they are."""
    policy = _multitask_policy(k, activation)
    if frozen_trunk:
        policy.features_extractor.trunk.requires_grad_(False)  # type: ignore[union-attr]
    program = multitask_mlp(policy, numpy_tanh)
    assert program is not None
    gen = th.Generator().manual_seed(k)
    if layout == "sorted":
        n, task = 60, th.arange(k).repeat_interleave(60 // k)
    else:
        n, task = 61, th.randint(0, k, (61,), generator=gen)
    obs = {"obs": th.randn(n, 4, generator=gen), "task_id": task.float().unsqueeze(1)}
    g_logits, g_values = th.randn(n, 2, generator=gen), th.randn(n, 1, generator=gen)
    latent_pi, latent_vf = policy.mlp_extractor(policy.extract_features(obs))  # type: ignore[arg-type]
    logits_ref, values_ref = policy.action_net(latent_pi), policy.value_net(latent_vf)
    th.autograd.backward([logits_ref, values_ref], [g_logits, g_values])
    reference = {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None}
    policy.optimizer.zero_grad()
    with th.no_grad():  # as lean_train runs it (numpy's tanh takes tensors outside autograd only)
        logits, values, cache = program.forward(obs)
        program.backward(cache, g_logits, g_values)
        actor_logits = program.actor_logits(obs)
    assert (cache.layout.slots is None) is (k == 1 or layout == "sorted")
    th.testing.assert_close(logits, logits_ref, rtol=1e-5, atol=1e-6)
    assert th.equal(actor_logits, logits)
    th.testing.assert_close(values, values_ref, rtol=1e-5, atol=1e-6)
    ours = {name: p.grad for name, p in policy.named_parameters() if p.grad is not None}
    assert ours.keys() == reference.keys()
    assert any(name.startswith("features_extractor.") for name in ours) is not frozen_trunk
    for name, grad in reference.items():
        assert grad.abs().max() > 1e-3, name  # a real gradient, far above the tolerance
        th.testing.assert_close(ours[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_multitask_policies_outside_the_program_keep_autograd() -> None:
    obs_space = gym.spaces.Dict({"obs": gym.spaces.Box(-1, 1, (3,)), "task_id": gym.spaces.Discrete(2)})
    box = gym.spaces.Box(-1, 1, (3,))
    cross = {"task_obs_dims": [3, 2], "task_action_dims": [2, 3]}  # adapters and masked actions
    for space in (gym.spaces.Discrete(3), box):
        assert multitask_mlp(MultiTaskActorCriticPolicy(obs_space, space, lambda _: 1e-3, **cross)) is None
        assert multitask_mlp(MultiTaskActorCriticPolicy(obs_space, space, lambda _: 1e-3)) is not None
    sde = MultiTaskActorCriticPolicy(obs_space, box, lambda _: 1e-3, use_sde=True)
    assert multitask_mlp(sde) is not None  # the network; lean.gaussian_hand_written checks which gSDE


def test_gradient_hooks_run_as_autograd_runs_them() -> None:
    policy = _policy().policy
    program = actor_critic_mlp(policy)
    assert program is not None
    weight = policy.features_extractor.trunk[0].weight  # type: ignore[index,union-attr]
    seen: list[th.Tensor] = []
    weight.register_hook(lambda g: g * 2)
    weight.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.clone()))
    obs, g_logits, g_values = th.randn(8, 4), th.randn(8, 2), th.randn(8, 1)
    latent_pi, latent_vf = policy.mlp_extractor(policy.extract_features(obs))  # type: ignore[arg-type]
    th.autograd.backward([policy.action_net(latent_pi), policy.value_net(latent_vf)], [g_logits, g_values])
    reference = weight.grad.clone()  # type: ignore[union-attr]
    policy.optimizer.zero_grad()
    with th.no_grad():
        _, _, cache = program.forward(obs)
        program.backward(cache, g_logits, g_values)
    assert th.equal(weight.grad, reference)  # type: ignore[arg-type]
    assert len(seen) == 2 and th.equal(seen[0], seen[1])


def test_double_precision_policies_keep_autograd() -> None:
    from rltransfer.lean import categorical_logits, hand_written

    policy = _policy().policy
    assert hand_written(policy, categorical_logits(policy)) is not None
    policy.double()
    assert hand_written(policy, categorical_logits(policy)) is None
