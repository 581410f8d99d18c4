"""The settings a source's weights bind every arm to: trunk and head widths, activation, and
observation (and reward) normalisation, read from an rltransfer manifest or a plain SB3 zip."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from rltransfer import normalization
from rltransfer.checkpoint import Checkpoint
from rltransfer.errors import UserError
from rltransfer.hyperparams import ACTIVATIONS
from rltransfer.vecnormalize_file import candidates

# Settings a target must share with its source for the weights to mean the same thing.
SOURCE_BOUND_KEYS = ("trunk_arch", "head_arch", "activation_fn", "normalize")


def bound_settings(hp: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of ``hp`` that a policy's weights depend on (``SOURCE_BOUND_KEYS``)."""
    return {k: hp[k] for k in SOURCE_BOUND_KEYS if k in hp}


def comparable(value: Any) -> Any:
    """A setting as JSON would write it (tuples and lists alike; ``activation_fn`` case-blind)."""
    return json.loads(json.dumps(value).lower())


def settings_differing(checkpoint: Checkpoint, hp: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The bound settings ``hp`` sets otherwise than the source trained with: key -> (source's, hp's)."""
    bound = source_architecture(checkpoint)
    return {k: (v, hp[k]) for k, v in bound.items() if k in hp and comparable(v) != comparable(hp[k])}


def source_architecture(checkpoint: Checkpoint) -> dict[str, Any]:
    """The settings the targets must share with the source for its weights to fit and mean the same:
    trunk/head widths, activation, observation (and reward) normalisation (``SOURCE_BOUND_KEYS``)."""
    if checkpoint.manifest and "hyperparams" in checkpoint.manifest:
        hp = checkpoint.manifest["hyperparams"]
        # An older manifest may lack ``normalize`` (off) or mean observations only by ``true``.
        return {**bound_settings(hp), "normalize": normalization.written_by_older(hp.get("normalize", False))}
    # Plain SB3 MlpPolicy: its actor's hidden layers become the trunk; heads are linear.
    sd = checkpoint.state_dict
    widths = [
        int(sd[k].shape[0])
        for k in sorted(
            (k for k in sd if k.startswith("mlp_extractor.policy_net.") and k.endswith(".weight")),
            key=lambda k: int(k.split(".")[2]),
        )
    ]
    if not widths:
        return {}
    return {
        "trunk_arch": widths,
        "head_arch": {"pi": [], "vf": []},
        "activation_fn": plain_activation(checkpoint),
        "normalize": plain_normalize(checkpoint),
    }


def plain_activation(checkpoint: Checkpoint) -> str:
    """A plain zip's ``activation_fn`` as rltransfer names it (SB3's ``MlpPolicy`` default: tanh)."""
    spelled = str(checkpoint.policy_kwargs.get("activation_fn", "<class 'torch.nn.modules.activation.Tanh'>"))
    name = re.sub(r"^<class '(?:[\w.]*\.)?(\w+)'>$", r"\1", spelled).lower()
    if name not in ACTIVATIONS:
        raise UserError(
            f"'{checkpoint.path}' was trained with activation {spelled}; a transferred trunk needs one of "
            f"{sorted(ACTIVATIONS)}: retrain the source with one of them"
        )
    return name


def plain_normalize(checkpoint: Checkpoint) -> bool | dict[str, Any]:
    """The ``normalize`` a plain zip's policy trained under: ``False`` on raw observations, else the
    ``VecNormalize`` options of the file saved with it (which must be found). Rewards included:
    the RL Zoo's ``normalize: true`` scales them too, and a critic fine-tuned on unscaled returns
    sends value-loss gradients into the shared trunk that wreck the transferred features."""
    if not checkpoint.trained_normalized:
        return False
    if checkpoint.vec_normalize is None:
        beside = ", ".join(str(path) for path in candidates(checkpoint.path))
        raise UserError(
            f"'{checkpoint.path}' was trained on normalised observations (VecNormalize) but no statistics were "
            f"found beside it; put the VecNormalize file saved with it at one of: {beside}"
        )
    return dict(checkpoint.vec_normalize.options)
