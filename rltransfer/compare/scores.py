"""Input checks and per-run metric matrices for a set of arms sharing one baseline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from rltransfer.compare.accounting import Accounting, shift_time_to_threshold
from rltransfer.compare.metrics import (
    area_under_curve,
    as_curves,
    as_steps,
    final_return,
    jumpstart,
    time_to_threshold,
    transfer_ratio,
)

FloatArray = npt.NDArray[np.float64]

#: Per-run metrics computed for every arm, in report order.
METRICS: tuple[str, ...] = ("jumpstart", "auc", "final_return", "time_to_threshold", "transfer_ratio")


def validate_arms(
    curves: Mapping[str, npt.ArrayLike],
    steps: npt.ArrayLike,
    task_names: Sequence[str],
    thresholds: Sequence[float] | npt.ArrayLike,
    baseline: str,
) -> tuple[dict[str, FloatArray], FloatArray, FloatArray]:
    """Checks that all arms share tasks and evaluations and hold finite values.

    Args:
        curves: arm name to ``(runs, tasks, evals)`` curves; runs may differ between arms.
        steps: ``(evals,)`` shared evaluation steps.
        task_names: one name per task.
        thresholds: one threshold per task.
        baseline: the arm every other arm is compared with; must be in ``curves``.

    Returns:
        ``(curves, steps, thresholds)`` as float arrays.

    Raises:
        ValueError: on a missing baseline, mismatched shapes, or NaN/inf values (the
            message names the arm).
    """
    if baseline not in curves:
        raise ValueError(f"baseline arm {baseline!r} not in curves (arms: {sorted(curves)})")
    arrays: dict[str, FloatArray] = {}
    for arm, value in curves.items():
        array = as_curves(value, f"curves[{arm!r}]")
        if not np.isfinite(array).all():
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise ValueError(f"arm {arm!r} has {bad} NaN or infinite values in its curves")
        arrays[arm] = array
    shapes = {arm: a.shape[1:] for arm, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"arms disagree on (tasks, evals): {shapes}")
    tasks, evals = arrays[baseline].shape[1:]
    if len(task_names) != tasks:
        raise ValueError(f"{len(task_names)} task names for {tasks} tasks")
    limits = np.asarray(thresholds, dtype=np.float64)
    if limits.shape != (tasks,) or not np.isfinite(limits).all():
        raise ValueError(f"thresholds must be {tasks} finite values, got {limits!r}")
    return arrays, as_steps(steps, evals), limits


def per_run_scores(
    curves: Mapping[str, npt.ArrayLike],
    steps: npt.ArrayLike,
    thresholds: Sequence[float] | npt.ArrayLike,
    baseline: str = "scratch",
    last_k: int = 1,
    source_steps: Mapping[str, float] | None = None,
    accounting: Accounting = "target",
) -> dict[str, dict[str, FloatArray]]:
    """Every metric of :data:`METRICS` for every arm as a ``(runs, tasks)`` matrix.

    Jumpstart and transfer ratio are taken against the baseline's per-task mean (step-0
    return and AUC respectively), so the baseline's own values centre on 0.

    Args:
        curves: arm name to ``(runs, tasks, evals)`` curves (already validated).
        steps: ``(evals,)`` target-environment steps.
        thresholds: one threshold per task.
        baseline: the reference arm.
        last_k: evaluations averaged for the final return.
        source_steps: pretraining steps per arm (missing arms: 0), used for time to
            threshold under ``"total"`` accounting.
        accounting: ``"target"`` or ``"total"`` steps (see :mod:`rltransfer.compare.accounting`).

    Returns:
        ``{arm: {metric: (runs, tasks)}}``.
    """
    base = as_curves(curves[baseline])
    base_auc = area_under_curve(base, steps).mean(axis=0)
    offsets = source_steps or {}
    result: dict[str, dict[str, FloatArray]] = {}
    for arm, value in curves.items():
        array = as_curves(value)
        auc = area_under_curve(array, steps)
        ttt = time_to_threshold(array, steps, thresholds)
        result[arm] = {
            "jumpstart": jumpstart(array, base),
            "auc": auc,
            "final_return": final_return(array, last_k),
            "time_to_threshold": shift_time_to_threshold(ttt, offsets.get(arm, 0), accounting),
            "transfer_ratio": transfer_ratio(auc, base_auc),
        }
    return result
