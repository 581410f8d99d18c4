"""The lean PPO update is bit-identical to SB3's ``PPO.train`` on identical data."""

from __future__ import annotations

import copy
import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from masked import MaskedPolicy
from rltransfer.envs import get_family
from rltransfer.envs.multitask import make_multitask_vec_env, make_task_vec_env
from rltransfer.policies import MultiTaskActorCriticPolicy
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from rltransfer import lean as lean_module
from rltransfer.devices import device_record
from rltransfer.grad_clip import clip_grad_norm
from rltransfer.hyperparams import ppo_kwargs, resolve_hyperparams
from rltransfer.lean import FlatRollout, categorical_logits, plain_mlp, program_for, rounding_only
from rltransfer.multitask_backprop import multitask_mlp
from rltransfer.ppo import TransferPPO
from rltransfer.pretraining import source_policy_kwargs


class Reach(gym.Env[np.ndarray, np.ndarray]):
    """Three-dimensional actions, rewarded for matching the observation (episodes of 16 steps)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t, self.target = 0, self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return self.target, {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = -float(np.abs(action - self.target).sum())
        self.t, self.target = self.t + 1, self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return self.target, reward, False, self.t >= 16, {}


class MaskedNoHook(MaskedPolicy):
    action_logits = None  # type: ignore[assignment]


ZOO = ppo_kwargs(resolve_hyperparams("cartpole"))  # RL Zoo CartPole: 8 envs x 32 steps, 1 x 256 minibatch, 20 epochs


def build(case: str) -> TransferPPO:
    """A model that has trained a little (non-trivial weights and Adam moments)."""
    fam = get_family("pendulum" if case.startswith("pendulum") else "cartpole")
    kwargs: dict[str, Any] = {**ZOO, "n_epochs": 4}
    if case == "zoo-source":
        env = make_task_vec_env(fam, "source", 8, seed=0)
        model = TransferPPO(
            "MlpPolicy", env, seed=0, policy_kwargs=source_policy_kwargs(resolve_hyperparams("cartpole")), **kwargs
        )
        return model
    if case.startswith("single-"):  # single-task policies the hand-written backward runs
        env = make_task_vec_env(fam, "source", 6, seed=0)
        kwargs.update(batch_size=80, n_epochs=3)  # 192 samples: minibatches of 80, 80 and 32
        policy_kwargs = source_policy_kwargs(resolve_hyperparams("cartpole"))
        if case == "single-sb3-mlp":
            return TransferPPO("MlpPolicy", env, seed=0, **kwargs)
        if case == "single-relu-entropy-clipvf":
            kwargs.update(ent_coef=0.01, clip_range_vf=0.1, normalize_advantage=False)
            policy_kwargs.update(activation_fn=th.nn.ReLU, features_extractor_kwargs={"activation_fn": th.nn.ReLU})
        if case == "single-separate-extractors":
            policy_kwargs["share_features_extractor"] = False
        if case == "single-target-kl":
            kwargs["target_kl"] = 1e-7
        model = TransferPPO("MlpPolicy", env, seed=0, policy_kwargs=policy_kwargs, **kwargs)
        if case == "single-frozen-first-layer":
            model.policy.features_extractor.trunk[0].requires_grad_(False)
        if case == "single-l2sp-hooks":
            for p in model.policy.features_extractor.trunk.parameters():
                anchor = p.detach().clone()
                p.register_hook(lambda g, p=p, a=anchor: g + 0.05 * (p.detach() - a))
        return model
    if case == "acrobot-masked":
        env = make_task_vec_env(get_family("acrobot"), "source", 4, seed=0)
        return TransferPPO(MaskedPolicy, env, seed=0, n_steps=32, batch_size=64, n_epochs=2, ent_coef=0.01)
    if case.startswith(("pendulum", "gaussian-3d")):
        env = make_task_vec_env(fam, "source", 2, seed=0)
        kwargs = {"n_steps": 64, "batch_size": 48, "n_epochs": 2, "use_sde": "-sde" in case}
        if case == "pendulum-sde-entropy-partial-std":  # one std per latent feature, broadcast to the actions
            kwargs.update(ent_coef=0.01, clip_range_vf=0.2, policy_kwargs={"full_std": False})
        if case == "pendulum-sde-expln":  # outside the hand-written loss: autograd
            kwargs["policy_kwargs"] = {"use_expln": True}
        if case == "pendulum-trunk-entropy-clipvf":  # rltransfer's trunk policy, the entropy's gradient
            kwargs.update(ent_coef=0.01, clip_range_vf=0.2)
            policy_kwargs = source_policy_kwargs(resolve_hyperparams("pendulum"))
            return TransferPPO("MlpPolicy", env, seed=0, policy_kwargs=policy_kwargs, **kwargs)
        if case.startswith("gaussian-3d"):  # three action dimensions: sums over them, log_std broadcast
            env = DummyVecEnv([lambda: Monitor(Reach())] * 2)
            kwargs.update(ent_coef=0.02, normalize_advantage=False)
        model = TransferPPO("MlpPolicy", env, seed=0, **kwargs)
        if case == "pendulum-frozen-log-std":
            model.policy.log_std.requires_grad_(False)
        return model
    if case.startswith("multitask-gaussian"):
        pendulum = get_family("pendulum")
        env = make_multitask_vec_env(pendulum, [v.name for v in pendulum.targets[:3]], n_envs_per_task=2, seed=0)
        kwargs = {"n_steps": 64, "batch_size": 48, "n_epochs": 2, "ent_coef": 0.01, "use_sde": case.endswith("sde")}
        return TransferPPO(MultiTaskActorCriticPolicy, env, seed=0, policy_kwargs={"trunk_arch": [32, 32]}, **kwargs)
    env = make_multitask_vec_env(fam, ["long", "heavy", "longer"], n_envs_per_task=2, seed=0)
    kwargs.update(batch_size=80, n_epochs=3)  # 192 samples: minibatches of 80, 80 and 32
    if case == "multitask-entropy":
        kwargs["ent_coef"] = 0.01
    if case == "multitask-clipvf":
        kwargs.update(clip_range_vf=0.1, normalize_advantage=False)
    if case == "multitask-target-kl":
        kwargs["target_kl"] = 1e-7
    if case == "multitask-plain":
        kwargs["learning_rate"] = 3e-4
    if case == "multitask-whole-batch":  # one minibatch of 64 per task: the block needs no copies
        kwargs["batch_size"] = 192
    if case == "multiinput-sb3":
        return TransferPPO("MultiInputPolicy", env, seed=0, **kwargs)
    return TransferPPO(MultiTaskActorCriticPolicy, env, seed=0, policy_kwargs={"trunk_arch": [32, 32]}, **kwargs)


def filled(model: TransferPPO) -> TransferPPO:
    model.learn(2 * model.n_steps * model.n_envs)  # two updates
    total, callback = model._setup_learn(10_000, CallbackList([]), reset_num_timesteps=False)
    callback.on_training_start(locals(), globals())
    model._update_current_progress_remaining(model.num_timesteps, total)  # learning rate and clip range > 0
    assert model.env is not None
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    return model


def one_update(model: TransferPPO, lean: bool, start: dict[str, Any]) -> tuple[dict[str, th.Tensor], dict[str, Any]]:
    """Restore ``start``, run one ``train()`` (lean or SB3's), return weights and logged values."""
    model.policy.load_state_dict(start["policy"])
    model.policy.optimizer.load_state_dict(copy.deepcopy(start["optimizer"]))
    model.rollout_buffer = copy.deepcopy(start["buffer"])
    model._n_updates = start["n_updates"]
    np.random.set_state(start["np_random"])
    th.set_rng_state(start["torch_random"])
    model.logger.name_to_value.clear()
    model.lean = lean
    model.train()
    weights = {k: v.clone() for k, v in model.policy.state_dict().items()}
    weights["torch_random_after"] = th.get_rng_state()  # the same draws from torch's generator (none in SB3 2.x)
    moments = model.policy.optimizer.state_dict()["state"]
    for i, state in moments.items():
        weights[f"adam{i}.exp_avg"] = state["exp_avg"].clone()
        weights[f"adam{i}.exp_avg_sq"] = state["exp_avg_sq"].clone()
    return weights, dict(model.logger.name_to_value)


MULTITASK = [
    "multitask-plain",
    "multitask-entropy",
    "multitask-clipvf",
    "multitask-target-kl",
    "multitask-whole-batch",
    "multitask-gaussian",
    "multitask-gaussian-sde",  # the noise's latent: SB3's K-block latent, per task here
]
GAUSSIAN = [  # hand-written
    "pendulum",
    "pendulum-trunk-entropy-clipvf",
    "pendulum-frozen-log-std",
    "gaussian-3d",
    "pendulum-sde",
    "pendulum-sde-entropy-partial-std",
    "gaussian-3d-sde",
]
CASES = [
    "zoo-source",
    "single-sb3-mlp",
    "single-relu-entropy-clipvf",
    "single-separate-extractors",
    "single-target-kl",
    "single-frozen-first-layer",
    "single-l2sp-hooks",
    "acrobot-masked",
    "multiinput-sb3",
    *MULTITASK,
    *GAUSSIAN,
    "pendulum-sde-expln",
]


def start_of(model: TransferPPO) -> dict[str, Any]:
    return {
        "policy": copy.deepcopy(model.policy.state_dict()),
        "optimizer": copy.deepcopy(model.policy.optimizer.state_dict()),
        "buffer": copy.deepcopy(model.rollout_buffer),
        "n_updates": model._n_updates,
        "np_random": np.random.get_state(),
        "torch_random": th.get_rng_state(),
    }


@pytest.mark.parametrize("case", CASES)
def test_lean_update_is_bit_identical_to_sb3(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The autograd lean path, and the single-task hand-written one, are bit-identical to SB3."""
    if case in MULTITASK:  # the multi-task hand-written path agrees to rounding (test below)
        monkeypatch.setattr(lean_module, "multitask_mlp", lambda *args: None)
    model = build(case)
    model.numpy_tanh = False  # torch's tanh, as the modules compute it (numpy's: test below)
    model = filled(model)
    start = start_of(model)
    reference, ref_log = one_update(model, lean=False, start=start)
    lean, lean_log = one_update(model, lean=True, start=start)
    assert reference.keys() == lean.keys()
    changed = [k for k, v in start["policy"].items() if not th.equal(reference[k], v)]
    assert changed, "the update changed no weight; the comparison would be vacuous"
    for key in reference:
        assert th.equal(reference[key], lean[key]), key
    assert ref_log == lean_log
    if case.endswith("target-kl"):
        assert model._n_updates < start["n_updates"] + model.n_epochs  # stopped early
    exact_hand_written = case == "zoo-source" or case.startswith("single-")
    assert (plain_mlp(model.policy, categorical_logits(model.policy)) is not None) is exact_hand_written
    assert (lean_module.gaussian_hand_written(model.policy) is not None) is (case in GAUSSIAN)


SINGLE_NUMPY_TANH = ["zoo-source", "single-sb3-mlp", "pendulum", "pendulum-sde", "gaussian-3d"]


@pytest.mark.parametrize("case", [*MULTITASK, *SINGLE_NUMPY_TANH])
def test_hand_written_update_matches_sb3_to_rounding(case: str) -> None:
    """The default lean update (numpy's tanh; multi-task: grouped per-task heads, which sum in
    another order than SB3's K-block output layers) agrees with SB3's to float rounding."""
    model = filled(build(case))
    policy = model.policy
    assert model.numpy_tanh
    program = lean_module.program_for(policy, model.numpy_tanh)
    assert program is not None
    chains = [chain for chain in vars(program).values() if hasattr(chain, "layers")]
    assert "numpy_tanh" in {layer.act for chain in chains for layer in chain.layers}
    start = start_of(model)
    reference, ref_log = one_update(model, lean=False, start=start)
    lean, lean_log = one_update(model, lean=True, start=start)
    for key, weight in start["policy"].items():
        moved = (reference[key] - weight).abs().max().item()
        assert moved > 2e-5 or key.startswith("log_std"), key  # far above the tolerance below
        th.testing.assert_close(lean[key], reference[key], rtol=1e-5, atol=1e-6)
    assert ref_log.keys() == lean_log.keys()
    for key, value in ref_log.items():
        # The policy loss is a float32 mean of O(1) terms that cancel (in the first epoch, the mean
        # of normalised advantages, ~1e-6): summed in another order it moves by ~1e-7 per term.
        cancels = key == "train/policy_gradient_loss"
        assert lean_log[key] == pytest.approx(value, rel=1e-3, abs=1e-5 if cancels else 1e-7), key
    if case.endswith("target-kl"):
        assert model._n_updates == start["n_updates"] + 1  # the same early stop


@pytest.mark.parametrize("case", ["single-frozen-first-layer", "single-l2sp-hooks", "multitask-plain", "pendulum"])
def test_flat_gradient_step_equals_the_per_tensor_step(case: str) -> None:
    """``flat_step`` (one flat buffer clipped and stepped): the per-tensor step's bits where the
    program is exact (torch's norm), its values to rounding where sums may run in any order."""
    model = build(case)
    exact = case.startswith("single-")
    model.numpy_tanh = not exact
    model = filled(model)
    start = start_of(model)
    results = []
    for flat in (False, True):
        model.flat_step = flat
        results.append(one_update(model, lean=True, start=start))
    (per_tensor, per_tensor_log), (flat_weights, flat_log) = results
    assert any(not th.equal(per_tensor[k], v) for k, v in start["policy"].items())
    for key, value in per_tensor.items():
        if exact:
            assert th.equal(flat_weights[key], value), key
        else:
            th.testing.assert_close(flat_weights[key], value, rtol=1e-5, atol=1e-6)
    if exact:
        assert flat_log == per_tensor_log
    steps = [s["step"] for s in model.policy.optimizer.state_dict()["state"].values()]
    assert len({s.data_ptr() - s.storage_offset() * s.element_size() for s in steps}) == 1  # one tensor's views


def test_minibatches_sorted_by_task_hold_the_same_samples() -> None:
    """``FlatRollout(group_by=...)``: each minibatch's rows in task order (stable), nothing else changed."""
    model = filled(build("multitask-plain"))
    indices = np.random.default_rng(0).permutation(model.rollout_buffer.buffer_size * model.n_envs)[:80]
    plain = FlatRollout(copy.deepcopy(model.rollout_buffer), discrete=True)
    grouped = FlatRollout(copy.deepcopy(model.rollout_buffer), discrete=True, group_by="task_id")
    (obs, batch), (sorted_obs, sorted_batch) = plain.sample(indices), grouped.sample(indices)
    task = sorted_obs["task_id"].flatten()
    assert th.all(task[1:] >= task[:-1]) and len(th.unique(task)) == 3
    order = th.from_numpy(np.argsort(obs["task_id"].flatten().numpy(), kind="stable"))
    for key in obs:
        assert th.equal(sorted_obs[key], obs[key][order]), key
    for name in ("actions", "old_values", "old_log_prob", "advantages", "returns"):
        assert th.equal(getattr(sorted_batch, name), getattr(batch, name)[order]), name


def test_epoch_minibatches_are_the_sorted_samples_with_their_layouts() -> None:
    """``minibatches``: each slice of the permutation sorted by task (the short last one too), with its layout."""
    model = filled(build("multitask-plain"))
    size = model.rollout_buffer.buffer_size * model.n_envs
    indices = np.random.default_rng(1).permutation(size)
    grouped = FlatRollout(copy.deepcopy(model.rollout_buffer), discrete=True, group_by="task_id", n_groups=3)
    program = multitask_mlp(model.policy)
    assert program is not None
    batches = list(grouped.minibatches(indices, 40))
    assert len(batches) == -(-size // 40) and size % 40  # a shorter last minibatch
    for start, (obs, batch, layout) in zip(range(0, size, 40), batches, strict=True):
        ref_obs, ref_batch = grouped.sample(indices[start : start + 40])
        assert all(th.equal(obs[key], ref_obs[key]) for key in obs)
        assert th.equal(batch.advantages, ref_batch.advantages) and th.equal(batch.actions, ref_batch.actions)
        assert layout is not None
        expected = program._layout(obs["task_id"], th.device("cpu"))
        assert layout.group == expected.group
        assert (layout.slots is None) is (expected.slots is None)
        if layout.slots is not None and expected.slots is not None:
            assert th.equal(layout.slots, expected.slots)


@pytest.mark.parametrize("task_major", [True, False])
def test_a_whole_rollout_minibatch_is_gathered_once_in_task_order(task_major: bool) -> None:
    """``any_order``: an epoch's one minibatch of all rows is the rollout sorted by task, reused every epoch."""
    buffer = filled(build("multitask-plain")).rollout_buffer
    if not task_major:  # envs in descending task order: the rows must be gathered
        for key, array in buffer.observations.items():
            buffer.observations[key] = array[:, ::-1].copy()
        for name in ("actions", "values", "log_probs", "advantages", "returns"):
            setattr(buffer, name, getattr(buffer, name)[:, ::-1].copy())
    size = buffer.buffer_size * buffer.n_envs
    whole = FlatRollout(copy.deepcopy(buffer), discrete=True, group_by="task_id", n_groups=3, any_order=True)
    reference = FlatRollout(copy.deepcopy(buffer), discrete=True, group_by="task_id", n_groups=3)
    rng = np.random.default_rng(2)
    [(obs, batch, layout)] = whole.minibatches(rng.permutation(size), size)
    [(again, _, _)] = whole.minibatches(rng.permutation(size), size + 8)
    assert again is obs and (obs is whole.observations) is task_major  # task-major rows serve as they are
    ref_obs, ref_batch = reference.sample(np.arange(size))  # all rows, stably sorted by task
    assert all(th.equal(obs[key], ref_obs[key]) for key in obs)
    for name in ("actions", "old_values", "old_log_prob", "advantages", "returns"):
        assert th.equal(getattr(batch, name), getattr(ref_batch, name)), name
    assert layout is not None and layout.slots is None and layout.group == size // 3  # equal groups
    # Shorter minibatches (and a subset of rows) take the general path.
    [(part, _, _)] = whole.minibatches(np.arange(size - 1), size)
    assert part["task_id"].shape[0] == size - 1


def test_any_order_minibatches_of_task_major_rows_are_sorted_by_row() -> None:
    """``any_order`` over rows in task order: each slice's rows sorted by number (so by task), with its layout."""
    model = filled(build("multitask-plain"))
    size = model.rollout_buffer.buffer_size * model.n_envs
    indices = np.random.default_rng(3).permutation(size)
    data = FlatRollout(copy.deepcopy(model.rollout_buffer), discrete=True, group_by="task_id", any_order=True)
    reference = FlatRollout(copy.deepcopy(model.rollout_buffer), discrete=True)
    program = multitask_mlp(model.policy)
    assert program is not None and data._rows_in_task_order
    batches = list(data.minibatches(indices, 40))
    assert len(batches) == -(-size // 40)
    for start, (obs, batch, layout) in zip(range(0, size, 40), batches, strict=True):
        ref_obs, ref_batch = reference.sample(np.sort(indices[start : start + 40]))
        assert all(th.equal(obs[key], ref_obs[key]) for key in obs)
        assert th.equal(batch.returns, ref_batch.returns) and th.equal(batch.actions, ref_batch.actions)
        task = obs["task_id"].flatten()
        assert th.all(task[1:] >= task[:-1])
        expected = program._layout(obs["task_id"], th.device("cpu"))
        assert layout is not None and layout.group == expected.group
        assert (layout.slots is None) is (expected.slots is None)
        if layout.slots is not None and expected.slots is not None:
            assert th.equal(layout.slots, expected.slots)


def test_only_programs_exact_to_rounding_take_rows_in_any_order() -> None:
    """``rounding_only``: torch's tanh or ReLU single-task programs keep SB3's row order (bit-identity)."""
    env = make_task_vec_env(get_family("cartpole"), "source", 2, seed=0)
    tanh = TransferPPO("MlpPolicy", env, n_steps=32, batch_size=64).policy
    relu = TransferPPO("MlpPolicy", env, n_steps=32, batch_size=64, policy_kwargs={"activation_fn": th.nn.ReLU}).policy
    assert not rounding_only(program_for(tanh)) and rounding_only(program_for(tanh, numpy_tanh=True))
    assert not rounding_only(program_for(relu, numpy_tanh=True))  # numpy's tanh has nothing to replace
    assert rounding_only(multitask_mlp(build("multitask-plain").policy)) and not rounding_only(None)


def test_plain_sb3_ppo_and_lean_transfer_ppo_learn_the_same() -> None:
    """End to end on the RL Zoo config: plain ``PPO`` and ``TransferPPO`` give the same weights."""
    fam = get_family("cartpole")
    weights = []
    for cls in (PPO, TransferPPO):
        env = make_task_vec_env(fam, "source", 8, seed=1)
        extra = {"fused_adam": False} if cls is TransferPPO else {}
        model = cls("MlpPolicy", env, seed=1, **{**ZOO, "n_epochs": 5}, **extra)
        if isinstance(model, TransferPPO):
            model.numpy_tanh = False
        model.learn(1024)
        weights.append(model.policy.state_dict())
    for key in weights[0]:
        assert th.equal(weights[0][key], weights[1][key]), key


def test_fused_adam_matches_sb3_adam_to_float_tolerance() -> None:
    """One RL Zoo CartPole update from the same state: fused and SB3's Adam agree to rounding."""
    fam = get_family("cartpole")
    weights = []
    for fused in (False, True):
        env = make_task_vec_env(fam, "source", 8, seed=2)
        model = TransferPPO("MlpPolicy", env, seed=2, fused_adam=fused, **ZOO)
        assert model.policy.optimizer.defaults["fused"] is (True if fused else None)
        assert model.policy.optimizer.defaults["eps"] == 1e-5
        model.learn(256)  # one rollout, one update of 20 Adam steps
        weights.append(model.policy.state_dict())
    for key in weights[0]:
        th.testing.assert_close(weights[0][key], weights[1][key], rtol=1e-5, atol=1e-6)


def test_device_cpu_is_honoured_explicitly(tiny: dict[str, Any]) -> None:
    from rltransfer.finetuning import finetune
    from rltransfer.pretraining import pretrain

    source = pretrain("cartpole", seed=0, timesteps=64, hyperparams=tiny, device="cpu")
    assert source.model.device == th.device("cpu")
    assert all(p.device.type == "cpu" for p in source.model.policy.parameters())
    target = finetune("cartpole", ["long"], None, "scratch", timesteps=64, hyperparams=tiny, device="cpu")
    assert target.model.device == th.device("cpu")
    # The manifests say where each trained (``auto`` resolves before training: SB3 would fall back silently).
    assert source.manifest["device"] == target.manifest["device"] == device_record(th.device("cpu"))
    auto = finetune("cartpole", ["long"], None, "scratch", timesteps=64, hyperparams=tiny, device="auto")
    assert auto.manifest["device"]["type"] == ("cuda" if th.cuda.is_available() else "cpu")


def test_lean_path_is_taken_only_where_it_is_exact() -> None:
    env = make_task_vec_env(get_family("acrobot"), "source", 2, seed=0)
    plain = TransferPPO("MlpPolicy", env, n_steps=32, batch_size=64).policy
    assert categorical_logits(plain) is plain.action_net
    masked = TransferPPO(MaskedPolicy, env, n_steps=32, batch_size=64).policy
    assert categorical_logits(masked) == masked.action_logits  # type: ignore[attr-defined]
    # An override of the distribution without the hook falls back to SB3's own code.
    assert categorical_logits(TransferPPO(MaskedNoHook, env, n_steps=32, batch_size=64).policy) is None
    pendulum = make_task_vec_env(get_family("pendulum"), "source", 2, seed=0)
    assert categorical_logits(TransferPPO("MlpPolicy", pendulum, n_steps=32, batch_size=64).policy) is None


def test_clip_grad_norm_matches_torch() -> None:
    gen = th.Generator().manual_seed(0)
    shapes = [(64, 4), (64,), (2, 64), (2,)]
    # Below and above the threshold, a non-finite gradient, and thresholds that are not powers of 2.
    for scale, max_norm in [(0.01, 0.5), (100.0, 0.5), (3.0, 0.7), (1e-3, 1e-3), (1.0, 5.0), (float("nan"), 0.5)]:
        for _ in range(20):
            grads = [th.randn(s, generator=gen) * scale for s in shapes]
            ours = [th.nn.Parameter(th.zeros(s)) for s in shapes]
            torch_ = [th.nn.Parameter(th.zeros(s)) for s in shapes]
            for a, b, g in zip(ours, torch_, grads, strict=True):
                a.grad, b.grad = g.clone(), g.clone()
            clip_grad_norm(ours, max_norm)
            th.nn.utils.clip_grad_norm_(torch_, max_norm)
            for a, b in zip(ours, torch_, strict=True):
                assert a.grad is not None and b.grad is not None
                if math.isnan(scale):
                    assert a.grad.isnan().all() and b.grad.isnan().all()
                else:
                    assert th.equal(a.grad, b.grad), (scale, max_norm)
