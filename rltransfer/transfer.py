"""Load a source policy's trunk (and optionally heads) into a multi-task policy, with a full report.

Source layouts understood:

* rltransfer checkpoints: ``features_extractor.trunk.*`` (identity mapping), per-task
  heads from ``mlp_extractor.policy_net``/``value_net``, ``action_net``, ``value_net``, ``log_std``;
* plain SB3 ``MlpPolicy`` zips (RL Zoo agents): no shared layers, so the default
  ``LayerMap`` maps the actor's hidden layers ``mlp_extractor.policy_net.*`` into the trunk
  and the critic's are reported as skipped.

Every source tensor ends up in the report as copied, skipped (with the reason) or an error.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch as th

from rltransfer.checkpoint import Checkpoint
from rltransfer.errors import UserError
from rltransfer.policies import MultiTaskActorCriticPolicy

Part = Literal["trunk", "pi_head", "action", "vf_head", "log_std"]
PARTS: tuple[Part, ...] = ("trunk", "pi_head", "action", "vf_head", "log_std")
PRESETS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "trunk": frozenset({"trunk"}),
    # Everything but the action layer: fresh action head, hence fresh exploration (DESIGN.md pilot 3).
    "no-action": frozenset({"trunk", "pi_head", "vf_head"}),
    "heads": frozenset({"trunk", "pi_head", "action", "vf_head"}),
    "all": frozenset(PARTS),
}
TRUNK = "features_extractor.trunk."
ALIASES = ("pi_features_extractor.", "vf_features_extractor.")


def parse_parts(spec: str | Iterable[str]) -> frozenset[str]:
    """``"trunk"``, ``"heads"``, ``"all"``, ``"no-action"``, or parts joined by ``+`` / given as a list."""
    if not isinstance(spec, str | list | tuple | set | frozenset) or not all(isinstance(i, str) for i in spec):
        raise UserError(
            f"transfer {spec!r} unknown; use {', '.join(PRESETS)} or parts {', '.join(PARTS)} joined by '+'"
        )
    items = spec.split("+") if isinstance(spec, str) else list(spec)
    out: set[str] = set()
    for item in items:
        item = item.strip()
        if item in PRESETS:
            out |= PRESETS[item]
        elif item in PARTS:
            out.add(item)
        else:
            raise UserError(
                f"unknown transfer part '{item}'; use {', '.join(PRESETS)} or parts {', '.join(PARTS)} joined by '+'"
            )
    if out and "trunk" not in out:
        raise UserError(f"transfer parts {sorted(out)} lack 'trunk'; the trunk is what transfers, add it")
    return frozenset(out)


@dataclass(frozen=True)
class LayerMap:
    """Which source prefix becomes the target trunk; ``skip`` patterns (fnmatch) are left out knowingly."""

    trunk_from: str | None = None  # None: detect (features_extractor.trunk. or mlp_extractor.policy_net.)
    skip: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> LayerMap:
        """From an arm's ``layer_map`` option: ``{skip: [patterns], trunk_from: prefix}``, both optional."""
        options = options or {}
        usage = "layer_map must look like {skip: ['pattern.*', ...], trunk_from: 'prefix'}"
        if not isinstance(options, Mapping) or set(options) - {"skip", "trunk_from"}:
            raise UserError(f"{usage}, got {options!r}")
        skip = options.get("skip", ())
        skip = (skip,) if isinstance(skip, str) else skip
        trunk_from = options.get("trunk_from")
        if not isinstance(skip, list | tuple) or not all(isinstance(p, str) for p in skip):
            raise UserError(f"{usage}: skip takes tensor-name patterns, got {options['skip']!r}")
        if trunk_from is not None and not isinstance(trunk_from, str):
            raise UserError(f"{usage}: trunk_from takes a tensor-name prefix, got {trunk_from!r}")
        return cls(trunk_from, tuple(skip))


@dataclass
class Entry:
    source: str
    target: str | None
    status: Literal["copied", "skipped"]
    shape: list[int]
    reason: str = ""


