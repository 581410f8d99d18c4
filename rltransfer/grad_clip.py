"""Gradient-norm clipping as ``th.nn.utils.clip_grad_norm_`` computes it, without its grouping overhead."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch as th


def clip_coefficient(total_norm: th.Tensor, max_norm: float) -> float | None:
    """The factor ``clip_grad_norm_`` multiplies a CPU float32 norm's gradients by; ``None`` for exactly 1.

    torch's ``clamp(max_norm / (norm + 1e-6), max=1.0)`` (the division is ``reciprocal() *
    max_norm``) in float32 scalars: the same bits without four tensor operations; and
    multiplying by exactly 1 changes no gradient, so below the threshold nothing need run.
    NaN is returned as NaN: the gradients become NaN, as torch's multiplication makes them.
    """
    one = np.float32(1.0)
    coef = min(np.float32(max_norm) * (one / (np.float32(total_norm.item()) + np.float32(1e-6))), one)
    return None if coef == one else float(coef)


def total_norm(grads: list[th.Tensor]) -> th.Tensor:
    """``clip_grad_norm_``'s total: the 2-norm of the per-tensor 2-norms (torch's foreach kernels)."""
    with th.no_grad():
        return th.linalg.vector_norm(th.stack(th._foreach_norm(grads, 2.0)), 2.0)


def clip_grad_norm(params: Sequence[th.Tensor], max_norm: float) -> None:
    """``th.nn.utils.clip_grad_norm_`` for same-device, same-dtype gradients, without the grouping."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    if any(g.dtype != grads[0].dtype or g.device != grads[0].device for g in grads):
        th.nn.utils.clip_grad_norm_(params, max_norm)
        return
    norm = total_norm(grads)
    if norm.dtype != th.float32 or norm.device.type != "cpu":
        th._foreach_mul_(grads, th.clamp(float(max_norm) / (norm + 1e-6), max=1.0))
        return
    coef = clip_coefficient(norm, max_norm)
    if coef is not None:
        th._foreach_mul_(grads, coef)
