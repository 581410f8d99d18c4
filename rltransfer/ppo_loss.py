"""PPO's clipped loss for a categorical policy, with its gradient written out.

SB3's ``PPO.train`` builds the loss with about 30 autograd nodes and back-propagates through
them; here the same forward operations run without a graph and the gradient with respect to
the logits and values is formed from the formulas autograd itself applies (``minimum``'s tie
split, ``clamp``'s pass-through mask, ``exp``, ``gather``, ``logsumexp``, ``softmax``,
``mse_loss``), in the order it applies them, so the gradients are bit-identical
(``tests/test_mlp_backprop.py``). With ``rltransfer.mlp_backprop`` this takes the whole
minibatch off the autograd engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch as th
from torch.nn import functional as F

MEAN = 1  # torch's Reduction::Mean


@dataclass
class Minibatch:
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor


@dataclass
class Coefficients:
    clip_range: float
    clip_range_vf: float | None
    ent_coef: float
    vf_coef: float
    normalize_advantage: bool


@dataclass
class LossResult:
    """Gradients of the loss w.r.t. the logits ``(B, A)`` and values ``(B, 1)``, and what PPO logs.

    ``stats`` holds policy loss, clip fraction, value loss, entropy loss and approximate KL, in
    that order, as one tensor (one ``tolist()`` instead of five ``item()`` calls).
    """

    grad_logits: th.Tensor
    grad_values: th.Tensor
    stats: th.Tensor

    def loss(self, c: Coefficients) -> float:
        """The total loss as SB3 computes (and logs) it."""
        policy_loss, _, value_loss, entropy_loss, _ = self.stats.unbind()
        return float((policy_loss + c.ent_coef * entropy_loss + c.vf_coef * value_loss).item())


def _clamp_backward(grad: th.Tensor, x: th.Tensor, low: float, high: float) -> th.Tensor:
    """autograd's ``clamp`` backward: the gradient passes where ``low <= x <= high``."""
    return th.where((x >= low).logical_and_(x <= high), grad, th.zeros((), dtype=grad.dtype))


def categorical_ppo_loss(logits: th.Tensor, values: th.Tensor, batch: Minibatch, c: Coefficients) -> LossResult:
    """The loss of SB3 2.x's ``PPO.train`` for ``Categorical(logits)``, forward and backward."""
    n = logits.shape[0]
    lse = logits.logsumexp(dim=-1, keepdim=True)
    ln = logits - lse  # Categorical's normalised logits
    index = batch.actions.unsqueeze(-1)
    log_prob = ln.gather(-1, index).squeeze(-1)
    flat_values = values.flatten()
    clamped = th.clamp(ln, min=th.finfo(ln.dtype).min)
    probs = F.softmax(ln, dim=-1)
    entropy = -(clamped * probs).sum(-1)
    advantages = batch.advantages
    if c.normalize_advantage and n > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    log_ratio = log_prob - batch.old_log_prob
    ratio = th.exp(log_ratio)
    surrogate = advantages * ratio
    clipped = th.clamp(ratio, 1 - c.clip_range, 1 + c.clip_range)
    surrogate_clipped = advantages * clipped
    policy_loss = -th.min(surrogate, surrogate_clipped).mean()
    clip_fraction = th.mean((th.abs(ratio - 1) > c.clip_range).float())
    if c.clip_range_vf is None:
        values_pred = flat_values
    else:
        delta = flat_values - batch.old_values
        values_pred = batch.old_values + th.clamp(delta, -c.clip_range_vf, c.clip_range_vf)
    value_loss = F.mse_loss(batch.returns, values_pred)
    entropy_loss = -th.mean(entropy)
    approx_kl = th.mean((ratio - 1) - log_ratio)  # ratio is exp(log_ratio): SB3 recomputes the same value
    stats = th.stack([policy_loss, clip_fraction, value_loss, entropy_loss, approx_kl])

    # Backward from ``loss = pl + ent_coef * el + vf_coef * vl``, with autograd's formulas.
    # ``-min(s, s_clipped).mean()``: each sample's gradient g = -1/n goes to the smaller
    # surrogate, halved to each on a tie, and ``clamp`` passes the clipped one's only inside
    # the clip range, where ``clipped == ratio``. Summed: 0 where the clipped surrogate is
    # smaller (only possible outside the range), g·A/2 on a tie outside the range (rounding),
    # else g·A (on a tie inside, (g/2)·A + (g/2)·A is exactly g·A: halving is exact).
    zero = th.zeros((), dtype=logits.dtype)
    g_full = (-th.ones((), dtype=logits.dtype)).expand(n) / n * advantages  # neg, mean, mul
    half = (surrogate == surrogate_clipped).logical_and_(ratio != clipped)
    g_ratio = th.where(surrogate > surrogate_clipped, zero, th.where(half, g_full / 2, g_full))
    g_log_prob = (g_ratio * ratio).unsqueeze(-1)  # exp, then the subtraction passes it through
    g_ln = th.zeros_like(ln).scatter_add_(-1, index, g_log_prob)  # gather
    if c.ent_coef != 0.0:
        one = th.ones((), dtype=logits.dtype)
        g_entropy = -((-(one * c.ent_coef)).expand(n) / n)  # mul by ent_coef, neg, mean, neg
        g_product = g_entropy.unsqueeze(-1).expand_as(ln)  # sum over actions
        g_clamped = g_product * probs
        g_probs = g_product * clamped
        g_ln_softmax = th._softmax_backward_data(g_probs, probs, -1, ln.dtype)
        g_ln_clamp = th.where(ln >= th.finfo(ln.dtype).min, g_clamped, zero)
        g_ln = g_ln_softmax + g_ln_clamp + g_ln
        g_lse = (-g_ln).sum(-1, keepdim=True)
    else:
        g_lse = -g_log_prob  # the sum over actions of one non-zero entry: exact
    grad_logits = g_ln + g_lse * ln.exp()  # logsumexp's backward: exp(logits - lse), which is ln
    g_values_pred = th.ops.aten.mse_loss_backward(
        th.full((), c.vf_coef, dtype=logits.dtype), values_pred, batch.returns, MEAN
    )
    if c.clip_range_vf is not None:
        g_values_pred = _clamp_backward(g_values_pred, delta, -c.clip_range_vf, c.clip_range_vf)
    return LossResult(grad_logits, g_values_pred.view_as(values), stats)
