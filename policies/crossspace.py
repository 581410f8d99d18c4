"""Pieces for tasks whose observation or action spaces differ (padded into one space).

* ``AdapterTrunkExtractor``: a per-task input adapter (the first trunk width) maps each
  task's padded observation into the shared trunk; padded inputs are zero, so task ``k``'s
  adapter is exactly a ``Linear(obs_dim_k, width)``.
* ``mask_logits``: padded discrete actions get ``-inf`` logits — never sampled, no mass,
  and log-probabilities and entropies equal those of the task's own ``Discrete(n_k)``.
* ``MaskedDiagGaussianDistribution``: padded continuous dimensions are left out of
  log-probabilities and entropies (the environment ignores them).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch as th
from rltransfer.policies.trunk import build_trunk
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


class AdapterTrunkExtractor(BaseFeaturesExtractor):
    """Per-task input adapters, then the shared trunk; emits ``[trunk(adapter_k(obs)), one_hot]``.

    With ``net_arch=[w0, w1, ...]`` the adapters are ``obs_k -> w0`` and the shared trunk is
    ``w0 -> w1 -> ...`` (``features_extractor.trunk``), so a single-task source's trunk layer
    ``i + 1`` lands on this trunk's layer ``i`` and its input layer on the adapters of the
    tasks that share its observation space.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
    ) -> None:
        from rltransfer.policies.multitask import TaskLinear, task_one_hot

        arch = list(net_arch) if net_arch is not None else [64, 64]
        if len(arch) < 2:
            raise ValueError(f"cross-space transfer needs trunk_arch with >= 2 layers (adapter + shared), got {arch}")
        self.n_tasks = int(observation_space["task_id"].n)  # type: ignore[attr-defined]
        self.trunk_dim = arch[-1]
        super().__init__(observation_space, features_dim=self.trunk_dim + self.n_tasks)
        obs_shape = observation_space["obs"].shape
        assert obs_shape is not None
        self.adapters = TaskLinear(self.n_tasks, int(np.prod(obs_shape)), arch[0], ortho=ortho_init)
        self.adapter_activation = activation_fn()
        self.trunk = build_trunk(arch[0], arch[1:], activation_fn)
        self._one_hot = task_one_hot

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        one_hot = self.last_task_one_hot = self._one_hot(observations["task_id"], self.n_tasks)
        per_task = self.adapters(th.flatten(observations["obs"], start_dim=1))  # (B, K, w0)
        x = self.adapter_activation((per_task * one_hot.unsqueeze(-1)).sum(dim=1))
        return th.cat([self.trunk(x), one_hot], dim=1)


def valid_action_table(task_action_dims: list[int], width: int) -> th.Tensor:
    """``(K, width)`` booleans: which padded action entries exist for each task."""
    table = th.zeros(len(task_action_dims), width, dtype=th.bool)
    for k, n in enumerate(task_action_dims):
        table[k, :n] = True
    return table


def mask_logits(logits: th.Tensor, valid: th.Tensor) -> th.Tensor:
    """Invalid actions get ``-inf``: probability exactly 0, log-softmax over the valid ones only."""
    return logits.masked_fill(~valid, float("-inf"))


class MaskedDiagGaussianDistribution(DiagGaussianDistribution):
    """Diagonal Gaussian whose padded dimensions count in neither log-probability nor entropy."""

    def __init__(self, action_dim: int) -> None:
        super().__init__(action_dim)
        self.valid: th.Tensor | None = None

    def with_mask(self, valid: th.Tensor) -> MaskedDiagGaussianDistribution:
        self.valid = valid
        return self

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        per_dim = self.distribution.log_prob(actions)
        return (per_dim * self.valid).sum(dim=1) if self.valid is not None else per_dim.sum(dim=1)

    def entropy(self) -> th.Tensor:
        per_dim = self.distribution.entropy()
        return (per_dim * self.valid).sum(dim=1) if self.valid is not None else per_dim.sum(dim=1)
