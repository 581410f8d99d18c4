"""rltransfer's multi-task policy run forward and backward by hand (see ``rltransfer.mlp_backprop``).

``MultiTaskActorCriticPolicy``: a shared trunk, then per-task heads (``TaskLinear`` stacks) whose
K-block latent feeds SB3's single ``action_net``/``value_net``. Here every sample runs only its
own task: the minibatch is laid out as a ``(K, G, width)`` block (G = the largest task group,
padding rows zero; a batch sorted by task in equal groups is that block as it is, without
copies), each head layer is one ``baddbmm``, and the output layers run per task on
their own block of columns (a view of ``action_net.weight``), so the work follows the batch,
not K x it. The autograd path (``TaskHeads`` under autograd) groups the same way, but its
output layers multiply the zero-padded K-block latent, so sums run in another order: the
gradients agree with autograd's to float rounding, not bit for bit (``tests/test_mlp_backprop.py``).

Covered: ``MultiTaskTrunkExtractor`` (same observation space for all tasks), categorical or
Gaussian actions (diagonal or gSDE) without masking, a shared features extractor, on the CPU; anything
else keeps autograd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.distributions import (
    CategoricalDistribution,
    DiagGaussianDistribution,
    StateDependentNoiseDistribution,
)
from torch import nn

from rltransfer.mlp_backprop import (
    ACTIVATIONS,
    Chain,
    accumulate,
    activate,
    activation_backward,
    activation_name,
    dense_chain,
)
from rltransfer.policies.multitask import MultiTaskActorCriticPolicy, MultiTaskTrunkExtractor, TaskHeads, TaskLinear


def task_slots(task: np.ndarray, n_tasks: int) -> tuple[np.ndarray, int]:
    """Each sample's row in a ``(K * G)`` block grouped by task (in sample order within a task), and G."""
    counts = np.bincount(task, minlength=n_tasks)
    group = int(counts.max())
    order = np.argsort(task, kind="stable")
    starts = np.cumsum(counts) - counts
    rank = np.empty_like(order)
    rank[order] = np.arange(len(task)) - starts[task[order]]
    return task * group + rank, group


def block_slots(task: np.ndarray, n_tasks: int) -> tuple[np.ndarray | None, int]:
    """``task_slots``, with ``None`` for the slots where the batch is the block as it is.

    A batch sorted by task with the same number of samples per task (a rollout step over
    task-major envs) needs no copies in and out of the block.
    """
    counts = np.bincount(task, minlength=n_tasks)
    if (counts == counts[0]).all() and (task[1:] >= task[:-1]).all():
        return None, int(counts[0])
    return task_slots(task, n_tasks)


@dataclass(frozen=True)
class TaskLayout:
    """Where a batch's rows sit in the ``(K * G)`` block: each row's slot and G.

    ``slots`` is ``None`` where the batch, in order, is the block (sorted by task, equal groups).
    """

    slots: th.Tensor | None
    group: int


def sorted_layouts(tasks: np.ndarray, n_tasks: int) -> list[TaskLayout]:
    """The layout of each row of ``tasks`` ``(M, B)``, the task ids of a minibatch sorted ascending.

    ``task_slots`` for all of an epoch's minibatches in one pass of array operations, instead
    of a dozen per minibatch (which cost more than the grouping they serve at 64 samples).
    """
    m, b = tasks.shape
    cells = (np.arange(m)[:, None] * n_tasks + tasks).ravel()
    counts = np.bincount(cells, minlength=m * n_tasks).reshape(m, n_tasks)
    group = counts.max(1)
    starts = np.cumsum(counts, 1) - counts
    slots = th.from_numpy(tasks * group[:, None] + np.arange(b) - np.take_along_axis(starts, tasks, 1))
    equal = (counts == counts[:, :1]).all(1)
    return [TaskLayout(None if equal[i] else slots[i], int(group[i])) for i in range(m)]


