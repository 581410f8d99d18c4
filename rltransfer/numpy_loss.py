"""PPO's loss gradient in numpy, for minibatches of a few rows: ``ppo_loss``'s formulas, to float rounding.

At SB3's 64-sample minibatches torch's per-operation dispatch outweighs the arithmetic of the
categorical loss's ~35 operations, and numpy's is a fraction of it: 151 against 79 us a
minibatch inside the loop on the benchmark machine (``benchmarks/step_parts.py update``, with
and without ``--before``). The formulas are
``ppo_loss``'s (autograd's own, written out); numpy's ``exp``, ``log`` and sums round
differently from torch's, so only programs that agree with SB3 to float rounding anyway
(``lean.rounding_only``: numpy's tanh, the multi-task policy) take this path, on the CPU. Inputs
and outputs are CPU tensors sharing memory with the numpy arrays (no copies); the logged
statistics are computed from them by ``ppo_loss.logged_stats`` as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch as th

from rltransfer.gaussian_loss import ENTROPY_CONSTANT, LOG_SQRT_2PI
from rltransfer.ppo_loss import Coefficients, LossResult, Minibatch

FLOAT32_MIN = np.finfo(np.float32).min


@dataclass
class Surrogate:
    """``ppo_loss.Surrogate`` as numpy arrays."""

    grad_log_prob: np.ndarray
    grad_values: np.ndarray
    ratio: np.ndarray
    log_ratio: np.ndarray
    surrogate: np.ndarray
    surrogate_clipped: np.ndarray
    values_pred: np.ndarray

    def result(
        self,
        grad_out: np.ndarray,
        batch: Minibatch,
        normalized_logits: np.ndarray | None = None,
        entropy: np.ndarray | None = None,
        grad_log_std: np.ndarray | None = None,
    ) -> LossResult:
        t = th.from_numpy
        return LossResult(
            t(grad_out),
            t(self.grad_values),
            None if normalized_logits is None else t(normalized_logits),
            t(self.ratio),
            t(self.log_ratio),
            t(self.surrogate),
            t(self.surrogate_clipped),
            t(self.values_pred),
            batch.returns,
            None if entropy is None else t(entropy),
            None if grad_log_std is None else t(grad_log_std),
        )


def surrogate_gradient(log_prob: np.ndarray, values: np.ndarray, batch: Minibatch, c: Coefficients) -> Surrogate:
    """``ppo_loss.surrogate_gradient``: the gradient of ``pl + vf_coef * vl`` w.r.t. ``log_prob`` and the values."""
    n = len(log_prob)
    flat_values = values.reshape(-1)
    advantages = batch.advantages.numpy()
    if c.normalize_advantage and n > 1:
        # torch's (unbiased) std; numpy's mean and std wrappers cost more than the arithmetic here
        centred = advantages - advantages.sum() / np.float32(n)
        advantages = centred / (np.sqrt(np.dot(centred, centred) / np.float32(n - 1)) + np.float32(1e-8))
    log_ratio = log_prob - batch.old_log_prob.numpy()
    ratio = np.exp(log_ratio)
    surrogate = advantages * ratio
    clipped = np.minimum(np.maximum(ratio, np.float32(1 - c.clip_range)), np.float32(1 + c.clip_range))
    surrogate_clipped = advantages * clipped
    if c.clip_range_vf is None:
        values_pred = flat_values
    else:
        old_values, clip_vf = batch.old_values.numpy(), np.float32(c.clip_range_vf)
        delta = flat_values - old_values
        values_pred = old_values + np.minimum(np.maximum(delta, -clip_vf), clip_vf)
    # ``-min(s, s_clipped).mean()``'s gradient, as ``ppo_loss`` explains it.
    g_full = advantages * np.float32(-1.0 / n)
    half = (surrogate == surrogate_clipped) & (ratio != clipped)
    g_ratio = np.where(surrogate > surrogate_clipped, np.float32(0.0), np.where(half, g_full / 2, g_full))
    g_values_pred = (values_pred - batch.returns.numpy()) * np.float32(2.0 / n * c.vf_coef)  # mse_loss's backward
    if c.clip_range_vf is not None:
        g_values_pred = np.where((delta >= -clip_vf) & (delta <= clip_vf), g_values_pred, np.float32(0.0))
    g_values = g_values_pred.reshape(values.shape)
    return Surrogate(g_ratio * ratio, g_values, ratio, log_ratio, surrogate, surrogate_clipped, values_pred)


def categorical_ppo_loss(logits: th.Tensor, values: th.Tensor, batch: Minibatch, c: Coefficients) -> LossResult:
    """``ppo_loss.categorical_ppo_loss`` in numpy: the gradient w.r.t. the logits and values."""
    x = logits.numpy()
    n, rows, actions = len(x), np.arange(len(x)), batch.actions.numpy()
    shifted = x - x.max(1, keepdims=True)
    ln = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))  # Categorical's normalised logits
    probs = np.exp(ln)
    s = surrogate_gradient(ln[rows, actions], values.numpy(), batch, c)
    grad = probs * -s.grad_log_prob[:, None]  # gather's, then logsumexp's backward
    grad[rows, actions] += s.grad_log_prob
    if c.ent_coef != 0.0:
        # el = -mean(entropy), entropy = -sum(clamp(ln, min) * softmax(ln)): each product's
        # gradient is ent_coef / n; softmax's backward. (clamp's pass-through term, g * probs,
        # sums to g per row, and logsumexp's backward takes exactly that back off: it adds nothing.)
        g_clamped = np.float32(c.ent_coef / n) * np.maximum(ln, FLOAT32_MIN)
        grad += probs * (g_clamped - (g_clamped * probs).sum(1, keepdims=True))
    return s.result(grad, batch, ln)


def _normal_loss(
    mean: np.ndarray, scale: np.ndarray, values: np.ndarray, batch: Minibatch, c: Coefficients
) -> tuple[Surrogate, np.ndarray, np.ndarray, np.ndarray]:
    """``gaussian_loss._normal_loss``: the surrogate under ``Normal(mean, scale)``, the gradients
    w.r.t. the means and the scale, and each sample's entropy."""
    var = scale**2
    log_scale = np.log(scale)
    diff = batch.actions.numpy() - mean
    quotient = -(diff**2) / (2 * var)
    log_prob = (quotient - log_scale - np.float32(LOG_SQRT_2PI)).sum(1)
    entropy = (np.float32(ENTROPY_CONSTANT) + log_scale).sum(1)
    s = surrogate_gradient(log_prob, values, batch, c)
    g = s.grad_log_prob[:, None]  # the sum over action dimensions
    grad_mean = g * diff / var
    # log_prob's terms -log(scale) and quotient (through var), and -ent_coef / n per entropy
    g_scale = (g * (-1 - 2 * quotient) - np.float32(c.ent_coef / len(mean))) / scale
    return s, grad_mean, g_scale, entropy


