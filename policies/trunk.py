"""The transferable trunk: shared feature layers under a stable attribute name."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

TRUNK_PREFIX = "features_extractor.trunk."


def build_trunk(in_dim: int, net_arch: list[int], activation_fn: type[nn.Module]) -> nn.Sequential:
    """``Linear, act, Linear, act, ...``; Linear layers sit at even indices (``trunk.0``, ``trunk.2``...)."""
    if not net_arch:
        raise ValueError("trunk net_arch must have at least one layer, e.g. [64, 64]")
    layers: list[nn.Module] = []
    last = in_dim
    for width in net_arch:
        layers += [nn.Linear(last, width), activation_fn()]
        last = width
    return nn.Sequential(*layers)


class TrunkExtractor(BaseFeaturesExtractor):
    """Single-task features extractor: flattened observation through ``self.trunk``.

    Used for source pretraining so that the shared feature layers are
    ``features_extractor.trunk.*`` in the state dict, ready to be mapped into a
    multi-task policy.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
    ) -> None:
        arch = list(net_arch) if net_arch is not None else [64, 64]
        super().__init__(observation_space, features_dim=arch[-1])
        self.trunk = build_trunk(int(np.prod(observation_space.shape)), arch, activation_fn)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.trunk(th.flatten(observations, start_dim=1))
