"""PPO's clipped loss for a diagonal Gaussian policy, with its gradient written out.

SB3's ``DiagGaussianDistribution`` (no gSDE): ``Normal(mean, ones_like(mean) * log_std.exp())``,
``log_prob`` and ``entropy`` summed over action dimensions. The forward operations are the
ones ``torch.distributions.Normal`` runs, in its order, and the gradient w.r.t. the means and
``log_std`` is formed from the formulas autograd applies to each of them (``pow``'s
``grad * (2 * x)``, ``div``'s ``-grad * ((a / b) / b)``, ``log``'s ``grad / x``, the sum over
the batch for the broadcast ``log_std``), with the three gradients that meet at the scale
summed in the order autograd's engine adds them. So they are bit-identical to
``loss.backward()`` (``tests/test_ppo_lean.py``); the PPO part is ``ppo_loss.surrogate_gradient``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch as th

from rltransfer.ppo_loss import (
    Coefficients,
    LossResult,
    Minibatch,
    Surrogate,
    entropy_gradient,
    surrogate_gradient,
)

LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))  # Normal.log_prob's constant
ENTROPY_CONSTANT = 0.5 + 0.5 * math.log(2 * math.pi)  # Normal.entropy's


def normal_log_prob(actions: th.Tensor, mean: th.Tensor, scale: th.Tensor) -> th.Tensor:
    """``Normal(mean, scale).log_prob(actions)`` summed over action dimensions, with its operations."""
    return (-((actions - mean) ** 2) / (2 * scale**2) - scale.log() - LOG_SQRT_2PI).sum(dim=1)


def sde_scale(
    log_std: th.Tensor, latent: Callable[[th.Tensor], th.Tensor], full_std: bool, action_dim: int, epsilon: float
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """gSDE's ``exp`` std, the ``(latent, action)`` matrix it stands for (``get_std``), and the
    scale ``sqrt(mm(latent**2, std**2) + epsilon)`` that ``proba_distribution`` gives ``Normal``.

    ``latent(std_sq)`` is ``mm(latent**2, std_sq)`` (the program's ``latent_sq_mm``).
    """
    std = log_std.exp()
    std_full = std if full_std else th.ones(log_std.shape[0], action_dim, dtype=std.dtype) * std
    return std, std_full, th.sqrt(latent(std_full**2) + epsilon)


def _normal_loss(
    mean: th.Tensor, scale: th.Tensor, values: th.Tensor, batch: Minibatch, c: Coefficients
) -> tuple[Surrogate, th.Tensor, th.Tensor, th.Tensor]:
    """The PPO loss under ``Normal(mean, scale)``: its surrogate, the gradients w.r.t. the means and
    the scale, and each sample's entropy."""
    var = scale**2
    log_scale = scale.log()
    diff = batch.actions - mean
    neg_sq = -(diff**2)
    den = 2 * var
    quotient = neg_sq / den
    log_prob = (quotient - log_scale - LOG_SQRT_2PI).sum(dim=1)  # sum_independent_dims
    entropy = (ENTROPY_CONSTANT + th.log(scale)).sum(dim=1)
    s = surrogate_gradient(log_prob, values, batch, c)

    g = s.grad_log_prob.unsqueeze(1).expand_as(mean)  # the sum over action dimensions
    g_neg_sq = g / den
    g_den = -g * ((neg_sq / den) / den)
    g_diff = (-g_neg_sq) * (2.0 * diff)
    grad_mean = -g_diff
    g_scale = (-g) / scale  # through log_scale
    if c.ent_coef != 0.0:  # with ent_coef 0 its term is a signed zero, which adds nothing
        g_entropy = entropy_gradient(mean.shape[0], c, mean.dtype).unsqueeze(1).expand_as(mean)
        g_scale = g_entropy / scale + g_scale
    g_scale = g_scale + (g_den * 2) * (2.0 * scale)  # through var: its gradient arrives last
    return s, grad_mean, g_scale, entropy


def gaussian_ppo_loss(
    mean: th.Tensor, values: th.Tensor, batch: Minibatch, c: Coefficients, log_std: th.Tensor
) -> LossResult:
    """The gradient of SB3 2.x's ``PPO.train`` loss for ``DiagGaussianDistribution(mean, log_std)``."""
    std = log_std.exp()
    s, grad_mean, g_scale, entropy = _normal_loss(mean, th.ones_like(mean) * std, values, batch, c)
    grad_log_std = g_scale.sum((0,), keepdim=True).view(std.shape) * std  # sum_to the broadcast, exp
    return s.result(grad_mean, batch, entropy=entropy, grad_log_std=grad_log_std)


def sde_ppo_loss(
    mean: th.Tensor,
    values: th.Tensor,
    batch: Minibatch,
    c: Coefficients,
    log_std: th.Tensor,
    latent: Callable[[th.Tensor], th.Tensor],
    latent_backward: Callable[[th.Tensor], th.Tensor],
    full_std: bool,
    epsilon: float,
) -> LossResult:
    """The same for SB3's ``StateDependentNoiseDistribution`` (gSDE, no squashing, ``exp`` std).

    ``Normal(mean, sqrt(mm(latent**2, std**2) + epsilon))`` with the latent detached (SB3's
    ``learn_features=False``): the gradient reaches ``log_std`` through ``sqrt``
    (``grad / (2 * result)``), ``mm`` (``latent**2 .t() @ grad``) and ``pow``; and with
    ``full_std=False`` the sum over the action columns that ``std`` was broadcast to.
    ``latent(std_sq)`` is ``mm(latent**2, std_sq)`` and ``latent_backward(grad)`` its backward to
    ``std_sq`` (the program's: per task for the multi-task policy).
    """
    std, std_full, scale = sde_scale(log_std, latent, full_std, mean.shape[1], epsilon)
    s, grad_mean, g_scale, entropy = _normal_loss(mean, scale, values, batch, c)
    g_variance = g_scale / (2 * scale)
    g_std = latent_backward(g_variance) * (2.0 * std_full)
    if not full_std:
        g_std = g_std.sum((1,), keepdim=True)
    return s.result(grad_mean, batch, entropy=entropy, grad_log_std=g_std * std)
