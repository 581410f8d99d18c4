"""Lean rollout steps: ``policy(obs)``'s actions, values and log-probabilities without its overhead.

SB3's ``collect_rollouts`` calls ``policy(obs)`` once per vector step; for the policies whose
network runs by hand (``rltransfer.lean``) these samplers make the same draws from torch's
generator with the same operations: ``TransferPPO.collect_rollouts`` uses them, and its rollouts
are bit-identical to SB3's for single-task policies with torch's tanh, equal to float rounding
with numpy's (the default) and for the multi-task policy (``tests/test_lean_rollout.py``).
By default the steps run the network in numpy (``rltransfer.numpy_rollout``), with the same
draws.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from torch.nn import functional as F

from rltransfer import numpy_rollout
from rltransfer.gaussian_loss import normal_log_prob, sde_scale
from rltransfer.lean import (
    LogitsFn,
    actor_critic_latents,
    categorical_logits,
    gaussian_hand_written,
    hand_written,
    plain_sde,
)
from rltransfer.mlp_backprop import Program
from rltransfer.multitask_backprop import MultiTaskMLP
from rltransfer.numpy_rollout import numpy_net


def sample_categorical(
    policy: ActorCriticPolicy, logits_fn: LogitsFn, obs: Any, program: Program | None = None
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """``policy(obs)`` (stochastic) for a categorical policy: same operations, same RNG draws.

    With ``program`` (``hand_written``) the network runs without module calls: the same values
    for single-task MLPs, equal to float rounding for the multi-task policy.
    """
    if program is not None:
        logits, values, _ = program.forward(obs)
    else:
        latent_pi, latent_vf = actor_critic_latents(policy, obs)
        values = policy.value_net(latent_vf)
        logits = logits_fn(latent_pi)
    logits = logits - logits.logsumexp(dim=-1, keepdim=True)
    probs = F.softmax(logits, dim=-1)
    actions = multinomial_one(probs.reshape(-1, probs.shape[-1])).T.reshape(probs.shape[:-1])
    log_prob = logits.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    return actions.reshape(-1), values, log_prob


def sample_gaussian(program: Program, log_std: th.Tensor, obs: Any) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """``policy(obs)`` (stochastic) for a ``gaussian_hand_written`` policy: same operations, same RNG draws.

    ``DiagGaussianDistribution``: ``Normal(mean, ones_like(mean) * log_std.exp())``, whose
    ``rsample`` is ``mean + empty(shape).normal_() * scale``, and its ``log_prob``.
    """
    mean, values, _ = program.forward(obs)
    scale = th.ones_like(mean) * log_std.exp()
    actions = mean + th.empty_like(mean).normal_() * scale
    return actions, values, normal_log_prob(actions, mean, scale)


def sample_sde(program: Program, policy: Any, obs: Any) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """The same for SB3's default gSDE (``plain_sde``): the mean plus ``get_noise``'s product of the
    latent with the exploration matrices ``policy.reset_noise`` drew, and the ``log_prob`` of
    ``Normal(mean, sqrt(mm(latent**2, std**2) + eps))``.

    Single-task: bit-identical to SB3's step. Multi-task: the noise multiplies SB3's K-block
    latent (``MultiTaskMLP.block_latent``), the variance runs per task; equal to rounding.
    """
    mean, values, cache = program.forward(obs)
    dist = policy.action_dist
    # The action net's input, SB3's latent_pi
    latent = program.block_latent(cache, obs) if isinstance(program, MultiTaskMLP) else cache.pi[-2]
    square = functools.partial(program.latent_sq_mm, cache)
    _, _, scale = sde_scale(policy.log_std, square, dist.full_std, mean.shape[1], dist.epsilon)
    actions = mean + dist.get_noise(latent)
    return actions, values, normal_log_prob(actions, mean, scale)


Sampler = Callable[[Any], tuple[th.Tensor, th.Tensor, th.Tensor]]


def lean_sampler(policy: Any, numpy_tanh: bool = False, numpy_forward: bool = False) -> Sampler | None:
    """What draws a rollout step's actions, values and log-probabilities as ``policy(obs)`` does.

    ``None`` where SB3's own rollout must run (squashed or masked Gaussians, other spaces).
    The caller draws gSDE's exploration matrices where SB3 does.
    ``numpy_tanh``: see ``rltransfer.mlp_backprop.actor_critic_mlp``. ``numpy_forward`` (with
    ``numpy_tanh``): the step runs ``numpy_rollout``'s network (CPU, float32).
    """
    logits_fn = categorical_logits(policy)
    if logits_fn is not None:
        program = hand_written(policy, logits_fn, numpy_tanh)
    else:
        program = gaussian_hand_written(policy, numpy_tanh)  # float32 parameters, log_std among them
        if program is None or policy.squash_output:
            return None
    net = numpy_net(program) if program is not None and numpy_tanh and numpy_forward else None
    if logits_fn is not None:
        if net is not None:
            return functools.partial(numpy_rollout.sample_categorical, net)
        return functools.partial(sample_categorical, policy, logits_fn, program=program)
    assert program is not None
    if type(policy.action_dist) is DiagGaussianDistribution:
        if net is not None:
            return functools.partial(numpy_rollout.sample_gaussian, net, policy.log_std)
        return functools.partial(sample_gaussian, program, policy.log_std)
    if plain_sde(policy):
        if net is not None:
            return functools.partial(numpy_rollout.sample_sde, net, policy)
        return functools.partial(sample_sde, program, policy)
    return None


def multinomial_one(probs: th.Tensor) -> th.Tensor:
    """``th.multinomial(probs, 1, True)``: one draw per row, the same draws from the same generator.

    torch samples one draw as ``argmax(probs / q)``, ``q ~ Exp(1)`` (its fast path for a single
    sample); the argument checks around it (finite, non-negative, non-zero rows: five reductions
    and three host syncs) cost twice the draw on a rollout step. Softmax outputs fail them only
    where they are NaN, which makes the log-probability NaN: ``check_log_probs`` looks once per
    rollout instead.
    """
    return th.argmax(probs / th.empty_like(probs).exponential_(1), dim=-1, keepdim=True)


def check_log_probs(log_probs: np.ndarray) -> None:
    """Raise where a rollout sampled from a non-finite distribution (what ``th.multinomial`` rejects)."""
    if not np.isfinite(log_probs).all():
        raise ValueError(
            "the policy's action probabilities were not finite during the rollout (NaN weights or "
            "observations); check the environment's observations or lower the learning rate"
        )
