"""Steps of a fused ``torch.optim.Adam`` without ``Optimizer.step``'s per-call bookkeeping.

``Adam(fused=True).step()`` spends most of its ~60 us per PPO minibatch in Python (hook
dispatch, per-parameter state look-ups, grouping tensors by device) around one fused kernel
call per group. ``FusedAdamStepper`` makes that same call (``_foreach_add_`` on the step
counters, then ``torch._fused_adam_``) on the optimizer's own state, so weights and moments
are bit-identical and ``optimizer.state_dict()`` is unchanged (``tests/test_mlp_backprop.py``).
Where anything differs from the plain case ``optimizer.step()`` runs instead.
"""

from __future__ import annotations

from typing import Any

import torch as th
from torch.optim import optimizer as optimizer_module


def _plain_fused(optimizer: th.optim.Optimizer) -> bool:
    if type(optimizer) is not th.optim.Adam or not hasattr(th, "_fused_adam_"):
        return False
    try:  # torch internals (2.x): a torch without them steps through optimizer.step()
        hooks = [
            optimizer._optimizer_step_pre_hooks,
            optimizer._optimizer_step_post_hooks,
            optimizer_module._global_optimizer_pre_hooks,
            optimizer_module._global_optimizer_post_hooks,
        ]
    except AttributeError:
        return False
    if any(hooks):
        return False
    for group in optimizer.param_groups:
        if not group.get("fused") or group.get("amsgrad") or group.get("maximize") or group.get("capturable"):
            return False
        if group.get("differentiable") or group.get("decoupled_weight_decay") or isinstance(group["lr"], th.Tensor):
            return False
    return True


class FusedAdamStepper:
    """``optimizer.step()``, for a plain fused Adam in one kernel call per group with no per-step set-up.

    The lists of parameters, moments and step counters are gathered once, at the first step
    after Adam has created its state, and reused while the same parameters have gradients;
    otherwise (and for any other optimizer) ``optimizer.step()`` runs.
    """

    def __init__(self, optimizer: th.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.plain = _plain_fused(optimizer)
        self._plan: list[tuple[dict[str, Any], list[th.Tensor], list[th.Tensor], list[list[th.Tensor]]]] | None = None

    def zero_grad(self) -> None:
        """``optimizer.zero_grad()`` (gradients to ``None``), without its per-call wrappers for a plain Adam."""
        if not self.plain:
            self.optimizer.zero_grad()
            return
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self) -> bool:
        """One Adam step; ``True`` if it ran as the fused kernel call."""
        if self.plain and (self._plan is not None or self._build()) and self._run():
            return True
        self.optimizer.step()
        self._plan = None  # Adam may have created state: gather again next time
        return False

    def _build(self) -> bool:
        state = self.optimizer.state
        plan = []
        for group in self.optimizer.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            others = [p for p in group["params"] if p.grad is None]
            if not params:
                continue
            if any(not state.get(p) for p in params):  # first step: let Adam create its state
                return False
            device, dtype = params[0].device, params[0].dtype
            if any(p.device != device or p.dtype != dtype or p.grad.is_sparse for p in params):
                return False
            moments = [[state[p][key] for p in params] for key in ("exp_avg", "exp_avg_sq", "step")]
            plan.append((group, params, others, moments))
        self._plan = plan
        return True

    def _run(self) -> bool:
        assert self._plan is not None
        calls = []
        for group, params, others, moments in self._plan:
            grads = [g for g in (p.grad for p in params) if g is not None]
            if len(grads) < len(params) or any(p.grad is not None for p in others):
                self._plan = None  # which parameters have gradients changed
                return False
            calls.append((group, params, grads, moments))
        for group, params, grads, (exp_avgs, exp_avg_sqs, steps) in calls:
            beta1, beta2 = group["betas"]
            th._foreach_add_(steps, 1)
            th._fused_adam_(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
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
