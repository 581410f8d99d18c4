"""Fine-tuning strategies: what transfers, what trains, at which rate, with which penalty."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn

from rltransfer.errors import UserError, did_you_mean
from rltransfer.policies import MultiTaskActorCriticPolicy
from rltransfer.ppo import TransferPPO
from rltransfer.transfer import TRUNK, LayerMap, parse_parts

NAMES = ("scratch", "zero-shot", "freeze", "finetune", "partial:N", "l2sp", "gradual", "dann")
OPTIONS = {"transfer", "trunk_lr_scale", "coef", "unfreeze_at", "layer_map", "rehearse"}


@dataclass(frozen=True)
class Strategy:
    """A fine-tuning plan. Arms of one experiment differ only in this.

    Attributes:
        name: the strategy as written (``partial:1``).
        transfer: parts copied from the source (empty: scratch).
        trainable_layers: trunk Linear layers trained, counted from the top (``None``: all).
        trunk_lr_scale: learning-rate multiplier for the trunk, one value or one per layer (bottom first).
        l2sp: coefficient of ``coef/2 * ||w - w_pretrained||^2`` on trunk weights.
        unfreeze_at: training fractions at which trunk layers unfreeze, top layer first.
        dann: final weight of the domain-adversarial (gradient-reversal) term; 0 disables it.
        rehearse: keep training on the source task alongside the targets (its env steps count
            in the budget; it is not evaluated as a target).
        train: ``False`` for zero-shot (evaluate the transferred policy as is).
    """

    name: str
    transfer: frozenset[str]
    trainable_layers: int | None = None
    trunk_lr_scale: float | tuple[float, ...] = 1.0
    l2sp: float = 0.0
    unfreeze_at: tuple[float, ...] = ()
    dann: float = 0.0
    rehearse: bool = False
    train: bool = True
    layer_map: LayerMap = field(default_factory=LayerMap)

    @property
    def uses_source(self) -> bool:
        return bool(self.transfer)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transfer": sorted(self.transfer),
            "trainable_layers": self.trainable_layers,
            "trunk_lr_scale": self.trunk_lr_scale,
            "l2sp": self.l2sp,
            "unfreeze_at": list(self.unfreeze_at),
            "dann": self.dann,
            "rehearse": self.rehearse,
            "train": self.train,
            "layer_map": {"trunk_from": self.layer_map.trunk_from, "skip": list(self.layer_map.skip)},
        }


def _positive(value: Any, what: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a number, got {value!r}") from None
    if not out > 0:
        raise UserError(f"{what} must be > 0, got {value!r}")
    return out


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"gradual: unfreeze_at holds training fractions such as 0.25, got {value!r}")
    return float(value)


def _check_scale_trains(name: str, base: str, scale: float | tuple[float, ...], layer_map: LayerMap) -> None:
    """Refuse a ``trunk_lr_scale`` that would change nothing, so an arm is not run (and labelled)
    as slower learning it never had: zero-shot trains nothing, and freeze trains only trunk layers
    a layer map left out, which a single scale (meant for pretrained layers) does not touch."""
    if base == "zero-shot":
        raise UserError(f"'{name}' trains nothing, so 'trunk_lr_scale' would do nothing; remove it")
    if base == "freeze" and (not isinstance(scale, tuple) or not layer_map.skip):
        raise UserError(
            f"'{name}' keeps the pretrained trunk fixed, so 'trunk_lr_scale' would do nothing; use finetune, "
            "partial:N or gradual (under freeze a per-layer list applies only to layers a layer_map skips)"
        )


def parse_strategy(name: str, options: Mapping[str, Any] | None = None) -> Strategy:
    """Build a strategy from its name (``freeze``, ``partial:2``, ...) and options.

    Options: ``transfer`` (``trunk``, ``heads``, ``all``, ``no-action`` or parts joined by ``+``),
    ``trunk_lr_scale``, ``coef`` (l2sp), ``unfreeze_at`` (gradual), ``layer_map``.
    """
    opts = dict(options or {})
    unknown = set(opts) - OPTIONS
    if unknown:
        hint = did_you_mean(next(iter(unknown)), OPTIONS) if len(unknown) == 1 else ""
        raise UserError(f"unknown option(s) {sorted(unknown)} for strategy '{name}'{hint}; known: {sorted(OPTIONS)}")
    base, _, arg = name.partition(":")
    if base not in {n.split(":")[0] for n in NAMES}:
        raise UserError(f"unknown strategy '{name}'{did_you_mean(base, NAMES)}; choose one of: {', '.join(NAMES)}")
    default_parts = {"scratch": "none", "zero-shot": "all"}.get(base, "trunk")
    parts = parse_parts(opts.get("transfer", default_parts))
    if base == "scratch" and (parts or "layer_map" in opts):
        option = "transfer" if parts else "layer_map"
        raise UserError(f"strategy 'scratch' copies nothing; remove its '{option}' option")
    if base != "scratch" and not parts:
        raise UserError(f"strategy '{name}' needs transferred parts; use 'scratch' for random initialisation")
    scale_raw = opts.get("trunk_lr_scale", 1.0)
    if isinstance(scale_raw, list | tuple) and not scale_raw:
        raise UserError("trunk_lr_scale [] is empty; give one scale (0.1) or one per trunk layer ([0.1, 0.5])")
    scale: float | tuple[float, ...] = (
        tuple(_positive(s, "trunk_lr_scale") for s in scale_raw)
        if isinstance(scale_raw, list | tuple)
        else _positive(scale_raw, "trunk_lr_scale")
    )
    kwargs: dict[str, Any] = {
        "trunk_lr_scale": scale,
        "layer_map": LayerMap.from_options(opts.get("layer_map")),
    }
    if "trunk_lr_scale" in opts:
        _check_scale_trains(name, base, scale, kwargs["layer_map"])
    if "rehearse" in opts:
        if not isinstance(opts["rehearse"], bool):
            raise UserError(f"option 'rehearse' must be true or false, got {opts['rehearse']!r}")
        if base in ("scratch", "zero-shot") and opts["rehearse"]:
            raise UserError(f"'{name}' cannot rehearse: rehearsal trains on the source task next to a transfer")
        kwargs["rehearse"] = opts["rehearse"]
    if base == "partial":
        if not arg.isdigit() or int(arg) < 1:
            raise UserError(f"'{name}': write partial:N with N >= 1 trunk layers to train, e.g. partial:1")
        kwargs["trainable_layers"] = int(arg)
    elif arg:
        raise UserError(f"strategy '{base}' takes no ':' argument (got '{name}')")
    if base == "freeze":
        kwargs["trainable_layers"] = 0
    if base == "zero-shot":
        kwargs["train"] = False
    if base == "l2sp":
        kwargs["l2sp"] = _positive(opts.get("coef", 0.01), "l2sp coef")
    elif base == "dann":
        kwargs["dann"] = _positive(opts.get("coef", 0.1), "dann coef")
    elif "coef" in opts:
        raise UserError(f"option 'coef' belongs to l2sp or dann, not '{name}'")
    if base == "gradual":
        fractions = opts.get("unfreeze_at", [0.25, 0.5])
        if not isinstance(fractions, list | tuple) or not fractions:
            raise UserError("gradual: unfreeze_at must be a list of training fractions, e.g. [0.25, 0.5]")
        fr = tuple(_fraction(f) for f in fractions)
        if any(not 0 <= f < 1 for f in fr) or list(fr) != sorted(fr):
            raise UserError(f"gradual: unfreeze_at {list(fr)} must be increasing fractions in [0, 1)")
        kwargs["unfreeze_at"] = fr
        kwargs["trainable_layers"] = 0
    elif "unfreeze_at" in opts:
        raise UserError(f"option 'unfreeze_at' belongs to gradual, not '{name}'")
    return Strategy(name=name, transfer=parts, **kwargs)


def trunk_layers(policy: MultiTaskActorCriticPolicy) -> list[nn.Linear]:
    """The trunk's Linear layers, bottom first."""
    return [m for m in policy.features_extractor.trunk if isinstance(m, nn.Linear)]


