"""PPO with per-parameter-group learning-rate scales, lean rollouts and updates, fused Adam.

Lean (``TransferPPO.lean``, default on): SB3's ``PPO.train`` and ``collect_rollouts`` with
their per-step overhead removed; bit-identical results for single-task policies, equal to
float rounding for the multi-task policy (see ``rltransfer.lean``).

``fused_adam`` (default on) builds Adam with ``fused=True``: the same update rule in one
kernel per parameter instead of a dozen, equal to SB3's ``foreach=False`` Adam to float
rounding (about 1e-7 relative per step), so learning curves agree within seed noise but
weights are not bit-identical to plain SB3. ``numpy_tanh`` (default on) runs the lean network's
tanh layers with numpy's tanh: within 1 ulp of torch's (both correctly rounded to 1 ulp), about
6x faster on a minibatch's blocks on CPU; with it, ``numpy_rollouts`` (default on) runs rollout
steps' network in numpy (``rltransfer.numpy_rollout``: torch's random draws, 3x faster at 64
envs). Pass ``fused_adam=False`` and set ``model.numpy_tanh = False`` for bit-identity with
plain SB3.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import get_device, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from rltransfer.lean import lean_train
from rltransfer.lean_rollout import check_log_probs, lean_sampler


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
        numpy_tanh: the lean network's tanh through numpy (default; see the module docstring).
        numpy_rollouts: with ``numpy_tanh``, rollout steps run the network in numpy
            (``rltransfer.numpy_rollout``; default): the same draws, equal to float rounding.
        flat_step: the lean update clips and steps the gradients on one flat buffer
            (``FusedAdamStepper.clip_and_step``; default); ``False`` per tensor, the same values.
        numpy_loss: with ``numpy_tanh`` (or for the multi-task policy), the lean update's
            categorical, Gaussian and gSDE losses run in numpy on the CPU
            (``rltransfer.numpy_loss``; default): the same formulas, equal to float rounding.
    """

    lean: bool = True
    # Called at the top of every ``collect_rollouts``, a point where the run's whole state is
    # saved with nothing in flight (``rltransfer.snapshot``).
    rollout_hook: Callable[[], None] | None = None
    iteration_offset = 0  # iterations before a resumed ``learn``: the logged ``time/iterations`` go on
    numpy_tanh: bool = True
    numpy_rollouts: bool = True
    flat_step: bool = True
    numpy_loss: bool = True

    def __init__(self, *args: Any, fused_adam: bool = True, **kwargs: Any) -> None:
        if fused_adam and fused_adam_supported(kwargs.get("device", "auto")):
            kwargs["policy_kwargs"] = with_fused_adam(kwargs.get("policy_kwargs"))
        with warnings.catch_warnings():
            # SB3 warns of a batch_size that does not divide the rollout in four lines for every model,
            # even one built only to evaluate; rltransfer says it in one line when a run trains
            # (``training.learn``; a grid's runner once for all of its runs).
            warnings.filterwarnings("ignore", "You have specified a mini-batch size", UserWarning)
            super().__init__(*args, **kwargs)

    def train(self) -> None:
        if self.lean:
            lean_train(self, self.numpy_tanh, self.flat_step, self.numpy_loss)
        else:
            super().train()

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        """SB3's ``collect_rollouts``; lean where ``lean_sampler`` covers the policy (same samples, same buffer)."""
        if self.rollout_hook is not None:
            self.rollout_hook()
        sampler = lean_sampler(self.policy, self.numpy_tanh, self.numpy_rollouts) if self.lean else None
        if sampler is None:
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        # Mirrors OnPolicyAlgorithm.collect_rollouts (SB3 2.x) line by line; the local names
        # are the same because callbacks read them through ``update_locals(locals())``.
        assert self._last_obs is not None, "No previous observation was provided"
        box = self.action_space if isinstance(self.action_space, spaces.Box) else None
        self.policy.set_training_mode(False)
        n_steps = 0
        rollout_buffer.reset()
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        callback.on_rollout_start()
        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)  # a new exploration matrix, as SB3 draws it
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                sampled, values, log_probs = sampler(obs_tensor)
            actions = sampled.cpu().numpy()
            clipped_actions = actions if box is None else np.clip(actions, box.low, box.high)
            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            n_steps += 1
            if box is None:  # Discrete: one column
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
        check_log_probs(rollout_buffer.log_probs)
        with th.no_grad():
            values = self.policy.predict_values(obs_as_tensor(new_obs, self.device))  # type: ignore[arg-type]
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def dump_logs(self, iteration: int = 0) -> None:
        super().dump_logs(iteration + self.iteration_offset)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "rollout_hook", "iteration_offset"]

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
