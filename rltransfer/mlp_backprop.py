"""Actor-critic MLPs run forward and backward by hand: autograd's own kernels, without its graph.

A PPO minibatch on a 64-wide MLP is bound by per-operation overhead, not arithmetic: recording
the autograd graph and running its engine (about 25 nodes, with views, transposes and gradient
accumulators) cost more than the matrix products (``benchmarks/lean_update.py``). For policies
built only of ``nn.Linear`` layers and element-wise activations, ``ActorCriticMLP`` runs the
forward pass with the same functions the modules call and the backward pass with the very
kernels autograd's formulas call (``tanh_backward``, ``mm`` in the layouts of
``mm_mat1_backward``/``mm_mat2_backward``, bias sums), so every gradient is bit-identical to
``loss.backward()`` (``tests/test_mlp_backprop.py``). Frozen parameters get no gradient, and
gradient hooks registered on parameters (L2-SP's) run as autograd would run them. Built with
``numpy_tanh``, tanh layers run numpy's tanh instead of torch's slower CPU kernel: the same
network to float rounding.

``actor_critic_mlp(policy)`` returns ``None`` for anything else (images, Dict observations,
custom modules, other activations), and the caller keeps autograd.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import FlattenExtractor, MlpExtractor
from torch import nn
from torch.nn import functional as F

from rltransfer.policies.trunk import TrunkExtractor

ACTIVATIONS: dict[type[nn.Module], str] = {nn.Tanh: "tanh", nn.ReLU: "relu"}
# numpy's float32 tanh: correctly rounded to within 1 ulp like torch's (they differ in the last
# bit on about 30% of values) and 6x faster on the 256 x 64 blocks of a minibatch, where
# torch's CPU kernel takes ~43 us (docs/benchmarks.md). Its backward is torch's tanh_backward.
NUMPY_TANH = "numpy_tanh"
OWN_METHODS = (
    "extract_features",
    "forward",
    "evaluate_actions",
    "predict_values",
    "get_distribution",
    "_get_action_dist_from_latent",
)


def activate(y: th.Tensor, act: str | None) -> th.Tensor:
    """The activation's forward, as its module computes it."""
    if act == "tanh":
        return th.tanh(y)
    if act == NUMPY_TANH:
        return numpy_tanh_(y)
    if act == "relu":
        return th.relu(y)
    return y


def numpy_tanh_(y: th.Tensor) -> th.Tensor:
    """``tanh`` of a fresh pre-activation, in place through numpy where it is a CPU float32 array."""
    if y.device.type != "cpu" or y.dtype != th.float32 or y.requires_grad or not y.is_contiguous():
        return th.tanh(y)
    array = y.numpy()
    np.tanh(array, out=array)
    return y


def activation_name(module: type[nn.Module], numpy_tanh: bool) -> str:
    """The ``act`` of an activation module (``ACTIVATIONS``), with numpy's tanh if asked."""
    act = ACTIVATIONS[module]
    return NUMPY_TANH if numpy_tanh and act == "tanh" else act


def activation_backward(grad: th.Tensor, y: th.Tensor, act: str | None) -> th.Tensor:
    """autograd's backward of the activation, from its output ``y``."""
    if act in ("tanh", NUMPY_TANH):
        return th.ops.aten.tanh_backward(grad, y)
    if act == "relu":
        return th.ops.aten.threshold_backward(grad, y, 0)
    return grad


@dataclass(frozen=True)
class Dense:
    """One ``nn.Linear`` and the activation after it (``None``: none)."""

    weight: th.Tensor
    bias: th.Tensor | None
    act: str | None

    def forward(self, x: th.Tensor) -> th.Tensor:
        return activate(F.linear(x, self.weight, self.bias), self.act)

    def trainable(self) -> bool:
        return self.weight.requires_grad or (self.bias is not None and self.bias.requires_grad)

    def backward(self, x: th.Tensor, y: th.Tensor, grad: th.Tensor, input_grad: bool) -> th.Tensor | None:
        """Accumulate this layer's parameter gradients; return the gradient w.r.t. ``x`` if asked."""
        grad = activation_backward(grad, y, self.act)
        if self.weight.requires_grad:
            # mm_mat2_backward for the column-major ``weight.t()`` that F.linear multiplies by.
            accumulate(self.weight, grad.t().mm(x))
        if self.bias is not None and self.bias.requires_grad:
            accumulate(self.bias, grad.sum(0))
        return grad.mm(self.weight) if input_grad else None