def set_trainable(layers: Sequence[nn.Module], trainable: bool) -> None:
    for layer in layers:
        layer.requires_grad_(trainable)


class GradualUnfreeze(BaseCallback):
    """Unfreeze trunk layers top-down when training passes each fraction in ``unfreeze_at``."""

    def __init__(self, layers: Sequence[nn.Linear], unfreeze_at: Sequence[float], total: int) -> None:
        super().__init__()
        self.layers, self.unfreeze_at, self.total = list(layers), list(unfreeze_at), total
        self.unfrozen = 0

    def state_dict(self) -> dict[str, Any]:
        return {"unfrozen": self.unfrozen}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.unfrozen = int(state["unfrozen"])
        for layer in self.layers[len(self.layers) - self.unfrozen :]:
            layer.requires_grad_(True)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        frac = self.num_timesteps / self.total
        while self.unfrozen < min(len(self.unfreeze_at), len(self.layers)) and frac >= self.unfreeze_at[self.unfrozen]:
            self.layers[len(self.layers) - 1 - self.unfrozen].requires_grad_(True)
            self.unfrozen += 1
        self.logger.record("train/trunk_layers_trainable", self.unfrozen)


class L2SPPenalty(BaseCallback):
    """Pull trunk weights toward their pretrained values: ``grad += coef * (w - w0)``.

    Added through gradient hooks, which equals adding ``coef/2 * ||w - w0||^2`` to PPO's loss
    (before its gradient clipping) without rewriting ``PPO.train``. The hooks live only while
    ``learn`` runs with this callback: the returned model trains (or is saved) without them.
    """

    def __init__(self, params: Sequence[nn.Parameter], coef: float) -> None:
        super().__init__()
        self.params = list(params)
        self.anchors = [p.detach().clone() for p in self.params]
        self.coef = coef
        self._handles: list[th.utils.hooks.RemovableHandle] = []

    def _on_training_start(self) -> None:
        self._handles = [p.register_hook(self._hook(p, p0)) for p, p0 in zip(self.params, self.anchors, strict=True)]

    def _on_training_end(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, p: nn.Parameter, p0: th.Tensor) -> Callable[[th.Tensor], th.Tensor]:
        return lambda grad: grad + self.coef * (p.detach() - p0)

    def sq_distance(self) -> float:
        return float(sum(((p.detach() - p0) ** 2).sum() for p, p0 in zip(self.params, self.anchors, strict=True)))

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.logger.record("train/l2sp_sq_distance", self.sq_distance())