def gaussian_ppo_loss(
    mean: th.Tensor, values: th.Tensor, batch: Minibatch, c: Coefficients, log_std: th.Tensor
) -> LossResult:
    """``gaussian_loss.gaussian_ppo_loss`` in numpy (``DiagGaussianDistribution(mean, log_std)``)."""
    m = mean.numpy()
    std = np.exp(log_std.detach().numpy())
    s, grad_mean, g_scale, entropy = _normal_loss(m, np.ones_like(m) * std, values.numpy(), batch, c)
    return s.result(grad_mean, batch, entropy=entropy, grad_log_std=g_scale.sum(0) * std)


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
    """``gaussian_loss.sde_ppo_loss`` in numpy; ``latent`` and ``latent_backward`` are the program's (torch)."""
    m = mean.numpy()
    std = np.exp(log_std.detach().numpy())
    std_full = std if full_std else np.ones((std.shape[0], m.shape[1]), np.float32) * std
    scale = np.sqrt(latent(th.from_numpy(std_full**2)).numpy() + np.float32(epsilon))
    s, grad_mean, g_scale, entropy = _normal_loss(m, scale, values.numpy(), batch, c)
    g_std = latent_backward(th.from_numpy(g_scale / (2 * scale))).numpy() * (2 * std_full)
    if not full_std:
        g_std = g_std.sum(1, keepdims=True)
    return s.result(grad_mean, batch, entropy=entropy, grad_log_std=g_std * std)