@dataclass(frozen=True)
class TaskDense:
    """K linear layers ``(K, out, in)`` and the activation after them (``None``: none)."""

    weight: th.Tensor  # (K, out, in), each task's block in nn.Linear's layout
    bias: th.Tensor | None  # (K, out)
    act: str | None
    params: tuple[th.Tensor, th.Tensor | None]  # the parameters the gradients belong to

    def forward(self, x: th.Tensor) -> th.Tensor:
        bias = self.bias.unsqueeze(1) if self.bias is not None else x.new_zeros(())
        return activate(th.baddbmm(bias, x, self.weight.transpose(1, 2)), self.act)

    def trainable(self) -> bool:
        return any(p is not None and p.requires_grad for p in self.params)

    def backward(self, x: th.Tensor, y: th.Tensor, grad: th.Tensor, input_grad: bool) -> th.Tensor | None:
        """Accumulate this layer's parameter gradients; return the gradient w.r.t. ``x`` if asked."""
        grad = activation_backward(grad, y, self.act)
        weight, bias = self.params
        if weight.requires_grad:
            g_weight = th.bmm(grad.transpose(1, 2), x)  # (K, out, in)
            accumulate(weight, g_weight if weight.dim() == 3 else g_weight.permute(1, 0, 2).reshape(weight.shape))
        if bias is not None and bias.requires_grad:
            g_bias = grad.sum(1)  # (K, out); padding rows carry zero gradient
            accumulate(bias, g_bias if bias.dim() == 2 else g_bias.sum(0))
        return th.bmm(grad, self.weight) if input_grad else None


