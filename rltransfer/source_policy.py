"""A source checkpoint as a runnable single-task SB3 model, built from its weights only."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch as th
from stable_baselines3.common.vec_env import VecEnv

from rltransfer import normalization
from rltransfer.checkpoint import Checkpoint
from rltransfer.envs import Family, Variant, make_eval_env
from rltransfer.envs.multitask import make_task_vec_env
from rltransfer.errors import UserError
from rltransfer.hyperparams import ppo_kwargs, resolve_hyperparams
from rltransfer.policies import TRUNK_PREFIX
from rltransfer.ppo import TransferPPO
from rltransfer.pretraining import source_policy_kwargs
from rltransfer.resolve import recorded_variant
from rltransfer.source_settings import source_architecture
from rltransfer.transfer import describe_space

PLAIN_ACTOR = "mlp_extractor.policy_net."


def source_variant(checkpoint: Checkpoint, family: Family) -> Variant:
    """The task the source trained on: its manifest's variant (an observation-shift variant with
    its shift), or for a plain SB3 zip (which does not record it) the family's own source variant."""
    if checkpoint.manifest is None:
        return Variant("source-task", {}, "source")
    recorded = checkpoint.manifest["variant"]
    own = recorded_variant(family, recorded["name"], recorded["params"], shift=recorded.get("shift"))
    return replace(own, name="source-task", distance="source")


def plain_source_fits(checkpoint: Checkpoint, family: Family) -> bool:
    """A plain SB3 ``MlpPolicy`` zip whose spaces are those of ``family``'s tasks."""
    if checkpoint.manifest is not None or not any(k.startswith(PLAIN_ACTOR) for k in checkpoint.state_dict):
        return False
    env = make_eval_env(family, family.variant("source"), 1)
    try:
        ours = {
            "observation_space": describe_space(env.observation_space),
            "action_space": describe_space(env.action_space),
        }
    finally:
        env.close()
    return all(describe_space(checkpoint.spaces.get(k, {})) == v for k, v in ours.items())


def runs_as_source_of(checkpoint: Checkpoint, family: Family) -> bool:
    """A source policy of ``family`` that can run on its source task: an rltransfer source, or a plain
    SB3 zip with the family's spaces (taken to have trained on the family's source variant)."""
    return is_source_of(checkpoint, family) or plain_source_fits(checkpoint, family)


def is_source_of(checkpoint: Checkpoint, family: Family) -> bool:
    """An rltransfer source checkpoint trained on a variant of ``family``."""
    manifest = checkpoint.manifest
    return bool(manifest) and manifest.get("kind") == "source" and manifest.get("family") == family.name  # type: ignore[union-attr]


def source_hyperparams(checkpoint: Checkpoint, family: Family) -> dict[str, Any]:
    """The hyperparameters the source trained with: its manifest's, or for a plain zip the family's
    with the settings its weights bind (widths, activation, normalisation)."""
    if checkpoint.manifest is not None:
        return dict(checkpoint.manifest.get("hyperparams", {}))
    hp = {**resolve_hyperparams(family), **source_architecture(checkpoint)}
    log_std = checkpoint.state_dict.get("log_std")
    if log_std is not None:
        hp["use_sde"] = log_std.dim() == 2  # gSDE's log_std is (latent, actions): what the zip trained with
    return hp


def load_source_model(checkpoint: Checkpoint, family: Family, seed: int = 0) -> TransferPPO:
    """The pretrained policy, rebuilt from the manifest's hyperparameters and the zip's weights.

    A plain SB3 zip's actor becomes a source policy as transfer maps it: its hidden layers the
    trunk, its action layer (and ``log_std``) the action head; the critic, which ``advise`` and
    ``evaluate_tasks`` never read, stays untrained. Nothing from the zip is unpickled (see
    ``rltransfer.checkpoint``).
    """
    hp = source_hyperparams(checkpoint, family)
    env = normalization.wrap(
        make_task_vec_env(family, source_variant(checkpoint, family), 1, seed=seed), hp, False, False
    )
    kwargs = {k: v for k, v in ppo_kwargs(hp).items() if k not in ("n_steps", "batch_size")}
    model = TransferPPO(
        "MlpPolicy",
        env,
        seed=seed,
        policy_kwargs=source_policy_kwargs(hp),
        device="cpu",
        n_steps=64,
        batch_size=64,
        **kwargs,
    )
    if checkpoint.manifest is not None:
        model.policy.load_state_dict(checkpoint.state_dict)
    else:
        _load_plain_actor(model.policy, checkpoint.state_dict)
    return model


def _load_plain_actor(policy: th.nn.Module, state: dict[str, th.Tensor]) -> None:
    """Copy a plain ``MlpPolicy``'s actor into a source policy: hidden layer i to trunk layer i."""
    params = dict(policy.named_parameters())

    def put(key: str, value: th.Tensor) -> None:
        if params[key].shape != value.shape:  # copy_ would broadcast a mismatch silently
            raise UserError(f"plain zip tensor {tuple(value.shape)} does not fit {key} {tuple(params[key].shape)}")
        params[key].copy_(value)

    src_layers = sorted({k.split(".")[2] for k in state if k.startswith(PLAIN_ACTOR)}, key=int)
    dst_layers = sorted({k.split(".")[2] for k in params if k.startswith(TRUNK_PREFIX)}, key=int)
    with th.no_grad():
        for key, value in state.items():
            if key.startswith(PLAIN_ACTOR):
                idx, leaf = key[len(PLAIN_ACTOR) :].split(".", 1)
                put(f"{TRUNK_PREFIX}{dst_layers[src_layers.index(idx)]}.{leaf}", value)
            elif key.startswith("action_net.") or key == "log_std":
                put(key, value)


def source_eval_env(checkpoint: Checkpoint, family: Family, variant: Variant, n_envs: int) -> VecEnv:
    """Evaluation env for the source policy: plain observations, the source's normalisation stats."""
    hp = source_hyperparams(checkpoint, family)
    env = normalization.wrap(make_eval_env(family, variant, n_envs), hp, False, False)
    if checkpoint.obs_normalization is not None:
        normalization.load_stats(env, checkpoint.obs_normalization)
    return env
