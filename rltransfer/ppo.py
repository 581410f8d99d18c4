"""PPO with per-parameter-group learning-rate scales and lean rollouts and updates.

Lean (``TransferPPO.lean``, default on) means SB3's ``PPO.train`` and ``collect_rollouts``
with their per-step overhead removed and the same arithmetic: the rollout buffer is turned
into tensors once per update instead of once per minibatch (same ``np.random.permutation``
draws, so the same minibatches); a categorical policy's sampling, log-probabilities and
entropy use exactly the operations ``torch.distributions.Categorical`` performs, without
building distribution objects or validating arguments; with ``ent_coef == 0`` the entropy is
computed outside the autograd graph (its gradient is exactly zero); the gradient norm is
clipped with ``clip_grad_norm_``'s own foreach kernels minus its grouping overhead. Rollouts,
losses, gradients, weights and logged values are bit-identical to SB3's
(``tests/test_ppo_lean.py``).

``fused_adam`` (default on) builds Adam with ``fused=True``: the same update rule in one
kernel per parameter instead of a dozen, equal to SB3's ``foreach=False`` Adam to float
rounding (about 1e-7 relative per step), so learning curves agree within seed noise but
weights are not bit-identical to plain SB3. Pass ``fused_adam=False`` for bit-identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.utils import explained_variance, get_device, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F


class TransferPPO(PPO):
    """SB3 PPO whose optimizer groups may carry an ``lr_scale``.

    SB3's ``_update_learning_rate`` sets every group's rate to the schedule's value before
    each update, which would erase per-layer rates; here each group gets
    ``schedule(progress) * lr_scale``. Saved zips load with plain ``PPO.load`` (the optimizer
    state is saved in the single-group layout plain PPO builds).

    Args:
        fused_adam: build SB3's default Adam (``eps=1e-5``) with ``fused=True`` where the
            installed torch supports it on the model's device (see the module docstring).

    Attributes:
        lean: lean rollouts and updates (default); ``False`` runs SB3's own code.
    """

    lean: bool = True

    def __init__(self, *args: Any, fused_adam: bool = True, **kwargs: Any) -> None:
        if fused_adam and fused_adam_supported(kwargs.get("device", "auto")):
            kwargs["policy_kwargs"] = with_fused_adam(kwargs.get("policy_kwargs"))
        super().__init__(*args, **kwargs)

    def train(self) -> None:
        if self.lean:
            lean_train(self)
        else:
            super().train()

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """SB3's ``collect_rollouts``; lean for categorical policies (same samples, same buffer)."""
        if not (self.lean and categorical_fast_path(self.policy)) or self.use_sde:
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        # Mirrors OnPolicyAlgorithm.collect_rollouts (SB3 2.x) line by line; the local names
        # are the same because callbacks read them through ``update_locals(locals())``.
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        n_steps = 0
        rollout_buffer.reset()
        callback.on_rollout_start()
        while n_steps < n_rollout_steps:
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                sampled, values, log_probs = sample_categorical(self.policy, obs_tensor)
            actions = sampled.cpu().numpy()
            clipped_actions = actions
            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            n_steps += 1
            actions = actions.reshape(-1, 1)
            for idx in np.flatnonzero(dones):  # SB3 visits every env; only finished ones matter
                if infos[idx].get("terminal_observation") is not None and infos[idx].get("TimeLimit.truncated", False):
                    terminal_obs = self.policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
                    with th.no_grad():
                        terminal_value = self.policy.predict_values(terminal_obs)[0]
                    rewards[idx] += self.gamma * terminal_value
            rollout_buffer.add(self._last_obs, actions, rewards, self._last_episode_starts, values, log_probs)  # type: ignore[arg-type]
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
        with th.no_grad():
            values = self.policy.predict_values(obs_as_tensor(new_obs, self.device))  # type: ignore[arg-type]
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        lr = self.lr_schedule(self._current_progress_remaining)
        self.logger.record("train/learning_rate", lr)
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)

    def set_param_groups(self, groups: Sequence[tuple[str, Sequence[th.nn.Parameter], float]]) -> None:
        """Rebuild the policy optimizer with named groups ``(name, params, lr_scale)``.

        Every policy parameter must be in exactly one group (frozen ones included, so that
        unfreezing later needs no new optimizer; Adam skips parameters without gradients).
        """
        policy = self.policy
        seen: set[int] = set()
        param_groups = []
        for name, params, scale in groups:
            ids = {id(p) for p in params}
            if ids & seen:
                raise ValueError(f"parameter group '{name}' overlaps an earlier group")
            seen |= ids
            if params:
                param_groups.append({"params": list(params), "name": name, "lr_scale": float(scale)})
        missing = [n for n, p in policy.named_parameters() if id(p) not in seen]
        if missing:
            raise ValueError(f"parameters in no group: {missing}")
        lr = self.lr_schedule(1.0)
        policy.optimizer = policy.optimizer_class(param_groups, lr=lr, **policy.optimizer_kwargs)  # type: ignore[call-arg]

    def get_parameters(self) -> dict[str, dict]:
        params = super().get_parameters()
        optimizer = self.policy.optimizer
        if len(optimizer.param_groups) > 1:
            # Plain PPO.load expects the single-group optimizer SB3 builds from
            # ``policy.parameters()``; save the same moments in that layout.
            params["policy.optimizer"] = single_group_state(optimizer, list(self.policy.parameters()))
        return params


