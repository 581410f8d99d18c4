"""PPO's clipped loss for a categorical policy, with its gradient written out.

SB3's ``PPO.train`` builds the loss with about 30 autograd nodes and back-propagates through
them; here the forward operations the gradient needs run without a graph, and the gradient
with respect to the logits and values is formed from the formulas autograd itself applies
(``minimum``'s tie split, ``clamp``'s pass-through mask, ``exp``, ``gather``, ``logsumexp``,
``softmax``, ``mse_loss``), so it is bit-identical (``tests/test_mlp_backprop.py``). With
``rltransfer.mlp_backprop`` this takes the whole minibatch off the autograd engine.

What PPO only logs (policy and value loss, entropy, clip fraction, approximate KL) is left to
``logged_stats``, once per update for all minibatches together: minibatches of one size are
stacked and reduced along a dimension, which gives every row's full reduction bit for bit
(tested), in a fifth of the operations.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch as th
from torch.nn import functional as F

MEAN = 1  # torch's Reduction::Mean


@dataclass
class Minibatch:
    """One minibatch of the rollout buffer, flat: actions (``long`` for discrete spaces) and per-sample scalars."""

    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor


@dataclass
class Coefficients:
    """The loss's settings for one update (clip ranges at the current progress)."""

    clip_range: float
    clip_range_vf: float | None
    ent_coef: float
    vf_coef: float
    normalize_advantage: bool


@dataclass
class LossResult:
    """The loss's gradients w.r.t. the action net's output ``(B, A)`` and the values ``(B, 1)``.

    The output is the logits (categorical) or the means (Gaussian, which also has the gradient
    w.r.t. ``log_std``); the other fields are what the logged values need.
    """

    grad_logits: th.Tensor
    grad_values: th.Tensor
    normalized_logits: th.Tensor | None  # categorical: the entropy is computed from them
    ratio: th.Tensor
    log_ratio: th.Tensor
    surrogate: th.Tensor
    surrogate_clipped: th.Tensor
    values_pred: th.Tensor
    returns: th.Tensor
    entropy: th.Tensor | None = None  # Gaussian: each sample's entropy
    grad_log_std: th.Tensor | None = None

    def approx_kl(self) -> float:
        """SB3's approximate KL divergence (``ratio`` is ``exp(log_ratio)``, the value SB3 recomputes)."""
        return float(th.mean((self.ratio - 1) - self.log_ratio).item())


@dataclass
class Surrogate:
    """PPO's clipped surrogate and value loss at given log-probabilities: their gradients and logged parts."""

    grad_log_prob: th.Tensor  # (B,)
    grad_values: th.Tensor  # shaped as the values
    ratio: th.Tensor
    log_ratio: th.Tensor
    surrogate: th.Tensor
    surrogate_clipped: th.Tensor
    values_pred: th.Tensor

    def result(
        self,
        grad_out: th.Tensor,
        batch: Minibatch,
        normalized_logits: th.Tensor | None = None,
        entropy: th.Tensor | None = None,
        grad_log_std: th.Tensor | None = None,
    ) -> LossResult:
        """The ``LossResult`` given the gradient w.r.t. the action net's output."""
        return LossResult(
            grad_out,
            self.grad_values,
            normalized_logits,
            self.ratio,
            self.log_ratio,
            self.surrogate,
            self.surrogate_clipped,
            self.values_pred,
            batch.returns,
            entropy,
            grad_log_std,
        )


def _clamp_backward(grad: th.Tensor, x: th.Tensor, low: float, high: float) -> th.Tensor:
    """autograd's ``clamp`` backward: the gradient passes where ``low <= x <= high``."""
    return th.where((x >= low).logical_and_(x <= high), grad, 0.0)


def surrogate_gradient(log_prob: th.Tensor, values: th.Tensor, batch: Minibatch, c: Coefficients) -> Surrogate:
    """The gradient of ``pl + vf_coef * vl`` in SB3 2.x's ``PPO.train`` w.r.t. ``log_prob`` and the values."""
    n = log_prob.shape[0]
    flat_values = values.flatten()
    advantages = batch.advantages
    if c.normalize_advantage and n > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    log_ratio = log_prob - batch.old_log_prob
    ratio = th.exp(log_ratio)
    surrogate = advantages * ratio
    clipped = th.clamp(ratio, 1 - c.clip_range, 1 + c.clip_range)
    surrogate_clipped = advantages * clipped
    if c.clip_range_vf is None:
        values_pred = flat_values
    else:
        delta = flat_values - batch.old_values
        values_pred = batch.old_values + th.clamp(delta, -c.clip_range_vf, c.clip_range_vf)

    # Backward from ``loss = pl + ent_coef * el + vf_coef * vl``, with autograd's formulas.
    # ``-min(s, s_clipped).mean()``: each sample's gradient g = -1/n goes to the smaller
    # surrogate, halved to each on a tie, and ``clamp`` passes the clipped one's only inside
    # the clip range, where ``clipped == ratio``. Summed: 0 where the clipped surrogate is
    # smaller (only possible outside the range), g·A/2 on a tie outside the range (rounding),
    # else g·A (on a tie inside, (g/2)·A + (g/2)·A is exactly g·A: halving is exact).
    # autograd's -1/n in float32: division rounded in float64 and then to float32 is the same
    # correctly rounded quotient (float64 carries more than twice float32's precision).
    g_full = advantages * float(np.float32(-1.0 / n))
    half = (surrogate == surrogate_clipped).logical_and_(ratio != clipped)
    g_ratio = th.where(surrogate > surrogate_clipped, 0.0, th.where(half, g_full / 2, g_full))
    g_log_prob = g_ratio * ratio  # exp, then the subtraction passes it through
    g_values_pred = th.ops.aten.mse_loss_backward(
        th.full((), c.vf_coef, dtype=log_prob.dtype), values_pred, batch.returns, MEAN
    )
    if c.clip_range_vf is not None:
        g_values_pred = _clamp_backward(g_values_pred, delta, -c.clip_range_vf, c.clip_range_vf)
    return Surrogate(
        g_log_prob, g_values_pred.view_as(values), ratio, log_ratio, surrogate, surrogate_clipped, values_pred
    )