def untransferred_layers(policy: MultiTaskActorCriticPolicy, fresh: Collection[str]) -> list[int]:
    """Positions (bottom first, as ``trunk_layers``) of trunk layers whose weight took no source value.

    ``fresh`` is a transfer report's list of randomly initialised parameter names; a layer the
    layer map skipped is one of these.
    """
    names = [name for name, m in policy.features_extractor.trunk.named_children() if isinstance(m, nn.Linear)]
    return [i for i, name in enumerate(names) if f"{TRUNK}{name}.weight" in fresh]


def check_fits(strategy: Strategy, n: int) -> None:
    """Refuse options that count trunk layers (``partial:N``, per-layer rates) when they count
    more or other than the trunk's ``n`` layers."""
    if strategy.trainable_layers is not None and strategy.trainable_layers > n:
        raise UserError(f"'{strategy.name}': the trunk has only {n} layers; use partial:N with N <= {n}")
    scales = strategy.trunk_lr_scale
    if isinstance(scales, tuple) and len(scales) != n:
        raise UserError(f"trunk_lr_scale has {len(scales)} values for {n} trunk layers; give one per layer or one")


def configure_strategy(
    model: TransferPPO, strategy: Strategy, total_timesteps: int, untransferred: Collection[int] = ()
) -> list[BaseCallback]:
    """Freeze, group learning rates and attach penalties on a model whose weights are already transferred.

    Trunk layers in ``untransferred`` (positions, bottom first) took no source weights, so
    nothing about them is pretrained: freezing them would fix random features, L2-SP would
    pull them toward their random start and a single ``trunk_lr_scale`` is meant to slow
    pretrained features. They train as a scratch layer does (a per-layer scale list still
    applies as written). Returns the callbacks the strategy needs during ``learn``.
    """
    policy = model.policy
    assert isinstance(policy, MultiTaskActorCriticPolicy)
    layers = trunk_layers(policy)
    n = len(layers)
    fresh = set(untransferred)
    pretrained = [layer for i, layer in enumerate(layers) if i not in fresh]
    check_fits(strategy, n)
    if strategy.trainable_layers is not None:
        set_trainable(
            [layer for i, layer in enumerate(layers[: n - strategy.trainable_layers]) if i not in fresh], False
        )
    scales = strategy.trunk_lr_scale
    per_layer = scales if isinstance(scales, tuple) else tuple(1.0 if i in fresh else scales for i in range(n))
    trunk_ids = {id(p) for layer in layers for p in layer.parameters()}
    groups = [(f"trunk.{i}", list(layer.parameters()), per_layer[i]) for i, layer in enumerate(layers)]
    groups.append(("heads", [p for p in policy.parameters() if id(p) not in trunk_ids], 1.0))
    model.set_param_groups(groups)
    callbacks: list[BaseCallback] = []
    if strategy.unfreeze_at:
        callbacks.append(GradualUnfreeze(pretrained, strategy.unfreeze_at, total_timesteps))
    if strategy.l2sp:
        if not strategy.uses_source:
            raise UserError("l2sp pulls toward pretrained weights; it needs a source checkpoint")
        if not pretrained:
            raise UserError("l2sp pulls toward pretrained weights, but no trunk layer took source weights")
        callbacks.append(L2SPPenalty([p for layer in pretrained for p in layer.parameters()], strategy.l2sp))
    return callbacks


def frozen_parameters(policy: nn.Module) -> list[str]:
    return [name for name, p in policy.named_parameters() if not p.requires_grad]