def accumulate(param: th.Tensor, grad: th.Tensor) -> None:
    """What autograd does at a leaf: run the tensor's hooks, add into ``param.grad``, run post-accumulate hooks."""
    hooks = param._backward_hooks
    if hooks:
        for hook in hooks.values():
            out = hook(grad)
            if out is not None:
                grad = out
    param.grad = grad if param.grad is None else param.grad + grad
    post = getattr(param, "_post_accumulate_grad_hooks", None)
    if post:
        for hook in post.values():
            hook(param)


class Layer(Protocol):
    """A layer of a hand-written network: ``Dense`` here, per-task layers in ``multitask_backprop``."""

    def forward(self, x: th.Tensor) -> th.Tensor: ...

    def trainable(self) -> bool: ...

    def backward(self, x: th.Tensor, y: th.Tensor, grad: th.Tensor, input_grad: bool) -> th.Tensor | None: ...


class Chain:
    """Layers applied in order."""

    def __init__(self, layers: Sequence[Layer]) -> None:
        self.layers = list(layers)

    def forward(self, x: th.Tensor) -> list[th.Tensor]:
        """Every layer's input and the last output: ``[x, y1, ..., yn]``."""
        outs = [x]
        for layer in self.layers:
            outs.append(layer.forward(outs[-1]))
        return outs

    def trainable(self) -> bool:
        return any(layer.trainable() for layer in self.layers)

    def backward(self, outs: Sequence[th.Tensor], grad: th.Tensor, input_grad: bool) -> th.Tensor | None:
        # Below the lowest trainable layer nothing needs a gradient (autograd prunes it too).
        lowest = next((i for i, layer in enumerate(self.layers) if layer.trainable()), len(self.layers))
        if input_grad:
            lowest = 0
        g: th.Tensor | None = grad
        for i in range(len(self.layers) - 1, lowest - 1, -1):
            assert g is not None
            g = self.layers[i].backward(outs[i], outs[i + 1], g, input_grad=i > lowest or input_grad)
        return g if input_grad else None


class Program(Protocol):
    """A policy's network run by hand: outputs and a cache forward, parameter gradients backward."""

    def forward(self, obs: Any, layout: Any = None) -> tuple[th.Tensor, th.Tensor, Any]:
        """``layout``: how the batch's rows group by task, where the caller knows (multi-task programs)."""
        ...

    def actor_logits(self, obs: Any) -> th.Tensor: ...

    def backward(self, cache: Any, grad_pi: th.Tensor, grad_vf: th.Tensor) -> None: ...

    def latent_sq_mm(self, cache: Any, std_sq: th.Tensor) -> th.Tensor:
        """gSDE's variance ``mm(latent_pi**2, std_sq)`` ``(B, A)`` for the batch the cache holds."""
        ...

    def latent_sq_t_mm(self, cache: Any, grad: th.Tensor) -> th.Tensor:
        """``mm``'s backward to ``std_sq``: ``(latent_pi**2).t() @ grad``."""
        ...


@dataclass
class ForwardCache:
    shared: list[th.Tensor]
    pi: list[th.Tensor]
    vf: list[th.Tensor]


