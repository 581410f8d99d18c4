"""Train one multi-task policy on several targets, from a source checkpoint or from scratch.

The scratch baseline is ``finetune(..., checkpoint=None, strategy="scratch")``: the same
function, architecture, hyperparameters, seeds and evaluation; only the initialisation
and the freezing / learning-rate plan differ between arms.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from rltransfer import interrupts, normalization
from rltransfer.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from rltransfer.devices import device_record, resolve_device
from rltransfer.domain import DomainAdversarial, FeatureShift
from rltransfer.envs import Family, FiniteGuard, Task, Variant
from rltransfer.errors import UserError
from rltransfer.evaluation import EvalCurve, PerTaskEvalCallback, TaskEvalEnv, TaskRolloutLogger, evaluate_tasks
from rltransfer.forgetting import measure_forgetting
from rltransfer.hyperparams import activation, from_zoo, policy_options, ppo_kwargs, resolve_hyperparams
from rltransfer.io import atomic_write_bytes, atomic_write_json, sha256, staging_dir, versions
from rltransfer.policies import TRUNK_PREFIX, MultiTaskActorCriticPolicy
from rltransfer.ppo import TransferPPO
from rltransfer.pretraining import EVAL_SEED_OFFSET
from rltransfer.resolve import family_lineage
from rltransfer.snapshot import DEFAULT_EVERY_S, open_snapshots, run_key
from rltransfer.source_policy import is_source_of, source_variant
from rltransfer.source_settings import settings_differing, source_architecture
from rltransfer.strategies import (
    Strategy,
    configure_strategy,
    frozen_parameters,
    parse_strategy,
    untransferred_layers,
)
from rltransfer.tasks import Target, TaskSet, check_distinct, check_trainable, resolve_targets
from rltransfer.training import attach_logger, learn, record_hparams
from rltransfer.transfer import TransferReport, apply_transfer


@dataclass
class FinetuneResult:
    model: TransferPPO
    curve: EvalCurve
    report: TransferReport | None
    manifest: dict[str, Any]
    out: Path | None


def source_view_trunk(policy: MultiTaskActorCriticPolicy, same_space: list[int] | None) -> dict[str, Any] | None:
    """The fine-tuned trunk as a single-task source trunk (adapter of a same-space task first), or ``None``."""
    state = {k: v.detach().clone() for k, v in policy.state_dict().items() if k.startswith(TRUNK_PREFIX)}
    if policy.task_obs_dims is None:
        return state
    if not same_space:
        return None
    k = same_space[0]
    adapters = policy.features_extractor.adapters
    out = {
        f"{TRUNK_PREFIX}0.weight": adapters.weight[k, :, : policy.task_obs_dims[k]].detach().clone(),
        f"{TRUNK_PREFIX}0.bias": adapters.bias[k].detach().clone(),
    }
    for key, value in state.items():
        idx, leaf = key[len(TRUNK_PREFIX) :].split(".", 1)
        out[f"{TRUNK_PREFIX}{int(idx) + 2}.{leaf}"] = value  # trunk layer i was the source's layer i + 1
    return out


def source_states(ckpt: Checkpoint | None, tasks: TaskSet, strat: Strategy) -> np.ndarray | None:
    """The source's visited states where the targets share its space (feature shift, dann's alignment).

    A ``dann`` strategy without them is an error: a plain SB3 zip stores none, and cross-space
    targets cannot be compared with them.
    """
    states = ckpt.source_observations() if ckpt is not None and tasks.spaces is None else None
    if strat.dann and states is None:
        raise UserError(
            "dann aligns target features with the source's states: it needs a source checkpoint from "
            "`rltransfer pretrain` (which stores them) and targets of the source's own family"
        )
    return states


def build_model(
    family: Family | TaskSet,
    variants: Sequence[Variant] | None,
    hp: Mapping[str, Any],
    seed: int,
    device: str | th.device = "cpu",
) -> TransferPPO:
    """The multi-task PPO model every arm starts from (same seed: same initial weights).

    ``family`` is a ``TaskSet`` (then ``variants`` is ``None``) or a family with its variants.
    """
    tasks = family if isinstance(family, TaskSet) else resolve_targets(family, list(variants or []))
    env = normalization.wrap(FiniteGuard(tasks.train_env(hp["n_envs"], seed), tasks.describe()), hp, dict_obs=True)
    policy_kwargs = {
        "trunk_arch": list(hp["trunk_arch"]),
        "net_arch": dict(hp["head_arch"]),
        "activation_fn": activation(hp),
        **policy_options(hp),
        **tasks.policy_kwargs(),
    }
    return TransferPPO(
        MultiTaskActorCriticPolicy,
        env,
        seed=seed,
        device=device,
        policy_kwargs=policy_kwargs,
        **ppo_kwargs(hp),
    )


def finetune(
    family: str | Family,
    targets: Sequence[Target] | str,
    checkpoint: str | Path | Checkpoint | None,
    strategy: str | Strategy = "finetune",
    seed: int = 0,
    timesteps: int | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = False,
    device: str | th.device = "cpu",
    verbose: int = 0,
    forgetting: bool = True,
    resume: bool = False,
    snapshot_every: float | None = DEFAULT_EVERY_S,
) -> FinetuneResult:
    """Train (or, for ``zero-shot``, only evaluate) a multi-task policy on ``targets``.

    ``family`` names the hyperparameters (and the family of bare variant names); targets of
    other families are written ``family/variant`` and may have other observation or action
    spaces (per-task adapters and action masks then bridge them).
    ``timesteps`` counts target env steps over all tasks together. Each task gets
    ``n_envs`` sub-environments, so every task sees data at the single-task rate. With
    ``forgetting`` and an rltransfer source, the source task is evaluated with the source
    heads on the fine-tuned trunk (see ``rltransfer.forgetting``).

    With ``out``, the run is snapshotted every ``snapshot_every`` seconds while it trains
    (``rltransfer.snapshot``; ``None``: never); ``resume`` continues a killed attempt at ``out``
    from its last snapshot, with the same numbers as an uninterrupted run.
    """
    tasks = resolve_targets(family, targets)
    check_trainable(tasks.tasks)
    check_distinct(tasks.tasks)
    fam = tasks.family
    strat = parse_strategy(strategy) if isinstance(strategy, str) else strategy
    if not isinstance(strat, Strategy):
        raise UserError(f"strategy must be a name such as 'freeze' or a parse_strategy(...) result, got {strategy!r}")
    ckpt = load_checkpoint(checkpoint) if isinstance(checkpoint, str | Path) else checkpoint
    if strat.uses_source and ckpt is None:
        raise UserError(f"strategy '{strat.name}' transfers from a source; pass --source PATH (or use scratch)")
    if strat.rehearse:
        tasks = tasks.with_rehearsal(rehearsal_task(ckpt, tasks))
    overrides = from_zoo(hyperparams or {})  # a Zoo net_arch is trunk_arch/head_arch before the source's fill in
    if ckpt is not None:
        for key, value in source_architecture(ckpt).items():
            overrides.setdefault(key, value)
    if timesteps is not None:
        overrides["n_timesteps"] = timesteps
    hp = resolve_hyperparams(fam, overrides)
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")
    dev = resolve_device(device)
    out_path = Path(out) if out is not None else None
    if out_path is None:
        return _run(tasks, ckpt, strat, seed, hp, None, progress, dev, verbose, forgetting)
    with interrupts.run_in(staging_dir(out_path, overwrite=overwrite, resume=resume)) as staging:
        result = _run(tasks, ckpt, strat, seed, hp, staging, progress, dev, verbose, forgetting, snapshot_every)
    result.out = out_path
    return result


def rehearsal_task(ckpt: Checkpoint | None, tasks: TaskSet) -> Task:
    """The source's own task, which a ``rehearse`` arm keeps training on beside the targets."""
    why = None
    if ckpt is None:
        why = "no source was given"
    elif ckpt.manifest is None:
        why = f"'{ckpt.path}' is a plain SB3 zip, which does not record the task it trained on"
    elif not is_source_of(ckpt, tasks.family):
        why = f"'{ckpt.path}' is not a source pretrained on the '{tasks.family.name}' family"
    elif tasks.spaces is not None:
        why = "the targets' spaces differ (the rehearsed source task would need an adapter of its own)"
    if why is not None:
        raise UserError(
            f"rehearse trains on the source's own task beside the targets, and needs an rltransfer source "
            f"checkpoint of the targets' family: {why}; drop rehearse from this arm"
        )
    assert ckpt is not None
    return Task(tasks.family, replace(source_variant(ckpt, tasks.family), name="rehearsal"))


