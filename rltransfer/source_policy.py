"""A source checkpoint as a runnable single-task SB3 model, built from its weights only."""

from __future__ import annotations

from stable_baselines3.common.vec_env import VecEnv

from rltransfer import normalization
from rltransfer.checkpoint import Checkpoint
from rltransfer.envs import Family, Variant, make_eval_env
from rltransfer.envs.multitask import make_task_vec_env
from rltransfer.hyperparams import ppo_kwargs
from rltransfer.ppo import TransferPPO
from rltransfer.pretraining import source_policy_kwargs


def source_variant(checkpoint: Checkpoint) -> Variant:
    manifest = checkpoint.manifest or {}
    return Variant("source-task", manifest["variant"]["params"], "source")


def is_source_of(checkpoint: Checkpoint, family: Family) -> bool:
    """An rltransfer source checkpoint trained on a variant of ``family``."""
    manifest = checkpoint.manifest
    return bool(manifest) and manifest.get("kind") == "source" and manifest.get("family") == family.name  # type: ignore[union-attr]


def load_source_model(checkpoint: Checkpoint, family: Family, seed: int = 0) -> TransferPPO:
    """The pretrained policy, rebuilt from the manifest's hyperparameters and the zip's weights.

    Nothing from the zip is unpickled (see ``rltransfer.checkpoint``).
    """
    assert checkpoint.manifest is not None, "load_source_model needs an rltransfer source checkpoint"
    hp = checkpoint.manifest["hyperparams"]
    env = normalization.wrap(make_task_vec_env(family, source_variant(checkpoint), 1, seed=seed), hp, False, False)
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
    model.policy.load_state_dict(checkpoint.state_dict)
    return model


def source_eval_env(checkpoint: Checkpoint, family: Family, variant: Variant, n_envs: int) -> VecEnv:
    """Evaluation env for the source policy: plain observations, the source's normalisation stats."""
    hp = (checkpoint.manifest or {}).get("hyperparams", {})
    env = normalization.wrap(make_eval_env(family, variant, n_envs), hp, False, False)
    if checkpoint.obs_normalization is not None:
        normalization.load_stats(env, checkpoint.obs_normalization)
    return env
