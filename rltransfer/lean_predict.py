"""Deterministic evaluation without ``policy.predict``'s per-call overhead.

SB3's ``evaluate_policy`` calls ``model.predict`` once per vector step, and ``predict`` switches
the policy to eval mode (a walk over every module), converts and checks the observation, and
builds a distribution to take its mode: with per-task evaluations every few thousand steps,
about half of a fine-tuning run's time went there. ``predictor_for`` gives ``evaluate_policy``
an object whose ``predict`` runs the policy's network by hand (``rltransfer.lean.program_for``)
and takes the mode with the operations ``Categorical.mode`` performs (for a diagonal Gaussian:
the mean, clipped to the action bounds as ``predict`` clips it), so the actions are SB3's:
bit-identical for single-task MLPs, the same up to float rounding of the network's output for
the multi-task policy (``tests/test_lean_predict.py``). With ``TransferPPO.numpy_tanh`` and
``numpy_rollouts`` (the defaults) the network runs as numpy operations
(``rltransfer.numpy_rollout``), as rollout steps do: the same actions up to float rounding.
Stochastic actions (``deterministic=False``) come from the rollout's sampler
(``rltransfer.lean_rollout.lean_sampler``): the draws ``predict`` makes, from the same generator.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.utils import obs_as_tensor
from torch.nn import functional as F

from rltransfer.lean import program_for
from rltransfer.lean_rollout import Sampler, lean_sampler
from rltransfer.mlp_backprop import Program
from rltransfer.numpy_rollout import NumpyNet, numpy_net


class LeanPredictor:
    """``model.predict`` for a categorical or diagonal-Gaussian policy run by hand."""

    def __init__(self, model: Any, program: Program, net: NumpyNet | None = None) -> None:
        self.model, self.program, self.net = model, program, net
        self.box = model.action_space if isinstance(model.action_space, spaces.Box) else None
        model.policy.set_training_mode(False)  # what every predict call would do

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        if not deterministic:
            if self.sampler is None:
                return self.model.predict(observation, state, episode_start, deterministic)
            return self._sample(observation, self.sampler), state
        if self.net is not None:
            return self._numpy_mode(observation), state
        with th.no_grad():
            out = self.program.actor_logits(obs_as_tensor(observation, self.model.device))
            if self.box is not None:  # DiagGaussianDistribution.mode is the mean; predict clips it
                means = out.cpu().numpy().reshape((-1, *self.box.shape))
                return np.clip(means, self.box.low, self.box.high), state
            probs = F.softmax(out - out.logsumexp(dim=-1, keepdim=True), dim=-1)
            actions = th.argmax(probs, dim=1)  # CategoricalDistribution.mode
        return actions.cpu().numpy(), state

    @functools.cached_property
    def sampler(self) -> Sampler | None:
        """The rollout's sampler, built at the first stochastic call (evaluations make none)."""
        model = self.model
        return lean_sampler(model.policy, getattr(model, "numpy_tanh", False), getattr(model, "numpy_rollouts", False))

    def _sample(self, observation: Any, sampler: Sampler) -> np.ndarray:
        """Actions drawn as ``predict(deterministic=False)`` draws them, clipped to the bounds as it clips them."""
        with th.no_grad():
            actions = sampler(obs_as_tensor(observation, self.model.device))[0].cpu().numpy()
        if self.box is not None:
            return np.clip(actions.reshape((-1, *self.box.shape)), self.box.low, self.box.high)
        return actions

    def _numpy_mode(self, observation: Any) -> np.ndarray:
        """The same mode from the numpy network: the clipped mean, or the most probable action."""
        assert self.net is not None
        out = self.net.actor(observation)
        if self.box is not None:
            return np.clip(out.reshape((-1, *self.box.shape)), self.box.low, self.box.high)
        unnormalised = np.exp(out - out.max(1, keepdims=True))
        return np.argmax(unnormalised / unnormalised.sum(1, keepdims=True), axis=1)


def predictor_for(model: Any) -> Any:
    """A ``LeanPredictor`` for a lean ``TransferPPO`` whose policy runs by hand; else ``model`` itself."""
    if not getattr(model, "lean", False):
        return model
    policy = model.policy
    numpy_forward = getattr(model, "numpy_tanh", False) and getattr(model, "numpy_rollouts", False)
    program = program_for(policy, numpy_forward)
    if policy.squash_output and isinstance(model.action_space, spaces.Box):
        program = None  # predict unscales a squashing policy's actions instead of clipping them
    if program is None:
        return model
    return LeanPredictor(model, program, numpy_net(program) if numpy_forward else None)