class ActorCriticMLP:
    """A ``shared`` trunk (may be empty), then the actor chain (to the action net's output) and the critic chain."""

    def __init__(self, shared: Chain, pi: Chain, vf: Chain) -> None:
        self.shared, self.pi, self.vf = shared, pi, vf

    def forward(self, obs: th.Tensor, layout: None = None) -> tuple[th.Tensor, th.Tensor, ForwardCache]:
        """Action-net output ``(B, A)``, values ``(B, 1)`` and what the backward pass needs (one task: no layout)."""
        x = th.flatten(obs.float(), start_dim=1)
        shared = self.shared.forward(x)
        pi = self.pi.forward(shared[-1])
        vf = self.vf.forward(shared[-1])
        return pi[-1], vf[-1], ForwardCache(shared, pi, vf)

    def latent_sq_mm(self, cache: ForwardCache, std_sq: th.Tensor) -> th.Tensor:
        return th.mm(cache.pi[-2] ** 2, std_sq)  # the action net's input is SB3's latent_pi

    def latent_sq_t_mm(self, cache: ForwardCache, grad: th.Tensor) -> th.Tensor:
        return (cache.pi[-2] ** 2).t().mm(grad)  # mm_mat2_backward for a row-major std_sq

    def actor_logits(self, obs: th.Tensor) -> th.Tensor:
        """The action net's output alone (evaluation), without the critic."""
        return self.pi.forward(self.shared.forward(th.flatten(obs.float(), start_dim=1))[-1])[-1]

    def backward(self, cache: ForwardCache, grad_pi: th.Tensor, grad_vf: th.Tensor) -> None:
        """Parameter gradients of ``<grad_pi, pi_out> + <grad_vf, values>``, accumulated as ``backward`` would."""
        need = bool(self.shared.layers) and self.shared.trainable()
        g_pi = self.pi.backward(cache.pi, grad_pi, input_grad=need)
        g_vf = self.vf.backward(cache.vf, grad_vf, input_grad=need)
        if need:
            assert g_pi is not None and g_vf is not None
            self.shared.backward(cache.shared, g_pi + g_vf, input_grad=False)


def dense_chain(modules: Sequence[nn.Module], numpy_tanh: bool = False) -> list[Dense] | None:
    """``Linear[, activation]`` pairs as ``Dense`` layers; ``None`` if anything else is in the way."""
    layers: list[Dense] = []
    for module in modules:
        if type(module) is nn.Linear:
            layers.append(Dense(module.weight, module.bias, None))
        elif type(module) in ACTIVATIONS and layers and layers[-1].act is None:
            layers[-1] = Dense(layers[-1].weight, layers[-1].bias, activation_name(type(module), numpy_tanh))
        else:
            return None
    return layers


def _extractor_layers(extractor: nn.Module, numpy_tanh: bool) -> list[Dense] | None:
    if type(extractor) is FlattenExtractor:
        return []
    if isinstance(extractor, TrunkExtractor) and type(extractor) is TrunkExtractor:
        return dense_chain(list(extractor.trunk), numpy_tanh)
    return None


def actor_critic_mlp(policy: Any, numpy_tanh: bool = False) -> ActorCriticMLP | None:
    """The policy as an ``ActorCriticMLP``, or ``None`` where it is built of anything else.

    Covers SB3's ``MlpPolicy`` (``FlattenExtractor`` + ``MlpExtractor``) and rltransfer's
    single-task trunk policy (``TrunkExtractor``), shared or separate features extractors,
    on 1-D ``Box`` observations. ``numpy_tanh``: tanh layers run numpy's tanh (``NUMPY_TANH``):
    the same function to within float rounding, no longer bit-identical to the modules.
    """
    if not isinstance(policy, ActorCriticPolicy) or type(policy.mlp_extractor) is not MlpExtractor:
        return None
    # A subclass that changes how observations reach the layers is not what this runs.
    if any(getattr(type(policy), name) is not getattr(ActorCriticPolicy, name) for name in OWN_METHODS):
        return None
    space = policy.observation_space
    if not isinstance(space, spaces.Box) or len(space.shape) != 1:
        return None
    pi_net = dense_chain(list(policy.mlp_extractor.policy_net), numpy_tanh)
    vf_net = dense_chain(list(policy.mlp_extractor.value_net), numpy_tanh)
    heads = [dense_chain([policy.action_net]), dense_chain([policy.value_net])]
    if pi_net is None or vf_net is None or heads[0] is None or heads[1] is None:
        return None
    if policy.share_features_extractor:
        shared = _extractor_layers(policy.features_extractor, numpy_tanh)
        if shared is None:
            return None
        return ActorCriticMLP(Chain(shared), Chain(pi_net + heads[0]), Chain(vf_net + heads[1]))
    pi_ext = _extractor_layers(policy.pi_features_extractor, numpy_tanh)
    vf_ext = _extractor_layers(policy.vf_features_extractor, numpy_tanh)
    if pi_ext is None or vf_ext is None:
        return None
    return ActorCriticMLP(Chain([]), Chain(pi_ext + pi_net + heads[0]), Chain(vf_ext + vf_net + heads[1]))
