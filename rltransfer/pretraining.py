"""Source pretraining: PPO with a named trunk on one variant of a family."""

from __future__ import annotations

import hashlib
import io
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from rltransfer import interrupts, normalization
from rltransfer.checkpoint import SOURCE_OBS_FILE, save_checkpoint
from rltransfer.devices import device_record, resolve_device
from rltransfer.domain import collect_observations
from rltransfer.envs import Family, FiniteGuard, Task, Variant, make_eval_env
from rltransfer.envs.multitask import make_task_vec_env
from rltransfer.errors import UserError
from rltransfer.evaluation import EvalCurve, PerTaskEvalCallback
from rltransfer.hyperparams import activation, policy_options, ppo_kwargs, resolve_hyperparams
from rltransfer.io import atomic_write_bytes, atomic_write_json, staging_dir, versions
from rltransfer.policies import TrunkExtractor
from rltransfer.ppo import TransferPPO
from rltransfer.resolve import family_lineage, resolve_family, resolve_variant, variant_record
from rltransfer.snapshot import DEFAULT_EVERY_S, open_snapshots, run_key
from rltransfer.tasks import check_trainable
from rltransfer.training import attach_logger, learn, record_hparams

EVAL_SEED_OFFSET = 10_000
SOURCE_OBSERVATIONS = 2048


@dataclass
class PretrainResult:
    model: TransferPPO
    curve: EvalCurve
    manifest: dict[str, Any]
    out: Path | None


def source_policy_kwargs(hp: Mapping[str, Any]) -> dict[str, Any]:
    """SB3 ``MlpPolicy`` whose hidden layers shared by actor and critic are ``features_extractor.trunk``."""
    act = activation(hp)
    return {
        "features_extractor_class": TrunkExtractor,
        "features_extractor_kwargs": {"net_arch": list(hp["trunk_arch"]), "activation_fn": act},
        "net_arch": dict(hp["head_arch"]),
        "activation_fn": act,
        "share_features_extractor": True,
        **policy_options(hp),
    }


def pretrain(
    family: str | Family,
    variant: str | Variant | Mapping[str, float] = "source",
    seed: int = 0,
    timesteps: int | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = False,
    device: str | th.device = "cpu",
    verbose: int = 0,
    resume: bool = False,
    snapshot_every: float | None = DEFAULT_EVERY_S,
) -> PretrainResult:
    """Train a PPO source policy; with ``out``, write ``model.zip``, ``manifest.json``, logs and curves.

    With ``out``, the run is snapshotted every ``snapshot_every`` seconds (``None``: never), and
    ``resume`` continues a killed attempt at ``out`` from its last snapshot (``rltransfer.snapshot``).

    Example:
        >>> result = pretrain("cartpole", seed=0, timesteps=256, hyperparams={"n_steps": 32})  # doctest: +SKIP
        >>> result.curve.returns[-1]  # doctest: +SKIP
    """
    fam = resolve_family(family)
    var = resolve_variant(fam, variant)
    check_trainable([Task(fam, var)], "source")
    overrides = dict(hyperparams or {})
    if timesteps is not None:
        overrides["n_timesteps"] = timesteps
    hp = resolve_hyperparams(fam, overrides)
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")
    dev = resolve_device(device)
    out_path = Path(out) if out is not None else None
    if out_path is None:
        return _train(fam, var, seed, hp, None, progress, dev, verbose)
    with interrupts.run_in(staging_dir(out_path, overwrite=overwrite, resume=resume)) as staging:
        return _train(fam, var, seed, hp, staging, progress, dev, verbose, out_path, snapshot_every)


def _train(
    fam: Family,
    var: Variant,
    seed: int,
    hp: dict[str, Any],
    staging: Path | None,
    progress: bool,
    device: th.device,
    verbose: int,
    final: Path | None = None,
    snapshot_every: float | None = None,
) -> PretrainResult:
    started = time.time()
    raw = FiniteGuard(make_task_vec_env(fam, var, hp["n_envs"], seed=seed), f"{fam.name}: {var.name}")
    env = normalization.wrap(raw, hp, dict_obs=False)
    model = TransferPPO(
        "MlpPolicy",
        env,
        seed=seed,
        device=device,
        verbose=verbose,
        policy_kwargs=source_policy_kwargs(hp),
        **ppo_kwargs(hp),
    )
    eval_env = normalization.wrap(
        FiniteGuard(make_eval_env(fam, var, hp["eval_episodes"]), f"{fam.name}: {var.name}"), hp, False, False
    )
    evaluator = PerTaskEvalCallback({var.name: eval_env}, hp["eval_freq"], hp["eval_episodes"], seed + EVAL_SEED_OFFSET)
    params = fam.resolve(var.params)
    key = run_key(kind="source", families=family_lineage(fam), params=params, seed=seed, hyperparams=hp)
    snapshots = open_snapshots(model, staging, key, [evaluator], snapshot_every, seed)
    resumed_at = snapshots.resumed_at if snapshots is not None else None
    attach_logger(model, staging / "logs" if staging else None, verbose, resumed_at)
    if resumed_at is None:
        record_hparams(model, {**hp, "seed": seed, "family": fam.name, "variant": var.name})
    learn(model, hp["n_timesteps"], [evaluator], progress=progress, snapshots=snapshots)
    curve = evaluator.curve
    # States the trained source visits: what domain-adaptive fine-tuning aligns targets with.
    normalization.sync(env, eval_env)
    source_obs = collect_observations(model, eval_env, SOURCE_OBSERVATIONS, seed + EVAL_SEED_OFFSET)
    manifest = {
        "kind": "source",
        "family": fam.name,
        **family_lineage(fam),
        "variant": variant_record(fam, var),
        "seed": seed,
        "timesteps": int(model.num_timesteps),
        "hyperparams": hp,
        "eval": {
            "mean_return": curve.returns[-1][0],
            "std_return": curve.stds[-1][0],
            "episodes": hp["eval_episodes"],
            "threshold": fam.threshold,
        },
        "curve": {"steps": curve.steps, "returns": [r[0] for r in curve.returns]},
        "obs_normalization": normalization.stats_of(env),
        "device": device_record(model.device),
        "versions": versions(),
        "command": sys.argv,
        "wall_time_s": round(time.time() - started + (snapshots.elapsed_before if snapshots else 0.0), 2),
        "resumed": snapshots.history if snapshots else [],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if staging is not None:
        atomic_write_json(staging / "config.json", {"family": fam.name, "variant": var.name, "seed": seed, **hp})
        buf = io.BytesIO()
        np.save(buf, source_obs, allow_pickle=False)
        atomic_write_bytes(staging / SOURCE_OBS_FILE, buf.getvalue())
        manifest["source_observations"] = {
            "file": SOURCE_OBS_FILE,
            "count": len(source_obs),
            "sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
        }
        save_checkpoint(model, staging, manifest)
    env.close()
    return PretrainResult(model, curve, manifest, final)
