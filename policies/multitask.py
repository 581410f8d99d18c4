"""Multi-task actor-critic: one shared trunk, per-task heads, task id in the observation.

Observation space: ``Dict{"obs": Box, "task_id": Discrete(K)}``. Routing is done inside
the features extractor (trunk output + one-hot task id) and inside ``TaskHeads``, the
replacement for SB3's ``MlpExtractor``; SB3's ``forward``/``evaluate_actions`` then need no
override. Each head's latent has size ``K * h`` and is zero outside the active task's
block, so SB3's single ``action_net``/``value_net`` act as K independent output layers
(their biases and a Gaussian ``log_std`` stay shared across tasks).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from rltransfer.policies.crossspace import (
    AdapterTrunkExtractor,
    MaskedDiagGaussianDistribution,
    mask_logits,
    valid_action_table,
)
from rltransfer.policies.trunk import build_trunk
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution, Distribution
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


def task_one_hot(task_id: th.Tensor, n_tasks: int) -> th.Tensor:
    """SB3 one-hot encodes ``Discrete`` as ``(B, K)`` in rollouts but ``(B, 1, K)`` from the buffer."""
    return task_id.reshape(-1, n_tasks)


class MultiTaskTrunkExtractor(BaseFeaturesExtractor):
    """Shared trunk over ``obs``; emits ``[trunk(obs), one_hot(task_id)]``."""

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
    ) -> None:
        arch = list(net_arch) if net_arch is not None else [64, 64]
        obs_space, task_space = observation_space["obs"], observation_space["task_id"]
        if not isinstance(task_space, gym.spaces.Discrete):
            raise ValueError(f"task_id must be a Discrete space, got {task_space}")
        self.n_tasks = int(task_space.n)
        self.trunk_dim = arch[-1]
        super().__init__(observation_space, features_dim=self.trunk_dim + self.n_tasks)
        assert obs_space.shape is not None
        self.trunk = build_trunk(int(np.prod(obs_space.shape)), arch, activation_fn)

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        features = self.trunk(th.flatten(observations["obs"], start_dim=1))
        self.last_task_one_hot = task_one_hot(observations["task_id"], self.n_tasks)
        return th.cat([features, self.last_task_one_hot], dim=1)


class TaskLinear(nn.Module):
    """K independent linear layers applied in one batched op: ``(B, [K,] in) -> (B, K, out)``.

    ``weight`` is ``(K, out, in)`` so that ``weight[k]`` has ``nn.Linear``'s layout.
    """

    def __init__(
        self, n_tasks: int, in_features: int, out_features: int, gain: float = math.sqrt(2), ortho: bool = True
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(th.empty(n_tasks, out_features, in_features))
        self.bias = nn.Parameter(th.zeros(n_tasks, out_features))
        for k in range(n_tasks):
            if ortho:  # orthogonal per task, like SB3's ortho_init of nn.Linear
                nn.init.orthogonal_(self.weight.data[k], gain=gain)
            else:  # ortho_init=False: each task's layer as nn.Linear initialises itself
                layer = nn.Linear(in_features, out_features)
                self.weight.data[k], self.bias.data[k] = layer.weight.data, layer.bias.data

    def forward(self, x: th.Tensor) -> th.Tensor:
        if x.dim() == 2:
            return th.einsum("bi,koi->bko", x, self.weight) + self.bias
        return th.einsum("bki,koi->bko", x, self.weight) + self.bias


class TaskHeads(nn.Module):
    """Per-task policy and value MLPs over the shared trunk features (SB3 ``MlpExtractor`` interface)."""

    def __init__(
        self,
        trunk_dim: int,
        n_tasks: int,
        net_arch: dict[str, list[int]],
        activation_fn: type[nn.Module],
        ortho_init: bool = True,
    ) -> None:
        super().__init__()
        self.trunk_dim, self.n_tasks, self.ortho_init = trunk_dim, n_tasks, ortho_init
        self.policy_heads = self._stack(net_arch.get("pi", []))
        self.value_heads = self._stack(net_arch.get("vf", []))
        self.activation = activation_fn()
        pi, vf = net_arch.get("pi", []), net_arch.get("vf", [])
        self.head_dim_pi = pi[-1] if pi else trunk_dim
        self.head_dim_vf = vf[-1] if vf else trunk_dim
        self.latent_dim_pi = n_tasks * self.head_dim_pi
        self.latent_dim_vf = n_tasks * self.head_dim_vf

    def _stack(self, widths: list[int]) -> nn.ModuleList:
        layers, last = [], self.trunk_dim
        for width in widths:
            layers.append(TaskLinear(self.n_tasks, last, width, ortho=self.ortho_init))
            last = width
        return nn.ModuleList(layers)

    def _run(self, layers: nn.ModuleList, features: th.Tensor) -> th.Tensor:
        trunk, one_hot = features[:, : self.trunk_dim], features[:, self.trunk_dim :]
        if not layers:
            return (trunk.unsqueeze(1) * one_hot.unsqueeze(-1)).flatten(start_dim=1)
        # Each sample runs only its own task's head; its output fills the active block of a
        # K-block latent whose other blocks are zero, so SB3's output layers see only their own
        # task. Two equal ways (up to float rounding; tested), picked by cost (measured in
        # benchmarks/multitask_cost.py): without autograd (rollouts, evaluation) fewest ops win,
        # so every task's first layer runs in one matmul and the active block is gathered; with
        # autograd (updates) the backward of K x the work dominates, so samples are grouped by
        # task into a (K, G, width) block, G the largest group, and each layer is one baddbmm.
        task = one_hot.argmax(dim=1)
        b, k = trunk.shape[0], self.n_tasks
        rows = th.arange(b, device=trunk.device)
        stack: list[TaskLinear] = list(layers)  # type: ignore[arg-type]
        if not th.is_grad_enabled():
            first = stack[0]
            pre = th.nn.functional.linear(trunk, first.weight.flatten(0, 1), first.bias.flatten())
            x = self.activation(pre.view(b, k, -1)[rows, task])
            for layer in stack[1:]:
                x = self.activation(th.einsum("bi,boi->bo", x, layer.weight[task]) + layer.bias[task])
            out = x.new_zeros(b, k, x.shape[1])
            out[rows, task] = x
            return out.flatten(start_dim=1)
        order = th.argsort(task, stable=True)
        counts = th.bincount(task, minlength=k)
        group = int(counts.max())
        starts = th.cumsum(counts, 0) - counts
        sorted_task = task[order]
        slot = sorted_task * group + (rows - starts[sorted_task])  # sorted sample -> row of (K*G)
        x = trunk.new_zeros(k * group, trunk.shape[1]).index_copy(0, slot, trunk[order]).view(k, group, -1)
        for layer in stack:
            x = self.activation(th.baddbmm(layer.bias.unsqueeze(1), x, layer.weight.transpose(1, 2)))
        own = x.reshape(k * group, -1)[slot]  # sorted order
        out = own.new_zeros(b, k, own.shape[1])
        out[order, sorted_task] = own
        return out.flatten(start_dim=1)

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        return self._run(self.policy_heads, features)

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        return self._run(self.value_heads, features)


class MultiTaskActorCriticPolicy(MultiInputActorCriticPolicy):
    """PPO policy for K tasks: shared trunk (``features_extractor.trunk``) + per-task heads.

    Args:
        trunk_arch: widths of the shared trunk layers (the part that transfers).
        net_arch: per-task head widths, ``dict(pi=[...], vf=[...])``; SB3's own argument,
            reused so that save/load round-trips without extra constructor parameters.
        task_obs_dims: observation size of each task when they differ (observations padded
            to the largest): the first trunk width becomes a per-task input adapter.
        task_action_dims: action count (discrete) or size (continuous) of each task when they
            differ: padded actions are masked out of the distribution.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        action_space: gym.spaces.Space,
        lr_schedule: Any,
        net_arch: dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        trunk_arch: list[int] | None = None,
        task_obs_dims: list[int] | None = None,
        task_action_dims: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        self.trunk_arch = list(trunk_arch) if trunk_arch is not None else [64, 64]
        self.task_obs_dims = list(task_obs_dims) if task_obs_dims is not None else None
        self.task_action_dims = list(task_action_dims) if task_action_dims is not None else None
        extractor = AdapterTrunkExtractor if self.task_obs_dims is not None else MultiTaskTrunkExtractor
        kwargs.setdefault("features_extractor_class", extractor)
        kwargs.setdefault("features_extractor_kwargs", {})
        kwargs["features_extractor_kwargs"] = {
            "net_arch": self.trunk_arch,
            "activation_fn": activation_fn,
            # The adapters are per-task layers SB3's own ortho_init does not reach: they follow it themselves.
            **({"ortho_init": kwargs.get("ortho_init", True)} if extractor is AdapterTrunkExtractor else {}),
            **kwargs["features_extractor_kwargs"],
        }
        kwargs.setdefault("share_features_extractor", True)
        arch = net_arch if net_arch is not None else {"pi": [64], "vf": [64]}
        super().__init__(observation_space, action_space, lr_schedule, arch, activation_fn, **kwargs)
        self.valid_actions: th.Tensor | None
        if self.task_action_dims is None:
            self.valid_actions = None
        else:
            if len(self.task_action_dims) != self.n_tasks:
                raise ValueError(f"task_action_dims has {len(self.task_action_dims)} entries for {self.n_tasks} tasks")
            width = int(action_space.n) if isinstance(action_space, gym.spaces.Discrete) else int(action_space.shape[0])  # type: ignore[index]
            self.register_buffer("valid_actions", valid_action_table(self.task_action_dims, width), persistent=False)
            if isinstance(self.action_dist, DiagGaussianDistribution):
                self.action_dist = MaskedDiagGaussianDistribution(width)
            elif not isinstance(self.action_dist, CategoricalDistribution):
                raise ValueError(f"per-task action masking supports Discrete and Box actions, not {action_space}")

    def action_logits(self, latent_pi: th.Tensor) -> th.Tensor:
        """Masked logits for discrete actions (lets ``TransferPPO``'s lean path skip distribution objects)."""
        logits = self.action_net(latent_pi)
        if self.valid_actions is None:
            return logits
        one_hot: th.Tensor = self.pi_features_extractor.last_task_one_hot  # type: ignore[assignment]
        return mask_logits(logits, (one_hot @ self.valid_actions.float()) > 0.5)

    def _get_action_dist_from_latent(self, latent_pi: th.Tensor) -> Distribution:
        if self.valid_actions is None:
            return super()._get_action_dist_from_latent(latent_pi)
        # Every path to an action distribution runs the (actor's) features extractor first,
        # which keeps the batch's task one-hot: SB3 passes only the latent to this method.
        one_hot: th.Tensor = self.pi_features_extractor.last_task_one_hot  # type: ignore[assignment]
        valid = (one_hot @ self.valid_actions.float()) > 0.5  # (B, width)
        mean_actions = self.action_net(latent_pi)
        if isinstance(self.action_dist, MaskedDiagGaussianDistribution):
            return self.action_dist.proba_distribution(mean_actions, self.log_std).with_mask(valid.float())
        assert isinstance(self.action_dist, CategoricalDistribution)
        return self.action_dist.proba_distribution(action_logits=mask_logits(mean_actions, valid))

    @property
    def n_tasks(self) -> int:
        return int(self.observation_space["task_id"].n)  # type: ignore[index]

    def _build_mlp_extractor(self) -> None:
        assert isinstance(self.net_arch, dict), "net_arch must be dict(pi=[...], vf=[...]) for per-task heads"
        self.mlp_extractor = TaskHeads(  # type: ignore[assignment]
            self.trunk_arch[-1], self.n_tasks, self.net_arch, self.activation_fn, self.ortho_init
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["trunk_arch"] = self.trunk_arch
        data["task_obs_dims"] = self.task_obs_dims
        data["task_action_dims"] = self.task_action_dims
        # Rebuilt from trunk_arch on load; keeping it would duplicate the source of truth.
        data["features_extractor_kwargs"] = {
            k: v for k, v in data["features_extractor_kwargs"].items() if k != "net_arch"
        }
        return data
