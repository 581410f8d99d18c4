"""Rollout steps through numpy: the lean network's forward pass and the draw on a step's few rows.

A rollout step runs the policy on one row per env (8 to 64 rows), where torch spends more on
dispatching each operation (~10 us here) than on its arithmetic: a categorical step of the
4-task policy at 64 envs takes ~270 us in torch, ~80 us as numpy operations
(``docs/benchmarks.md``). ``NumpyNet`` runs a hand-written program's layers (``Dense``,
``TaskDense``) on numpy views of the parameters, so it sees every optimizer step without
copies. The random numbers still come from torch's generator, drawn as SB3's step draws them
(the ``Exp(1)`` noise of ``th.multinomial``'s one-sample path, the ``normal_`` of
``Normal.rsample``): a seeded rollout takes the same draws as SB3's and agrees with it to
float rounding, which is why it runs only where ``TransferPPO.numpy_tanh`` (the mode that
accepts rounding) is on. gSDE's step draws nothing (its exploration matrices come from SB3's
``reset_noise``), and runs here too. Deterministic evaluation takes its actions from
``NumpyNet.actor`` as well (``rltransfer.lean_predict``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th

from rltransfer.gaussian_loss import LOG_SQRT_2PI
from rltransfer.mlp_backprop import NUMPY_TANH, ActorCriticMLP, Dense, Program
from rltransfer.multitask_backprop import MultiTaskMLP, TaskDense, block_slots

# OpenBLAS (numpy's BLAS) runs a gemm on one thread up to m * n * k = 4 * 65536 and on every
# core above (its interface/gemm.c); larger products go through torch, whose thread count
# rltransfer's grid workers set to 1, so that N runs never fight over N cores.
SINGLE_THREAD_GEMM = 4 * 65536


def matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` (stacked or not): numpy's where it stays on one thread, torch's above."""
    if x.shape[-2] * w.shape[-2] * w.shape[-1] <= SINGLE_THREAD_GEMM:
        return np.matmul(x, w)
    return th.matmul(th.from_numpy(x), th.from_numpy(w)).numpy()


@dataclass(frozen=True)
class NumpyLayer:
    """``act(x @ weight + bias)`` on numpy views of a layer's parameters."""

    weight: np.ndarray  # (in, out), or (K, in, out) per task
    bias: np.ndarray | None  # (out,), or (K, 1, out)
    act: str | None

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = matmul(x, self.weight)
        if self.bias is not None:
            y += self.bias
        if self.act in ("tanh", NUMPY_TANH):
            np.tanh(y, out=y)
        elif self.act == "relu":
            np.maximum(y, 0, out=y)
        return y


def numpy_layer(layer: Any) -> NumpyLayer | None:
    """A ``Dense`` or ``TaskDense`` layer as a ``NumpyLayer`` (views, no copies); ``None`` if it can't be."""
    tensors = [layer.weight] if layer.bias is None else [layer.weight, layer.bias]
    if any(t.device.type != "cpu" or t.dtype != th.float32 for t in tensors):
        return None
    weight = layer.weight.detach().numpy()
    bias = None if layer.bias is None else layer.bias.detach().numpy()
    if isinstance(layer, TaskDense):
        return NumpyLayer(weight.transpose(0, 2, 1), None if bias is None else bias[:, None, :], layer.act)
    if isinstance(layer, Dense):
        return NumpyLayer(weight.T, bias, layer.act)
    return None


def run(layers: Sequence[NumpyLayer], x: np.ndarray) -> np.ndarray:
    for layer in layers:
        x = layer.forward(x)
    return x