def entropy_gradient(n: int, c: Coefficients, dtype: th.dtype) -> th.Tensor:
    """The gradient of ``ent_coef * el``, ``el = -mean(entropy)``, w.r.t. each sample's entropy ``(n,)``."""
    one = th.ones((), dtype=dtype)
    return (-(one * c.ent_coef)).expand(n) / n  # mul by ent_coef, neg, mean


def categorical_ppo_loss(logits: th.Tensor, values: th.Tensor, batch: Minibatch, c: Coefficients) -> LossResult:
    """The gradient of SB3 2.x's ``PPO.train`` loss for ``Categorical(logits)``."""
    n = logits.shape[0]
    lse = logits.logsumexp(dim=-1, keepdim=True)
    ln = logits - lse  # Categorical's normalised logits
    index = batch.actions.unsqueeze(-1)
    log_prob = ln.gather(-1, index).squeeze(-1)
    s = surrogate_gradient(log_prob, values, batch, c)
    g_log_prob = s.grad_log_prob.unsqueeze(-1)
    g_ln = th.zeros_like(ln).scatter_add_(-1, index, g_log_prob)  # gather
    if c.ent_coef != 0.0:
        # el = -mean(entropy), entropy = -sum(clamp(ln, min) * softmax(ln)).
        clamped = th.clamp(ln, min=th.finfo(ln.dtype).min)
        probs = F.softmax(ln, dim=-1)
        g_entropy = -entropy_gradient(n, c, logits.dtype)
        g_product = g_entropy.unsqueeze(-1).expand_as(ln)  # sum over actions
        g_ln_softmax = th._softmax_backward_data(g_product * clamped, probs, -1, ln.dtype)
        g_ln_clamp = th.where(ln >= th.finfo(ln.dtype).min, g_product * probs, 0.0)
        g_ln = g_ln_softmax + g_ln_clamp + g_ln
        g_lse = (-g_ln).sum(-1, keepdim=True)
    else:
        g_lse = -g_log_prob  # the sum over actions of one non-zero entry: exact
    grad_logits = g_ln + g_lse * ln.exp()  # logsumexp's backward: exp(logits - lse), which is ln
    return s.result(grad_logits, batch, normalized_logits=ln)


def logged_stats(results: Sequence[LossResult], c: Coefficients) -> list[list[float]]:
    """Per minibatch, SB3's logged ``[policy loss, clip fraction, value loss, entropy loss, approx KL]``."""
    rows: list[list[float]] = [[] for _ in results]
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, result in enumerate(results):
        by_size[result.ratio.shape[0]].append(i)
    for indices in by_size.values():
        group = [results[i] for i in indices]

        def stacked(name: str, group: list[LossResult] = group) -> th.Tensor:
            return th.stack([getattr(r, name) for r in group])

        ratio = stacked("ratio")
        if group[0].entropy is not None:  # Gaussian: el = -mean(entropy)
            entropy_loss = -stacked("entropy").mean(1)
        else:  # -mean(-x) is mean(x) exactly: SB3's two negations of the entropy cancel.
            ln = stacked("normalized_logits")
            entropy_loss = (th.clamp(ln, min=th.finfo(ln.dtype).min) * F.softmax(ln, dim=-1)).sum(-1).mean(1)
        policy_loss = -th.min(stacked("surrogate"), stacked("surrogate_clipped")).mean(1)
        clip_fraction = (th.abs(ratio - 1) > c.clip_range).float().mean(1)
        value_loss = F.mse_loss(stacked("returns"), stacked("values_pred"), reduction="none").mean(1)
        approx_kl = ((ratio - 1) - stacked("log_ratio")).mean(1)
        table = th.stack([policy_loss, clip_fraction, value_loss, entropy_loss, approx_kl], dim=1)
        for i, row in zip(indices, table.tolist(), strict=True):
            rows[i] = row
    return rows


def total_loss(stats: Sequence[float], c: Coefficients) -> float:
    """The loss SB3 logs, ``pl + ent_coef * el + vf_coef * vl``, in float32 as it computes it."""
    policy_loss, _, value_loss, entropy_loss, _ = (th.tensor(v, dtype=th.float32) for v in stats)
    return float((policy_loss + c.ent_coef * entropy_loss + c.vf_coef * value_loss).item())