def _output_layer(linear: nn.Linear, n_tasks: int) -> TaskDense:
    """SB3's output layer over the K-block latent as K layers on each task's block of columns."""
    out, width = linear.weight.shape
    blocks = linear.weight.view(out, n_tasks, width // n_tasks).permute(1, 0, 2)  # (K, out, h), a view
    # The shared bias is added once per sample: as a (K, out) broadcast of the same vector.
    bias = linear.bias.unsqueeze(0).expand(n_tasks, out) if linear.bias is not None else None
    return TaskDense(blocks, bias, None, (linear.weight, linear.bias))


@dataclass
class MultiTaskCache:
    trunk: list[th.Tensor]
    pi: list[th.Tensor]
    vf: list[th.Tensor]
    layout: TaskLayout


class MultiTaskMLP:
    """Shared trunk, then each task's actor and critic heads with their output columns."""

    TASK_KEY = "task_id"  # the observation key holding each sample's task

    def __init__(self, trunk: Chain, pi: Chain, vf: Chain, n_tasks: int) -> None:
        self.trunk, self.pi, self.vf, self.n_tasks = trunk, pi, vf, n_tasks
        self._last: tuple[np.ndarray, TaskLayout] | None = None  # the last batch's tasks and layout

    def _layout(self, task: th.Tensor, device: th.device) -> TaskLayout:
        """``block_slots`` as a ``TaskLayout``.

        A rollout's batches (the same envs every step) reuse the last answer. (``lean_train``
        passes its minibatches' layouts, computed per epoch by ``sorted_layouts``.)
        """
        ids = task.reshape(-1).long().cpu().numpy()
        if self._last is not None and np.array_equal(self._last[0], ids):
            return self._last[1]
        slots, group = block_slots(ids, self.n_tasks)
        layout = TaskLayout(None if slots is None else th.from_numpy(slots).to(device), group)
        self._last = (ids, layout)
        return layout

    def forward(
        self, obs: dict[str, th.Tensor], layout: TaskLayout | None = None
    ) -> tuple[th.Tensor, th.Tensor, MultiTaskCache]:
        """Logits ``(B, A)``, values ``(B, 1)`` and what the backward pass needs (``layout``: the batch's, if known)."""
        cache, grouped = self._trunk(obs, layout)
        cache.pi, cache.vf = self.pi.forward(grouped), self.vf.forward(grouped)
        return self._ungroup(cache.pi[-1], cache), self._ungroup(cache.vf[-1], cache), cache

    def latent_sq_mm(self, cache: MultiTaskCache, std_sq: th.Tensor) -> th.Tensor:
        """SB3's K-block latent is zero outside each sample's own block: per task, its rows of ``std_sq``."""
        blocks = std_sq.view(self.n_tasks, -1, std_sq.shape[1])  # (K, h, A)
        return self._ungroup(th.bmm(cache.pi[-2] ** 2, blocks), cache)

    def latent_sq_t_mm(self, cache: MultiTaskCache, grad: th.Tensor) -> th.Tensor:
        """Per task, ``(latent**2).t() @ grad`` on its block (padding rows carry zero gradient)."""
        return th.bmm((cache.pi[-2] ** 2).transpose(1, 2), self._group(grad, cache)).reshape(-1, grad.shape[1])

    def block_latent(self, cache: MultiTaskCache, obs: dict[str, th.Tensor]) -> th.Tensor:
        """SB3's actor latent ``(B, K * h)``: each sample's head output in its task's block, zero elsewhere.

        What gSDE's noise multiplies (``get_noise``) in a rollout step, whose exploration
        matrices (per env) are SB3's own.
        """
        rows = self._ungroup(cache.pi[-2], cache)  # (B, h), the batch's order
        task = obs[self.TASK_KEY].reshape(-1).long()
        block = rows.new_zeros(rows.shape[0], self.n_tasks, rows.shape[1])
        block[th.arange(rows.shape[0], device=rows.device), task] = rows
        return block.view(rows.shape[0], -1)

    def actor_logits(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        """The logits alone (evaluation), without the critic."""
        cache, grouped = self._trunk(obs, None)
        return self._ungroup(self.pi.forward(grouped)[-1], cache)

    def _trunk(self, obs: dict[str, th.Tensor], layout: TaskLayout | None) -> tuple[MultiTaskCache, th.Tensor]:
        """The trunk's outputs (in a new cache) and its features laid out by task."""
        x = th.flatten(obs["obs"].float(), start_dim=1)
        if self.n_tasks == 1:  # one group: the batch itself
            layout = TaskLayout(None, x.shape[0])
        elif layout is None:
            layout = self._layout(obs[self.TASK_KEY], x.device)
        cache = MultiTaskCache([], [], [], layout)
        cache.trunk = self.trunk.forward(x)
        return cache, self._group(cache.trunk[-1], cache)

    def _group(self, rows: th.Tensor, cache: MultiTaskCache) -> th.Tensor:
        """``(B, width)`` rows into the ``(K, G, width)`` block, zero where a task has fewer than G samples."""
        slots, group = cache.layout.slots, cache.layout.group
        if slots is None:
            return rows.reshape(self.n_tasks, group, rows.shape[1])
        block = rows.new_zeros(self.n_tasks * group, rows.shape[1]).index_copy_(0, slots, rows)
        return block.view(self.n_tasks, group, -1)

    def _ungroup(self, block: th.Tensor, cache: MultiTaskCache) -> th.Tensor:
        slots, rows = cache.layout.slots, self.n_tasks * cache.layout.group
        if slots is None:
            return block.reshape(rows, block.shape[2])
        return th.index_select(block.reshape(rows, -1), 0, slots)  # 4x faster than []

    def backward(self, cache: MultiTaskCache, grad_pi: th.Tensor, grad_vf: th.Tensor) -> None:
        """Parameter gradients of ``<grad_pi, logits> + <grad_vf, values>``."""
        need = self.trunk.trainable()
        g_pi = self.pi.backward(cache.pi, self._group(grad_pi, cache), input_grad=need)
        g_vf = self.vf.backward(cache.vf, self._group(grad_vf, cache), input_grad=need)
        if need:
            assert g_pi is not None and g_vf is not None
            self.trunk.backward(cache.trunk, self._ungroup(g_pi + g_vf, cache), input_grad=False)


def _task_layers(heads: nn.ModuleList, activation: str | None) -> list[TaskDense]:
    layers: list[TaskLinear] = list(heads)
    return [TaskDense(layer.weight, layer.bias, activation, (layer.weight, layer.bias)) for layer in layers]


def multitask_mlp(policy: Any, numpy_tanh: bool = False) -> MultiTaskMLP | None:
    """The policy as a ``MultiTaskMLP``, or ``None`` where it is outside what the module covers.

    ``numpy_tanh``: as in ``actor_critic_mlp``.
    """
    if type(policy) is not MultiTaskActorCriticPolicy or policy.valid_actions is not None:
        return None
    # Categorical or Gaussian (the caller forms the loss's gradient and checks which gSDE it covers).
    distribution = policy.action_dist
    gaussian = (DiagGaussianDistribution, StateDependentNoiseDistribution)
    if not (isinstance(distribution, CategoricalDistribution) or type(distribution) in gaussian):
        return None
    if not policy.share_features_extractor:
        return None
    extractor, heads = policy.features_extractor, policy.mlp_extractor
    if type(extractor) is not MultiTaskTrunkExtractor or type(heads) is not TaskHeads:
        return None
    if policy.device.type != "cpu" or type(heads.activation) not in ACTIVATIONS:
        return None
    trunk = dense_chain(list(extractor.trunk), numpy_tanh)
    if trunk is None:
        return None
    k, act = policy.n_tasks, activation_name(type(heads.activation), numpy_tanh)
    pi = [*_task_layers(heads.policy_heads, act), _output_layer(policy.action_net, k)]
    vf = [*_task_layers(heads.value_heads, act), _output_layer(policy.value_net, k)]
    return MultiTaskMLP(Chain(trunk), Chain(pi), Chain(vf), k)