@dataclass
class TransferReport:
    """What happened to every source tensor, and which target parameters are frozen."""

    source: str
    source_sha256: str
    parts: list[str]
    entries: list[Entry] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def copied(self) -> list[Entry]:
        return [e for e in self.entries if e.status == "copied"]

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "n_copied": len(self.copied),
            "n_skipped": len(self.entries) - len(self.copied),
        }

    def summary(self) -> str:
        """One line per copied tensor, one per module's skipped tensors (``transfer_report.json`` has each)."""
        lines = [f"transfer from {self.source} (parts: {', '.join(self.parts) or 'none'})"]
        skipped: dict[tuple[str, str], list[Entry]] = {}  # by module and reason, in the source's order
        for e in self.entries:
            if e.status == "skipped":
                skipped.setdefault((_module(e.source), e.reason), []).append(e)
        for e in self.copied:
            lines.append(f"  copied   {e.source} -> {e.target} {tuple(e.shape)}")
        for (module, reason), group in skipped.items():
            what = group[0].source if len(group) == 1 else f"{module}.* ({len(group)} tensors)"
            lines.append(f"  skipped  {what}" + (f"  ({reason})" if reason else ""))
        lines.append(f"  fresh (random init): {_layers(self.fresh)}")
        lines.append(f"  frozen: {_layers(self.frozen)}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _layers(keys: list[str]) -> str:
    """``features_extractor.trunk.0, ...``: the layers ``keys`` (their weights and biases) belong to."""
    layers = dict.fromkeys(k.removesuffix(".weight").removesuffix(".bias") for k in sorted(keys))
    return ", ".join(layers) or "none"


def _module(key: str) -> str:
    """``mlp_extractor.policy_net`` of ``mlp_extractor.policy_net.0.weight``: the layers' module."""
    parts = key.split(".")
    while len(parts) > 1 and (parts[-1] in ("weight", "bias") or parts[-1].isdigit()):
        parts.pop()
    return ".".join(parts)


def detect_trunk_prefix(state_dict: Mapping[str, th.Tensor], layer_map: LayerMap) -> str:
    if layer_map.trunk_from is not None:
        prefix = layer_map.trunk_from.rstrip(".") + "."
        if not any(k.startswith(prefix) for k in state_dict):
            raise UserError(f"layer map trunk_from '{prefix}' matches no source tensor; check the source's keys")
        return prefix
    for prefix in (
        TRUNK,
        "pi_features_extractor.trunk.",
        "mlp_extractor.shared_net.",
        "mlp_extractor.policy_net.",
    ):
        if any(k.startswith(prefix) for k in state_dict):
            return prefix
    linear = sorted({m.group(1) for k in state_dict if (m := re.match(r"(.*\.)\d+\.weight$", k))})
    if not linear:
        # A policy with net_arch=[]: action_net and value_net read the observation directly.
        raise UserError(
            "source has no hidden layers at all (trained with net_arch=[]: only its action and value layers), so "
            "it has no trunk to transfer; use a source with hidden layers (SB3's default net_arch is [64, 64])"
        )
    found = f" (its numbered layers sit under {', '.join(linear)})"
    raise UserError(
        f"source has no hidden layers under {TRUNK}* or mlp_extractor.policy_net.*{found}; name the trunk "
        f"with the option layer_map: {{trunk_from: <prefix>}} (--option 'layer_map={{trunk_from: <prefix>}}')"
    )


def _linear_indices(state_dict: Mapping[str, th.Tensor], prefix: str) -> list[str]:
    """Sorted sub-module indices of Linear layers under ``prefix`` (``0``, ``2``, ...)."""
    found = {m.group(1) for k in state_dict if (m := re.match(re.escape(prefix) + r"(\d+)\.weight$", k))}
    return sorted(found, key=int)


def _check_shape(src_key: str, src: th.Tensor, dst_key: str, dst: th.Tensor) -> None:
    if tuple(src.shape) == tuple(dst.shape):
        return
    if src_key == "log_std" and src.dim() != dst.dim():
        # A vector is a state-independent std, a matrix gSDE's: the exploration, not the widths, differs.
        kind = {1: "a state-independent std (use_sde=False)", 2: "gSDE's (use_sde=True)"}
        raise UserError(
            f"the source's log_std {tuple(src.shape)} is {kind.get(src.dim(), 'unknown')} and the target's "
            f"{tuple(dst.shape)} is {kind.get(dst.dim(), 'unknown')}; set use_sde={str(src.dim() == 2).lower()} "
            "as the source's (--hp, or a spec's hyperparams) to carry its exploration over, or transfer "
            "without log_std (transfer: heads)"
        )
    if tuple(src.shape) != tuple(dst.shape):
        raise UserError(
            f"shape mismatch: source {src_key} {tuple(src.shape)} vs target {dst_key} {tuple(dst.shape)}; "
            "match the target architecture to the source (trunk_arch/head_arch) or skip the tensor in the layer map"
        )


def describe_space(space: Any) -> str:
    """``Box(4,)`` / ``Discrete(2)`` from a gymnasium space or SB3's JSON description of one."""
    if isinstance(space, dict):
        if space.get("n") is not None:
            return f"Discrete({space['n']})"
        return f"Box{tuple(space.get('_shape') or space.get('shape') or ())}"
    if hasattr(space, "n"):
        return f"Discrete({space.n})"
    return f"Box{tuple(space.shape)}"


def _check_spaces(
    checkpoint: Checkpoint,
    policy: MultiTaskActorCriticPolicy,
    pending: Sequence[tuple[str, th.Tensor, str, th.Tensor]],
    trunk_prefix: str,
    first_layer: Sequence[str],
) -> None:
    """Name the spaces (and the option that fixes it) when the source cannot map onto the targets."""
    obs_space = policy.observation_space["obs"]
    first = f"{trunk_prefix}{first_layer[0]}.weight" if first_layer else None
    src_spaces = checkpoint.spaces
    for src_key, value, _, view in pending:
        if tuple(value.shape) == tuple(view.shape):
            continue
        if src_key == first and value.shape[1] != view.shape[1]:
            src_obs = describe_space(src_spaces.get("observation_space", {"shape": (int(value.shape[1]),)}))
            raise UserError(
                f"source observation space {src_obs} cannot map onto the targets' {describe_space(obs_space)} "
                f"(the trunk's input layer takes {int(value.shape[1])} features, the targets give "
                f"{int(view.shape[1])}); transfer only the upper trunk layers with the option "
                f"layer_map: {{skip: ['{trunk_prefix}{first_layer[0]}.*']}} (an arm option in a spec, --option "
                f"\"layer_map={{skip: ['{trunk_prefix}{first_layer[0]}.*']}}\" on transfer)"
            )
        # The action dimension: rows of action_net, the last axis of log_std (gSDE's is 2-D).
        axis = -1 if src_key == "log_std" else 0
        if src_key.startswith(("action_net.", "log_std")) and value.shape[axis] != view.shape[axis]:
            src_act = describe_space(src_spaces.get("action_space", {"shape": (int(value.shape[0]),)}))
            raise UserError(
                f"source action space {src_act} cannot map onto the targets' {describe_space(policy.action_space)}; "
                "leave the action head out of the transfer (transfer: trunk, or transfer: no-action)"
            )


def apply_transfer(
    policy: MultiTaskActorCriticPolicy,
    checkpoint: Checkpoint,
    parts: frozenset[str],
    layer_map: LayerMap | None = None,
    tasks: Sequence[int] | None = None,
) -> TransferReport:
    """Copy the selected parts of ``checkpoint`` into ``policy`` in place (call after constructing the model).

    Source heads are copied into every target task's head (or those in ``tasks``). A policy
    with per-task input adapters (targets whose spaces differ) takes the source's input
    layer into the adapters of ``tasks`` and its upper layers into the shared trunk.
    """
    layer_map = layer_map or LayerMap()
    report = TransferReport(str(checkpoint.path), checkpoint.sha256, sorted(parts))
    src: dict[str, th.Tensor] = {}
    for key, value in checkpoint.state_dict.items():
        if any(fnmatch.fnmatch(key, pat) for pat in layer_map.skip):
            report.entries.append(Entry(key, None, "skipped", list(value.shape), "skipped by the layer map"))
        else:
            src[key] = value
    targets = dict(policy.named_parameters())  # deduplicated: shared trunk appears once
    n_tasks = policy.n_tasks
    task_ids = list(range(n_tasks)) if tasks is None else list(tasks)
    heads = policy.mlp_extractor
    # Found among all tensors, skipped ones included: skipping the trunk must not move it onto
    # another prefix (SB3 keeps pi_features_extractor.* as an alias of the shared extractor).
    trunk_prefix = detect_trunk_prefix(checkpoint.state_dict, layer_map)
    multi_task_source = any(k.startswith("mlp_extractor.policy_heads.") for k in src)
    if multi_task_source and parts & {"pi_head", "action", "vf_head", "log_std"}:
        raise UserError(
            "the source is a multi-task policy (e.g. a distilled student) whose heads belong to its own tasks; "
            "transfer its trunk only (transfer: trunk), or drop a zero-shot arm (it plays the source's own heads)"
        )
    pending: list[tuple[str, th.Tensor, str, th.Tensor]] = []  # (src_key, value, dst_key, dst view)
    handled: set[str] = set()

    def skip(key: str, reason: str) -> None:
        report.entries.append(Entry(key, None, "skipped", list(src[key].shape), reason))
        handled.add(key)

    # Trunk: source Linear layers in order onto target trunk Linear layers in order; with input
    # adapters the source's first layer feeds the adapters and the rest the shared trunk.
    src_layers = _linear_indices(checkpoint.state_dict, trunk_prefix)  # positions count skipped layers too
    dst_layers = _linear_indices(targets, TRUNK)
    adapters = "features_extractor.adapters.weight" in targets
    offset = 1 if adapters else 0
    for key in [k for k in src if k.startswith(trunk_prefix)]:
        if "trunk" not in parts:
            skip(key, "trunk not selected (scratch)")
            continue
        if len(src_layers) != len(dst_layers) + offset:
            raise UserError(
                f"source trunk {trunk_prefix}* has {len(src_layers)} layers, target trunk has "
                f"{len(dst_layers) + offset}; set trunk_arch to the source's widths"
            )
        idx, leaf = key[len(trunk_prefix) :].split(".", 1)
        position = src_layers.index(idx)
        if adapters and position == 0:
            dst = targets[f"features_extractor.adapters.{leaf}"].data
            if not task_ids:
                skip(key, "no target task shares the source's observation space: adapters start fresh")
            for k in task_ids:
                view = dst[k][:, : src[key].shape[1]] if leaf == "weight" else dst[k]
                pending.append((key, src[key], f"features_extractor.adapters.{leaf}[task {k}]", view))
            continue
        dst_key = f"{TRUNK}{dst_layers[position - offset]}.{leaf}"
        pending.append((key, src[key], dst_key, targets[dst_key].data))
    if adapters:
        fresh_adapters = [k for k in range(n_tasks) if k not in task_ids]
        if fresh_adapters:
            report.notes.append(f"input adapters of tasks {fresh_adapters} start fresh (their spaces differ)")

    # Per-task heads from a single-task source: hidden layers, output layers, log_std.
    def head_layers(src_prefix: str, part: str, dst_stack: str) -> None:
        src_idx = _linear_indices(src, src_prefix)
        dst_n = len(getattr(heads, dst_stack))
        for key in [k for k in src if k.startswith(src_prefix)]:
            if part not in parts:
                skip(key, f"{part} not selected (fresh per-task head)")
                continue
            if not task_ids:
                skip(key, "no target task shares the source's spaces: fresh per-task heads")
                continue
            if len(src_idx) != dst_n:
                raise UserError(
                    f"source {src_prefix}* has {len(src_idx)} layers, target {dst_stack} has {dst_n}; "
                    "set head_arch to match the source or leave this part out of 'transfer'"
                )
            idx, leaf = key[len(src_prefix) :].split(".", 1)
            dst_key = f"mlp_extractor.{dst_stack}.{src_idx.index(idx)}.{leaf}"
            for k in task_ids:
                pending.append((key, src[key], f"{dst_key}[{k}]", targets[dst_key].data[k]))

    if trunk_prefix != "mlp_extractor.policy_net.":
        head_layers("mlp_extractor.policy_net.", "pi_head", "policy_heads")
        # A plain MlpPolicy's critic hidden layers read raw observations, not trunk features:
        # they are reported as skipped below rather than mapped onto the value heads.
        head_layers("mlp_extractor.value_net.", "vf_head", "value_heads")

    def output_layer(name: str, part: str, block: int) -> None:
        w_key, b_key = f"{name}.weight", f"{name}.bias"
        if w_key not in src:
            return
        if part not in parts:
            skip(w_key, f"{part} not selected (fresh)")
            skip(b_key, f"{part} not selected (fresh)")
            return
        dst_w, dst_b = targets[w_key].data, targets[b_key].data
        # Padded action spaces: the source's outputs are the first rows (the rest are masked padding).
        rows = src[w_key].shape[0] if policy.task_action_dims is not None and name == "action_net" else None
        if not task_ids:
            skip(w_key, "no target task shares the source's spaces: fresh")
            skip(b_key, "no target task shares the source's spaces: fresh")
            return
        for k in task_ids:
            view = dst_w[:rows, k * block : (k + 1) * block]
            pending.append((w_key, src[w_key], f"{w_key}[:, task {k}]", view))
        # Output biases are shared across tasks in the multi-task policy (see policies/multitask.py).
        pending.append((b_key, src[b_key], b_key, dst_b[:rows]))

    output_layer("action_net", "action", heads.head_dim_pi)
    if trunk_prefix == "mlp_extractor.policy_net." and "value_net.weight" in src:
        # A plain MlpPolicy's value layer reads the critic's own hidden layers, which do not transfer.
        for key in ("value_net.weight", "value_net.bias"):
            skip(key, "value layer of a plain MlpPolicy reads critic layers that do not transfer")
    else:
        output_layer("value_net", "vf_head", heads.head_dim_vf)

    if "log_std" in src:
        if "log_std" not in parts:
            skip("log_std", "log_std not selected (fresh exploration)")
        elif src["log_std"].dim() == 2:  # gSDE: rows index the policy latent, one block per task
            for k in task_ids:
                view = targets["log_std"].data[k * heads.head_dim_pi : (k + 1) * heads.head_dim_pi]
                pending.append(("log_std", src["log_std"], f"log_std[task {k}]", view))
        else:
            rows = src["log_std"].shape[0] if policy.task_action_dims is not None else None
            pending.append(("log_std", src["log_std"], "log_std", targets["log_std"].data[:rows]))

    handled |= {p[0] for p in pending}
    for key in src:
        if key in handled:
            continue
        if key.startswith(ALIASES):
            skip(key, "alias of the shared features extractor")
        elif multi_task_source and key.startswith(("mlp_extractor.policy_heads.", "mlp_extractor.value_heads.")):
            skip(key, "per-task head of a multi-task source")
        elif trunk_prefix == "mlp_extractor.policy_net." and key.startswith("mlp_extractor.value_net."):
            skip(key, "critic hidden layers of a plain MlpPolicy: the trunk comes from the actor")
        else:
            raise UserError(
                f"source tensor '{key}' {tuple(src[key].shape)} has no place in the target policy; "
                "add it to the layer map's skip list if leaving it out is intended"
            )

    _check_spaces(checkpoint, policy, pending, trunk_prefix, src_layers[:1])
    for src_key, value, dst_key, view in pending:
        _check_shape(src_key, value, dst_key, view)
    with th.no_grad():
        for src_key, value, dst_key, view in pending:
            view.copy_(value.to(view.device, view.dtype))
            report.entries.append(Entry(src_key, dst_key, "copied", list(value.shape)))
    written = {p[2].split("[")[0] for p in pending}
    report.fresh = sorted(n for n in targets if n not in written)
    return report