def _run(
    tasks: TaskSet,
    ckpt: Checkpoint | None,
    strat: Strategy,
    seed: int,
    hp: dict[str, Any],
    staging: Path | None,
    progress: bool,
    device: th.device,
    verbose: int,
    forgetting: bool = True,
    snapshot_every: float | None = None,
) -> FinetuneResult:
    started = time.time()
    fam = tasks.family
    model = build_model(tasks, None, hp, seed, device)
    policy = model.policy
    assert isinstance(policy, MultiTaskActorCriticPolicy)
    report = None
    if ckpt is not None and strat.uses_source:
        report = apply_transfer(policy, ckpt, strat.transfer, strat.layer_map, tasks.same_space_tasks(ckpt))
        if ckpt.obs_normalization is not None:
            padded = tasks.spaces is not None
            normalization.load_stats(model.get_env(), ckpt.obs_normalization, padded)  # type: ignore[arg-type]
            count = ckpt.obs_normalization["count"]
            report.notes.append(f"observation normalisation statistics carried from the source (count {count:g})")
        for key, (theirs, ours) in settings_differing(ckpt, hp).items():
            # Given explicitly (--hp, --conf-file, a spec's hyperparams): allowed, but the weights meet a
            # setting other than their own, which nothing else in the run would show.
            report.notes.append(f"{key}={ours!r} differs from the source's {theirs!r}: set explicitly, so kept")
    fresh = untransferred_layers(policy, report.fresh) if report is not None else []
    callbacks = configure_strategy(model, strat, hp["n_timesteps"], fresh)
    if report is not None and fresh and strat.train:
        report.notes.append(
            f"trunk layer{'s' if len(fresh) > 1 else ''} {', '.join(map(str, fresh))} (0 = the input layer) took "
            "no source weights: trained from random initialisation (never frozen, no L2-SP pull, learning-rate "
            "scale 1 unless trunk_lr_scale gives one per layer)"
        )
    source_obs = source_states(ckpt, tasks, strat)
    env_task_ids = model.get_env().env_task_ids  # type: ignore[union-attr]
    shift = None
    if source_obs is not None and strat.train:
        shift = FeatureShift(source_obs, env_task_ids, tasks.names)
        callbacks.append(shift)
        if strat.dann:
            callbacks.append(DomainAdversarial(source_obs, strat.dann))
    if report is not None:
        report.frozen = frozen_parameters(policy)
    names = tasks.eval_names
    # All tasks' evaluation episodes in one env: the same episodes as task by task, fewer calls.
    all_tasks = FiniteGuard(tasks.eval_env_all(hp["eval_episodes"]), tasks.describe())
    eval_envs = TaskEvalEnv(normalization.wrap(all_tasks, hp, True, False), names, hp["eval_episodes"])
    eval_seed = seed + EVAL_SEED_OFFSET
    evaluator = PerTaskEvalCallback(eval_envs, hp["eval_freq"], hp["eval_episodes"], eval_seed)
    callbacks = [evaluator, TaskRolloutLogger(env_task_ids, tasks.names), *callbacks]
    snapshots = None
    if strat.train:
        key = run_key(
            kind="transfer",
            families=family_lineage(fam, *(t.family for t in tasks.tasks)),
            targets=tasks.to_dicts(shifts=False),  # as before shifts were recorded: older snapshots resume
            strategy=strat.to_dict(),
            seed=seed,
            hyperparams=hp,
            source=None if ckpt is None else ckpt.sha256,
        )  # not the device: a grid may resume on another (then equal to float rounding, as any device change)
        snapshots = open_snapshots(model, staging, key, callbacks, snapshot_every, seed)
    resumed_at = snapshots.resumed_at if snapshots is not None else None
    attach_logger(model, staging / "logs" if staging else None, verbose, resumed_at)
    if resumed_at is None:
        record_hparams(
            model, {**hp, "seed": seed, "strategy": strat.name, "transfer": "+".join(sorted(strat.transfer))}
        )
    if strat.train:
        learn(model, hp["n_timesteps"], callbacks, progress=progress, snapshots=snapshots)
        curve = evaluator.curve
    else:
        # Zero-shot: one evaluation at step 0. An untrained policy evaluated deterministically on
        # the same starts scores the same at every step; experiments broadcast it over their grid.
        results = evaluate_tasks(model, eval_envs, hp["eval_episodes"], eval_seed, train_env=model.get_env())
        model.logger.close()
        curve = EvalCurve(names, [0], [[results[t][0] for t in names]], [[results[t][1] for t in names]])
    forgot = None
    if forgetting and ckpt is not None and report is not None:
        trunk = source_view_trunk(policy, tasks.same_space_tasks(ckpt))
        if trunk is not None:
            forgot = measure_forgetting(ckpt, fam, trunk, hp["eval_episodes"], eval_seed)
    manifest = {
        "kind": "transfer" if report else "scratch",
        "forgetting": None
        if forgot is None
        else {
            "before": forgot.before,
            "after": forgot.after,
            "drop": forgot.drop,
            # A plain zip records no task: it was evaluated on the family's source variant.
            **({"source_task": "assumed: the family's source variant"} if ckpt and ckpt.manifest is None else {}),
        },
        "feature_mmd": shift.result() if shift is not None else None,
        "family": fam.name,
        **family_lineage(fam, *(t.family for t in tasks.tasks)),
        "targets": tasks.to_dicts(),
        "strategy": strat.to_dict(),
        "seed": seed,
        "timesteps": int(model.num_timesteps),
        "hyperparams": hp,
        "source": None
        if ckpt is None
        else {
            "path": str(ckpt.path),
            "zip_sha256": ckpt.sha256,
            "timesteps": ckpt.trained_steps,  # a plain zip's from its JSON: the report charges them
            # A plain zip's VecNormalize file: its observation statistics started every arm's.
            "vec_normalize": None
            if ckpt.stats_file is None
            else {"path": str(ckpt.stats_file), "sha256": sha256(ckpt.stats_file)},
            "manifest": {
                k: ckpt.manifest.get(k) for k in ("family", "variant", "seed", "timesteps", "eval", "zip_sha256")
            }
            if ckpt.manifest
            else None,
        },
        "frozen": frozen_parameters(policy),
        "final_eval": dict(zip(names, curve.returns[-1], strict=True)),
        # The statistics the final policy acts with (``rltransfer.agent``; a source for a further transfer).
        "obs_normalization": normalization.stats_of(model.get_env()),  # type: ignore[arg-type]
        "device": device_record(model.device),
        "versions": versions(),
        "command": sys.argv,
        "wall_time_s": round(time.time() - started + (snapshots.elapsed_before if snapshots else 0.0), 2),
        "resumed": snapshots.history if snapshots else [],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if staging is not None:
        arrays = curve.as_arrays()
        buf = io.BytesIO()
        np.savez(buf, task_names=np.asarray(names), **arrays)  # type: ignore[arg-type]
        atomic_write_bytes(staging / "curves.npz", buf.getvalue())
        if report is not None:
            atomic_write_json(staging / "transfer_report.json", report.to_dict())
        atomic_write_json(
            staging / "config.json",
            {
                "family": fam.name,
                "targets": names,
                "seed": seed,
                "strategy": strat.to_dict(),
                "hyperparams": hp,
            },
        )
        save_checkpoint(model, staging, manifest)
    model.get_env().close()  # type: ignore[union-attr]
    return FinetuneResult(model, curve, report, manifest, None)
