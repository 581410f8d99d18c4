"""What a grid checks of its sources and binds from them before any run uses them.

``with_source_settings`` gives every arm, scratch included, the settings the source's weights
depend on; ``check_layer_counts``, ``check_solved`` and ``preflight`` stop the grid at arms or a
source it cannot use, before any run that would fine-tune it trains.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rltransfer.checkpoint import load_checkpoint
from rltransfer.errors import UserError
from rltransfer.experiment.spec import ExperimentSpec
from rltransfer.tasks import resolve_targets


def check_solved(spec: ExperimentSpec, source: Path) -> None:
    """With ``source.require_solved``: refuse a pretrained source whose final evaluation missed its
    family's threshold (the grid would measure transfer from a failed pretraining)."""
    if not spec.source.require_solved:
        return
    manifest = load_checkpoint(source).manifest or {}
    ev = manifest.get("eval") or {}
    if ev.get("mean_return") is None or ev.get("threshold") is None:
        raise UserError(f"source '{source}' records no evaluation to check source.require_solved against")
    if ev["mean_return"] < ev["threshold"]:
        raise UserError(
            f"source seed {manifest.get('seed')} returned {ev['mean_return']:.1f} on its own task, below the "
            f"threshold {ev['threshold']:g} (source.require_solved); raise source.timesteps or drop require_solved"
        )


def with_source_settings(spec: ExperimentSpec) -> ExperimentSpec:
    """``spec`` whose every run, scratch included, takes the settings the source's weights depend
    on (architecture, activation, observation normalisation), so that the arms differ in their
    initialisation only.

    Read from the spec for a source it pretrains (scratch runs train before that source exists),
    from the checkpoint otherwise; bound once, on the driver, so that workers without the
    checkpoint's path (Ray) run the same settings.
    """
    from rltransfer.hyperparams import resolve_hyperparams
    from rltransfer.source_settings import bound_settings, source_architecture

    if spec.source.checkpoint is not None:
        check_checkpoint_exists(spec)
        settings = source_architecture(load_checkpoint(spec.source.checkpoint))
    else:
        settings = bound_settings(resolve_hyperparams(spec.family, spec.source.hyperparams))
    return replace(spec, source_settings=settings)


def check_layer_counts(spec: ExperimentSpec) -> None:
    """For a source still to pretrain: refuse arms whose options count more or other trunk layers
    than the spec's trunk has (``partial:N``, per-layer rates), before anything trains (``preflight``
    checks it all once the source exists; a scratch run would otherwise train meanwhile)."""
    counting = [  # freeze trains 0 layers, which fits any trunk
        a
        for a in spec.arms
        if a.strategy.uses_source
        and ((a.strategy.trainable_layers or 0) > 0 or isinstance(a.strategy.trunk_lr_scale, tuple))
    ]
    if spec.source.checkpoint is not None or not counting:
        return
    # Imported here, past the common case: torch and SB3 would slow every `run` and `--dry-run`.
    from rltransfer.finetuning import build_model
    from rltransfer.hyperparams import resolve_hyperparams
    from rltransfer.strategies import check_fits, trunk_layers

    targets = spec.targets if spec.mode == "multitask" else spec.targets[:1]
    hp = resolve_hyperparams(spec.family, spec.target_hyperparams())
    model = build_model(resolve_targets(spec.family, targets), None, hp, seed=0)  # the trunk as the runs build it
    try:
        n = len(trunk_layers(model.policy))
    finally:
        model.get_env().close()  # type: ignore[union-attr]
    for arm in counting:
        try:
            check_fits(arm.strategy, n)
        except UserError as e:  # partial:N names itself; an arm named otherwise is named
            raise _naming(arm.name, e) from None


def check_checkpoint_exists(spec: ExperimentSpec) -> None:
    """``source.checkpoint`` is on disk; where a relative one was looked for, if not."""
    path = spec.source.checkpoint
    if path is None or path.exists():
        return
    if path.is_absolute():
        where = "does not exist"
    elif spec.path is not None:
        where = f"is in neither the working directory nor beside the spec ({spec.path.parent})"
    else:
        where = "is not in the working directory"
    raise UserError(
        f"source.checkpoint '{path}' {where}; give the path of a run directory or an SB3 PPO .zip "
        "(`rltransfer pretrain` makes one), or drop it to pretrain the source in the grid"
    )


def preflight(spec: ExperimentSpec, source: Path) -> None:
    """Apply every arm's transfer and strategy to a throwaway model, so that mapping errors and
    strategies that do not fit the source (``partial:N`` past its trunk's depth, per-layer rates
    of another length, ``dann`` without the source's states) stop the grid before any run that
    uses the source trains; and check that the source was trained with the settings the runs use."""
    from rltransfer.finetuning import build_model, rehearsal_task, source_states
    from rltransfer.hyperparams import resolve_hyperparams
    from rltransfer.source_settings import settings_differing
    from rltransfer.strategies import configure_strategy, untransferred_layers
    from rltransfer.transfer import apply_transfer

    ckpt = load_checkpoint(source)
    hp = resolve_hyperparams(spec.family, spec.target_hyperparams())
    for key, (value, _) in settings_differing(ckpt, hp).items():
        if key not in spec.hyperparams:
            raise UserError(
                f"source '{ckpt.path}' was trained with {key}={value!r} but the spec's runs use "
                f"{hp[key]!r}; pretrain it again (remove it) or set {key} in the spec's hyperparams"
            )
    targets = spec.targets if spec.mode == "multitask" else spec.targets[:1]
    tasks = resolve_targets(spec.family, targets)
    for arm in spec.arms:
        if not arm.strategy.uses_source:
            continue
        model = build_model(tasks, None, hp, seed=0)
        try:
            if arm.strategy.rehearse:
                rehearsal_task(ckpt, tasks)
            report = apply_transfer(model.policy, ckpt, arm.strategy.transfer, arm.strategy.layer_map)
            fresh = untransferred_layers(model.policy, report.fresh)
            configure_strategy(model, arm.strategy, hp["n_timesteps"], fresh)
            if arm.strategy.dann:  # the states are read (and checksummed) only where an arm needs them
                source_states(ckpt, tasks, arm.strategy)
        except UserError as e:  # which arm cannot use the source, where the message does not say
            raise _naming(arm.name, e) from None
        finally:
            model.get_env().close()  # type: ignore[union-attr]


def _naming(arm: str, error: UserError) -> UserError:
    """``error`` with the arm it concerns named first, unless it already names it."""
    text = str(error)
    return UserError(text if text.startswith(f"'{arm}'") else f"arm '{arm}': {text}")
