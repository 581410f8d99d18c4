"""Steps of a fused ``torch.optim.Adam`` without ``Optimizer.step``'s per-call bookkeeping.

``Adam(fused=True).step()`` spends most of its ~60 us per PPO minibatch in Python (hook
dispatch, per-parameter state look-ups, grouping tensors by device) around one fused kernel
call per group. ``FusedAdamStepper`` makes that same call (the step counters' increment, then
``torch._fused_adam_``) on the optimizer's own state, so weights and moments are bit-identical
and ``optimizer.state_dict()`` holds the same values (``tests/test_mlp_backprop.py``).
Where anything differs from the plain case ``optimizer.step()`` runs instead.

On the CPU, torch's foreach operations loop over their tensors one kernel at a time, so a
dozen parameters' step counters, gradient norms and clipping cost more than Adam's
arithmetic: ``clip_and_step`` copies the gradients into one flat buffer, clips it with one
norm and one multiplication, and gives Adam its views; the step counters are views of one
tensor, incremented in one operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch as th
from torch.optim import optimizer as optimizer_module

from rltransfer.grad_clip import clip_coefficient, clip_grad_norm, total_norm


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


@dataclass
class _Group:
    """One parameter group's kernel call: its parameters with gradients, those without, Adam's state."""

    group: dict[str, Any]
    params: list[th.Tensor]
    others: list[th.Tensor]
    exp_avgs: list[th.Tensor]
    exp_avg_sqs: list[th.Tensor]
    steps: list[th.Tensor]


@dataclass
class _Plan:
    groups: list[_Group]
    steps: th.Tensor | None  # every planned parameter's step counter, each a view of this tensor
    flat: th.Tensor | None  # the gradients' flat buffer (CPU float32 plans only)
    views: list[th.Tensor]  # each planned parameter's gradient as a view of ``flat``


class FusedAdamStepper:
    """``optimizer.step()``, for a plain fused Adam in one kernel call per group with no per-step set-up.

    The lists of parameters, moments and step counters are gathered once, at the first step
    after Adam has created its state, and reused while the same parameters have gradients;
    otherwise (and for any other optimizer) ``optimizer.step()`` runs.

    Args:
        flat: one flat gradient buffer and one tensor of step counters (default); ``False``
            steps per tensor, as before them (the same values; for side-by-side benchmarks).
    """

    def __init__(self, optimizer: th.optim.Optimizer, flat: bool = True) -> None:
        self.optimizer = optimizer
        self.plain = _plain_fused(optimizer)
        self.flat = flat
        self._plan: _Plan | None = None
        # clip_and_step's parameters, and whether they are all the optimizer's
        self._clipped: tuple[Sequence[th.Tensor], bool] | None = None

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
        if self._ready():
            self._run()
            return True
        self.optimizer.step()
        self._plan = None  # Adam may have created state: gather again next time
        return False

    def clip_and_step(self, params: Sequence[th.Tensor], max_norm: float, any_order: bool = False) -> bool:
        """``clip_grad_norm(params, max_norm)``, then ``step()``; ``True`` if on the flat buffer.

        The flat buffer serves where every parameter of ``params`` is the optimizer's and the
        gradients are CPU float32. Its norm is torch's (per-tensor norms, then theirs: the same
        bits) or, with ``any_order``, the buffer's own (equal to it to float rounding). The
        clipped gradients are left in ``.grad`` as views of the buffer, as ``clip_grad_norm_``
        leaves them.
        """
        if not (self._ready() and self._plan is not None and self._plan.flat is not None and self._owns(params)):
            clip_grad_norm(params, max_norm)
            self.step()
            return False
        plan = self._plan
        flat = plan.flat
        assert flat is not None
        th.cat([_grad(p).reshape(-1) for g in plan.groups for p in g.params], out=flat)
        if any_order:
            norm = th.linalg.vector_norm(flat, 2.0)
        else:
            norm = total_norm([p.grad for p in params if p.grad is not None])  # clip_grad_norm's order
        coef = clip_coefficient(norm, max_norm)
        if coef is not None:
            flat.mul_(coef)
        params_in_plan = (p for g in plan.groups for p in g.params)
        for p, view in zip(params_in_plan, plan.views, strict=True):
            p.grad = view
        self._run()
        return True

    def _owns(self, params: Sequence[th.Tensor]) -> bool:
        """Whether every parameter of ``params`` is the optimizer's (then the plan has all their gradients)."""
        if self._clipped is None or self._clipped[0] is not params:
            mine = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
            self._clipped = (params, all(id(p) in mine for p in params))
        return self._clipped[1]

    def _ready(self) -> bool:
        """Whether a plan covers exactly the parameters that have gradients (gathered again if not)."""
        if not self.plain:
            return False
        plan = self._plan
        if plan is not None:
            for g in plan.groups:
                if any(p.grad is None for p in g.params) or any(p.grad is not None for p in g.others):
                    plan = self._plan = None  # which parameters have gradients changed
                    break
        return plan is not None or self._build()

    def _build(self) -> bool:
        state = self.optimizer.state
        groups = []
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
            exp_avgs, exp_avg_sqs = ([state[p][key] for p in params] for key in ("exp_avg", "exp_avg_sq"))
            groups.append(_Group(group, params, others, exp_avgs, exp_avg_sqs, []))
        planned = [p for g in groups for p in g.params]
        if not planned or len({p.device for p in planned}) > 1:
            return False
        steps, flat, views = None, None, []
        if self.flat:
            # The step counters as views of one tensor (their values, Adam's state keeps them):
            # one increment per step instead of one per parameter.
            steps = th.stack([state[p]["step"] for p in planned])
            for i, p in enumerate(planned):
                state[p]["step"] = steps[i]
        for g in groups:
            g.steps = [state[p]["step"] for p in g.params]
        on_cpu = all(p.device.type == "cpu" and p.dtype == th.float32 and _grad(p).dtype == th.float32 for p in planned)
        if self.flat and on_cpu:
            flat = th.empty(sum(p.numel() for p in planned), dtype=th.float32)
            views = [v.view_as(p) for v, p in zip(flat.split([p.numel() for p in planned]), planned, strict=True)]
        self._plan = _Plan(groups, steps, flat, views)
        return True

    def _run(self) -> None:
        assert self._plan is not None
        if self._plan.steps is not None:
            self._plan.steps.add_(1)
        for g in self._plan.groups:
            if self._plan.steps is None:
                th._foreach_add_(g.steps, 1)
            group = g.group
            beta1, beta2 = group["betas"]
            th._fused_adam_(
                g.params,
                [_grad(p) for p in g.params],
                g.exp_avgs,
                g.exp_avg_sqs,
                [],
                g.steps,
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


def _grad(p: th.Tensor) -> th.Tensor:
    assert p.grad is not None  # the plan's parameters have gradients (``_ready``)
    return p.grad
