"""One step of a fused ``torch.optim.Adam`` without ``Optimizer.step``'s per-call bookkeeping.

``Adam(fused=True).step()`` spends most of its ~60 us per PPO minibatch in Python (hook
dispatch, per-parameter state look-ups, grouping tensors by device) around one fused kernel
call per group. ``fused_adam_step`` makes that same call (``_foreach_add_`` on the step
counters, then ``torch._fused_adam_``) on the optimizer's own state, so weights and moments
are bit-identical and ``optimizer.state_dict()`` is unchanged (``tests/test_mlp_backprop.py``).
Where anything differs from the plain case it does nothing and returns ``False``; the caller
then calls ``optimizer.step()``.
"""

from __future__ import annotations

import torch as th
from torch.optim import optimizer as optimizer_module


def _plain_fused(optimizer: th.optim.Optimizer) -> bool:
    if type(optimizer) is not th.optim.Adam:
        return False
    if optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks:
        return False
    if optimizer_module._global_optimizer_pre_hooks or optimizer_module._global_optimizer_post_hooks:
        return False
    for group in optimizer.param_groups:
        if not group.get("fused") or group.get("amsgrad") or group.get("maximize") or group.get("capturable"):
            return False
        if group.get("differentiable") or group.get("decoupled_weight_decay") or isinstance(group["lr"], th.Tensor):
            return False
    return True


def fused_adam_step(optimizer: th.optim.Optimizer) -> bool:
    """``optimizer.step()`` for a plain fused Adam whose state exists; ``False`` (nothing done) otherwise."""
    if not _plain_fused(optimizer):
        return False
    calls = []
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        if any(not optimizer.state.get(p) for p in params):  # first step: let Adam create its state
            return False
        states = [optimizer.state[p] for p in params]
        device, dtype = params[0].device, params[0].dtype
        if any(p.device != device or p.dtype != dtype or p.grad.is_sparse for p in params):
            return False
        calls.append((group, params, states))
    for group, params, states in calls:
        steps = [s["step"] for s in states]
        beta1, beta2 = group["betas"]
        th._foreach_add_(steps, 1)
        th._fused_adam_(
            params,
            [p.grad for p in params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            steps,
            amsgrad=False,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )
    return True