def single_group_state(optimizer: th.optim.Optimizer, params: Sequence[th.nn.Parameter]) -> dict:
    """``optimizer.state_dict()`` re-indexed as one group over ``params`` (in that order).

    Per-group settings other than the first group's (``lr_scale``, rates) are dropped: the
    learning rate is re-set from the schedule at every update anyway.
    """
    state = optimizer.state_dict()
    position = {id(p): i for i, p in enumerate(params)}
    old_index = {}
    for group, saved in zip(optimizer.param_groups, state["param_groups"], strict=True):
        for p, idx in zip(group["params"], saved["params"], strict=True):
            old_index[idx] = position[id(p)]
    first = {k: v for k, v in state["param_groups"][0].items() if k not in ("params", "name", "lr_scale")}
    return {
        "state": {old_index[i]: v for i, v in state["state"].items()},
        "param_groups": [{**first, "params": list(range(len(params)))}],
    }


def fused_adam_supported(device: th.device | str) -> bool:
    """Whether torch's fused Adam runs on ``device`` (CPU needs torch >= 2.4)."""
    try:
        th.optim.Adam([th.nn.Parameter(th.zeros(1, device=get_device(device)))], fused=True)
    except (RuntimeError, ValueError):
        return False
    return True


def with_fused_adam(policy_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """``policy_kwargs`` whose (default) Adam is fused, keeping SB3's ``eps=1e-5`` default."""
    kwargs = dict(policy_kwargs or {})
    if kwargs.get("optimizer_class", th.optim.Adam) is not th.optim.Adam:
        return kwargs
    # SB3 sets eps=1e-5 only when optimizer_kwargs is None, so pass it along explicitly.
    optimizer_kwargs = dict(kwargs["optimizer_kwargs"]) if kwargs.get("optimizer_kwargs") else {"eps": 1e-5}
    if not optimizer_kwargs.get("foreach"):
        optimizer_kwargs.setdefault("fused", True)
    kwargs["optimizer_kwargs"] = optimizer_kwargs
    return kwargs


class FlatRollout:
    """A full rollout buffer as flat tensors, converted once; minibatches are index selections.

    Flattening is done in the buffer itself, as ``RolloutBuffer.get`` does (``explained_variance``
    later reads the flattened arrays), and values equal what ``get`` would yield.
    """

    def __init__(self, buffer: RolloutBuffer) -> None:
        names = ["actions", "values", "log_probs", "advantages", "returns"]
        if not buffer.generator_ready:
            if isinstance(buffer, DictRolloutBuffer):
                for key, obs in buffer.observations.items():
                    buffer.observations[key] = buffer.swap_and_flatten(obs)
            else:
                names = ["observations", *names]
            for name in names:
                buffer.__dict__[name] = buffer.swap_and_flatten(buffer.__dict__[name])
            buffer.generator_ready = True
        self.size = buffer.buffer_size * buffer.n_envs
        self.observations: th.Tensor | dict[str, th.Tensor]
        if isinstance(buffer, DictRolloutBuffer):
            self.observations = {k: buffer.to_torch(v) for k, v in buffer.observations.items()}
        else:
            self.observations = buffer.to_torch(buffer.observations)
        self.actions = buffer.to_torch(buffer.actions)
        self.old_values = buffer.to_torch(buffer.values.flatten())
        self.old_log_prob = buffer.to_torch(buffer.log_probs.flatten())
        self.advantages = buffer.to_torch(buffer.advantages.flatten())
        self.returns = buffer.to_torch(buffer.returns.flatten())

    def sample(self, indices: np.ndarray) -> tuple[Any, th.Tensor, th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        idx = th.as_tensor(indices, device=self.actions.device)
        obs: Any
        if isinstance(self.observations, dict):
            obs = {k: v[idx] for k, v in self.observations.items()}
        else:
            obs = self.observations[idx]
        return (
            obs,
            self.actions[idx],
            self.old_values[idx],
            self.old_log_prob[idx],
            self.advantages[idx],
            self.returns[idx],
        )


def categorical_fast_path(policy: Any) -> bool:
    """Whether the policy's ``forward``/``evaluate_actions`` are SB3's own over a categorical distribution."""
    cls = type(policy)
    return (
        isinstance(policy, ActorCriticPolicy)
        and isinstance(policy.action_dist, CategoricalDistribution)
        and all(
            getattr(cls, name) is getattr(ActorCriticPolicy, name)
            for name in ("forward", "evaluate_actions", "_get_action_dist_from_latent", "predict_values")
        )
    )


def evaluate_categorical(
    policy: ActorCriticPolicy, obs: Any, actions: th.Tensor, entropy_grad: bool
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """``policy.evaluate_actions`` for a categorical policy: the same operations in the same order.

    ``Categorical(logits)`` normalises by ``logsumexp``; ``log_prob`` gathers; ``entropy`` is
    ``-(clamp(logits, finfo.min) * softmax(logits)).sum(-1)``. Without ``entropy_grad`` the
    entropy is computed outside the autograd graph.
    """
    features = policy.extract_features(obs)
    if policy.share_features_extractor:
        latent_pi, latent_vf = policy.mlp_extractor(features)
    else:
        pi_features, vf_features = features
        latent_pi = policy.mlp_extractor.forward_actor(pi_features)
        latent_vf = policy.mlp_extractor.forward_critic(vf_features)
    logits = policy.action_net(latent_pi)
    logits = logits - logits.logsumexp(dim=-1, keepdim=True)
    log_prob = logits.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    values = policy.value_net(latent_vf)
    with th.set_grad_enabled(entropy_grad and th.is_grad_enabled()):
        clamped = th.clamp(logits, min=th.finfo(logits.dtype).min)
        entropy = -(clamped * F.softmax(logits, dim=-1)).sum(-1)
    return values, log_prob, entropy


def sample_categorical(policy: ActorCriticPolicy, obs: Any) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """``policy(obs)`` (stochastic) for a categorical policy: same operations, same RNG draws."""
    features = policy.extract_features(obs)
    if policy.share_features_extractor:
        latent_pi, latent_vf = policy.mlp_extractor(features)
    else:
        pi_features, vf_features = features
        latent_pi = policy.mlp_extractor.forward_actor(pi_features)
        latent_vf = policy.mlp_extractor.forward_critic(vf_features)
    values = policy.value_net(latent_vf)
    logits = policy.action_net(latent_pi)
    logits = logits - logits.logsumexp(dim=-1, keepdim=True)
    probs = F.softmax(logits, dim=-1)
    actions = th.multinomial(probs.reshape(-1, probs.shape[-1]), 1, True).T.reshape(probs.shape[:-1])
    log_prob = logits.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    return actions.reshape(-1), values, log_prob


def clip_grad_norm(params: Sequence[th.nn.Parameter], max_norm: float) -> None:
    """``th.nn.utils.clip_grad_norm_`` for same-device, same-dtype gradients, without the grouping."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    if any(g.dtype != grads[0].dtype or g.device != grads[0].device for g in grads):
        th.nn.utils.clip_grad_norm_(params, max_norm)
        return
    with th.no_grad():
        total_norm = th.linalg.vector_norm(th.stack(th._foreach_norm(grads, 2.0)), 2.0)
        clip_coef = th.clamp(float(max_norm) / (total_norm + 1e-6), max=1.0)
        th._foreach_mul_(grads, clip_coef)


def lean_train(model: PPO) -> None:
    """SB3 2.x ``PPO.train`` with the same arithmetic and less overhead per minibatch."""
    policy = model.policy
    policy.set_training_mode(True)
    model._update_learning_rate(policy.optimizer)
    progress = model._current_progress_remaining
    clip_range = model.clip_range(progress)  # type: ignore[operator]
    clip_range_vf = model.clip_range_vf(progress) if model.clip_range_vf is not None else None  # type: ignore[operator]
    fast = categorical_fast_path(policy)
    discrete = isinstance(model.action_space, spaces.Discrete)
    params = list(policy.parameters())
    data = FlatRollout(model.rollout_buffer)
    entropy_losses: list[float] = []
    pg_losses: list[float] = []
    value_losses: list[float] = []
    clip_fractions: list[float] = []
    approx_kl_divs: list[np.ndarray] = []
    continue_training = True
    loss = th.zeros(())
    for epoch in range(model.n_epochs):
        approx_kl_divs = []
        indices = np.random.permutation(data.size)  # RolloutBuffer.get draws one per epoch
        for start in range(0, data.size, model.batch_size):
            obs, actions, old_values, old_log_prob, advantages, returns = data.sample(
                indices[start : start + model.batch_size]
            )
            if discrete:
                actions = actions.long().flatten()
            if fast:
                values, log_prob, entropy = evaluate_categorical(policy, obs, actions, model.ent_coef != 0.0)
            else:
                values, log_prob, entropy = policy.evaluate_actions(obs, actions)  # type: ignore[assignment]
            values = values.flatten()
            if model.normalize_advantage and len(advantages) > 1:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            ratio = th.exp(log_prob - old_log_prob)
            policy_loss_1 = advantages * ratio
            policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
            policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()
            pg_losses.append(policy_loss.item())
            clip_fractions.append(th.mean((th.abs(ratio - 1) > clip_range).float()).item())
            if clip_range_vf is None:
                values_pred = values
            else:
                values_pred = old_values + th.clamp(values - old_values, -clip_range_vf, clip_range_vf)
            value_loss = F.mse_loss(returns, values_pred)
            value_losses.append(value_loss.item())
            entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
            entropy_losses.append(entropy_loss.item())
            loss = policy_loss + model.ent_coef * entropy_loss + model.vf_coef * value_loss
            with th.no_grad():
                log_ratio = log_prob - old_log_prob
                approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                approx_kl_divs.append(approx_kl_div)
            if model.target_kl is not None and approx_kl_div > 1.5 * model.target_kl:
                continue_training = False
                if model.verbose >= 1:
                    print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                break
            policy.optimizer.zero_grad()
            loss.backward()
            clip_grad_norm(params, model.max_grad_norm)
            policy.optimizer.step()
        model._n_updates += 1
        if not continue_training:
            break
    buffer = model.rollout_buffer
    explained_var = explained_variance(buffer.values.flatten(), buffer.returns.flatten())
    log = model.logger.record
    log("train/entropy_loss", np.mean(entropy_losses))
    log("train/policy_gradient_loss", np.mean(pg_losses))
    log("train/value_loss", np.mean(value_losses))
    log("train/approx_kl", np.mean(approx_kl_divs))
    log("train/clip_fraction", np.mean(clip_fractions))
    log("train/loss", loss.item())
    log("train/explained_variance", explained_var)
    if hasattr(policy, "log_std"):
        log("train/std", th.exp(policy.log_std).mean().item())
    log("train/n_updates", model._n_updates, exclude="tensorboard")
    log("train/clip_range", clip_range)
    if clip_range_vf is not None:
        log("train/clip_range_vf", clip_range_vf)