class NumpyNet:
    """A hand-written program's forward pass in numpy: ``forward(obs)`` is its outputs and values.

    Single-task (``ActorCriticMLP``): shared layers, then the actor and critic chains.
    Multi-task (``MultiTaskMLP``): the trunk, then each task's heads on its rows as one stacked
    product (the ``(K, G, width)`` block of ``multitask_backprop``), back in the batch's order.
    """

    def __init__(self, shared: list[NumpyLayer], pi: list[NumpyLayer], vf: list[NumpyLayer], n_tasks: int) -> None:
        self.shared, self.pi, self.vf, self.n_tasks = shared, pi, vf, n_tasks
        self._layout: tuple[np.ndarray, np.ndarray | None, int] | None = None  # tasks, slots, group

    def forward(self, obs: Any, latent: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The action net's outputs ``(B, A)``, values ``(B, 1)`` and, if asked, SB3's ``latent_pi``
        (the action net's input; multi-task: the ``(B, K * h)`` K-block latent, zero outside each
        sample's own block)."""
        h, slots, task = self._features(obs)
        features = run(self.pi[:-1], h)
        out = self._ungroup(self.pi[-1].forward(features), slots)
        values = self._ungroup(run(self.vf, h), slots)
        if not latent:
            return out, values, None
        if task is None:
            return out, values, features
        rows = self._ungroup(features, slots)
        k_block = np.zeros((len(rows), self.n_tasks, rows.shape[1]), np.float32)
        k_block[np.arange(len(rows)), task] = rows
        return out, values, k_block.reshape(len(rows), -1)

    def actor(self, obs: Any) -> np.ndarray:
        """The action net's outputs alone (evaluation), without the critic."""
        h, slots, _ = self._features(obs)
        return self._ungroup(run(self.pi, h), slots)

    def _features(self, obs: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The shared layers' output (multi-task: as the ``(K, G, width)`` block), the rows' slots
        in the block (``None``: the block is the batch as it is) and each row's task."""
        if self.n_tasks == 0:
            return run(self.shared, obs.reshape(len(obs), -1).astype(np.float32, copy=False)), None, None
        x = obs["obs"].reshape(len(obs["obs"]), -1).astype(np.float32, copy=False)
        task = np.asarray(obs[MultiTaskMLP.TASK_KEY]).reshape(-1).astype(np.int64)
        slots, group = self._slots(task)
        h = run(self.shared, x)
        if slots is None:
            return h.reshape(self.n_tasks, group, h.shape[1]), None, task
        block = np.zeros((self.n_tasks * group, h.shape[1]), np.float32)
        block[slots] = h
        return block.reshape(self.n_tasks, group, -1), slots, task

    def _slots(self, ids: np.ndarray) -> tuple[np.ndarray | None, int]:
        """``block_slots`` of the rows' tasks; the same envs (every rollout step) reuse the last answer."""
        if self._layout is not None and np.array_equal(self._layout[0], ids):
            return self._layout[1], self._layout[2]
        slots, group = block_slots(ids, self.n_tasks)
        self._layout = (ids, slots, group)
        return slots, group

    @staticmethod
    def _ungroup(block: np.ndarray, slots: np.ndarray | None) -> np.ndarray:
        """Rows in the batch's order (single-task outputs are already)."""
        if block.ndim == 2:
            return block
        rows = block.reshape(-1, block.shape[2])
        return rows if slots is None else rows[slots]


def numpy_net(program: Program) -> NumpyNet | None:
    """``program`` (``ActorCriticMLP`` or ``MultiTaskMLP``) on numpy views; ``None`` off the CPU or float32."""
    if isinstance(program, ActorCriticMLP):
        chains, n_tasks = (program.shared, program.pi, program.vf), 0
    elif isinstance(program, MultiTaskMLP):
        chains, n_tasks = (program.trunk, program.pi, program.vf), program.n_tasks
    else:
        return None
    converted = [[numpy_layer(layer) for layer in chain.layers] for chain in chains]
    if any(layer is None for chain in converted for layer in chain):
        return None
    shared, pi, vf = ([layer for layer in chain if layer is not None] for chain in converted)
    return NumpyNet(shared, pi, vf, n_tasks)


def as_numpy(obs: Any) -> Any:
    """A step's observation tensors (``obs_as_tensor``'s CPU views) as numpy arrays."""
    if isinstance(obs, dict):
        return {key: value.numpy() for key, value in obs.items()}
    return obs.numpy()


def sample_categorical(net: NumpyNet, obs: Any) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """``policy(obs)`` for a categorical policy: SB3's draws from torch's generator, the rest in numpy.

    ``Categorical`` normalises the logits by their ``logsumexp``; ``multinomial`` with one
    sample is ``argmax(probs / q)``, ``q ~ Exp(1)`` (``lean_rollout.multinomial_one``).
    """
    logits, values, _ = net.forward(as_numpy(obs))
    shifted = logits - logits.max(1, keepdims=True)
    unnormalised = np.exp(shifted)
    log_p = shifted - np.log(unnormalised.sum(1, keepdims=True))
    noise = th.empty(log_p.shape, dtype=th.float32).exponential_(1).numpy()
    # argmax(probs / q) is argmax(exp(shifted) / q): the rows differ by a positive factor.
    actions = np.argmax(unnormalised / noise, axis=1)
    log_prob = log_p[np.arange(len(actions)), actions]
    return th.from_numpy(actions), th.from_numpy(values), th.from_numpy(log_prob)


def sample_gaussian(net: NumpyNet, log_std: th.Tensor, obs: Any) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """``policy(obs)`` for SB3's diagonal Gaussian: ``mean + normal_() * std`` and ``Normal``'s ``log_prob``."""
    mean, values, _ = net.forward(as_numpy(obs))
    scale = np.exp(log_std.detach().numpy())
    noise = th.empty(mean.shape, dtype=th.float32).normal_().numpy()
    actions = mean + noise * scale
    return th.from_numpy(actions), th.from_numpy(values), th.from_numpy(normal_log_prob(actions, mean, scale))


def sample_sde(net: NumpyNet, policy: Any, obs: Any) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """``policy(obs)`` for SB3's default gSDE (``lean.plain_sde``), whose step draws nothing.

    The mean plus ``get_noise``: the latent times the exploration matrix (one per env where
    ``reset_noise`` drew as many as the batch has rows), under ``Normal(mean,
    sqrt(latent**2 @ std**2 + eps))``; ``std`` is ``get_std``'s (``full_std`` or broadcast).
    """
    mean, values, latent = net.forward(as_numpy(obs), latent=True)
    assert latent is not None
    dist = policy.action_dist
    std = np.exp(policy.log_std.detach().numpy())
    if not dist.full_std:
        std = np.ones((latent.shape[1], mean.shape[1]), np.float32) * std
    scale = np.sqrt(matmul(latent**2, std**2) + dist.epsilon)
    matrices = dist.exploration_matrices.detach().numpy()
    if len(latent) == 1 or len(latent) != len(matrices):
        noise = matmul(latent, dist.exploration_mat.detach().numpy())
    else:
        noise = matmul(latent[:, None, :], matrices)[:, 0]
    actions = mean + noise
    return th.from_numpy(actions), th.from_numpy(values), th.from_numpy(normal_log_prob(actions, mean, scale))


def normal_log_prob(actions: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``Normal(mean, scale).log_prob(actions)`` summed over action dimensions."""
    return (-((actions - mean) ** 2) / (2 * scale**2) - np.log(scale) - LOG_SQRT_2PI).sum(1)
