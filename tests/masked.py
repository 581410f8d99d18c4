"""A masked categorical policy shared by the lean update and lean rollout tests."""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy


class MaskedPolicy(ActorCriticPolicy):
    """A categorical policy that never takes the last action (as padded action spaces do)."""

    def action_logits(self, latent_pi: th.Tensor) -> th.Tensor:
        logits = self.action_net(latent_pi)
        return logits.masked_fill(th.arange(logits.shape[-1]) == logits.shape[-1] - 1, float("-inf"))

    def _get_action_dist_from_latent(self, latent_pi: th.Tensor) -> Any:
        return self.action_dist.proba_distribution(action_logits=self.action_logits(latent_pi))  # type: ignore[call-arg]
