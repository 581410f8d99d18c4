"""Per-run, per-task transfer metrics from learning curves (Taylor & Stone, 2009).

Data contract: ``curves`` are ``(runs, tasks, evals)`` evaluation returns and ``steps`` is
the shared ``(evals,)`` vector of target-environment steps at which they were taken,
strictly increasing, with ``steps[0] == 0`` the evaluation before any training. Every
metric returns a ``(runs, tasks)`` score matrix, the input of :mod:`rltransfer.compare.stats`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def as_curves(curves: npt.ArrayLike, name: str = "curves") -> FloatArray:
    """Converts ``curves`` to a float ``(runs, tasks, evals)`` array, checking its shape.

    Raises:
        ValueError: if the array is not 3-D or any dimension is empty.
    """
    array = np.asarray(curves, dtype=np.float64)
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(f"{name} must be a non-empty (runs, tasks, evals) array, got shape {array.shape}")
    return array


def as_steps(steps: npt.ArrayLike, evals: int | None = None) -> FloatArray:
    """Converts ``steps`` to a float ``(evals,)`` vector, checking it is strictly increasing.

    Raises:
        ValueError: if ``steps`` is not 1-D, not strictly increasing, or does not have
            ``evals`` entries.
    """
    array = np.asarray(steps, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"steps must be a non-empty 1-D array, got shape {array.shape}")
    if evals is not None and array.size != evals:
        raise ValueError(f"steps has {array.size} entries but the curves have {evals} evaluations")
    if not np.isfinite(array).all() or np.any(np.diff(array) <= 0):
        raise ValueError("steps must be finite and strictly increasing")
    return array


def jumpstart(transfer_curves: npt.ArrayLike, scratch_curves: npt.ArrayLike) -> FloatArray:
    """Initial-performance gain: return at step 0 minus the mean scratch return at step 0.

    Args:
        transfer_curves: ``(runs, tasks, evals)`` curves of the transfer arm.
        scratch_curves: ``(runs_scratch, tasks, evals)`` curves of the scratch arm; its
            runs may differ in number.

    Returns:
        ``(runs, tasks)``: ``transfer[r, t, 0] - mean_r' scratch[r', t, 0]``.
    """
    transfer = as_curves(transfer_curves, "transfer_curves")
    scratch = as_curves(scratch_curves, "scratch_curves")
    if transfer.shape[1] != scratch.shape[1]:
        raise ValueError(f"task counts differ: {transfer.shape[1]} vs {scratch.shape[1]}")
    return transfer[:, :, 0] - scratch[:, :, 0].mean(axis=0)


def area_under_curve(curves: npt.ArrayLike, steps: npt.ArrayLike) -> FloatArray:
    """Total reward: trapezoidal area under each curve, normalised by the step span.

    The area is divided by ``steps[-1] - steps[0]``, so the result is the *mean return
    over training*, in return units (a constant curve at ``c`` has AUC ``c``). It is
    therefore invariant to shifting the step axis (see :mod:`rltransfer.compare.accounting`).

    Args:
        curves: ``(runs, tasks, evals)`` with at least two evaluations.
        steps: ``(evals,)`` step of each evaluation.

    Returns:
        ``(runs, tasks)`` normalised areas.
    """
    data = as_curves(curves)
    x = as_steps(steps, data.shape[2])
    if x.size < 2:
        raise ValueError("area_under_curve needs at least two evaluations")
    from scipy.integrate import trapezoid  # here, not at import: scipy.integrate costs every worker ~0.4 s

    area = trapezoid(data, x, axis=-1)
    return np.asarray(area / (x[-1] - x[0]), dtype=np.float64)


def final_return(curves: npt.ArrayLike, last_k: int = 1) -> FloatArray:
    """Asymptotic performance: mean of the last ``last_k`` evaluations of each run.

    Args:
        curves: ``(runs, tasks, evals)``.
        last_k: number of final evaluations averaged, ``1 <= last_k <= evals``.

    Returns:
        ``(runs, tasks)``.
    """
    data = as_curves(curves)
    if not 1 <= last_k <= data.shape[2]:
        raise ValueError(f"last_k must lie in [1, {data.shape[2]}], got {last_k}")
    return np.asarray(data[:, :, -last_k:].mean(axis=2), dtype=np.float64)


def time_to_threshold(curves: npt.ArrayLike, steps: npt.ArrayLike, thresholds: npt.ArrayLike) -> FloatArray:
    """Steps until the evaluation return first reaches the task's threshold.

    Args:
        curves: ``(runs, tasks, evals)``.
        steps: ``(evals,)`` step of each evaluation (target-only steps; see
            :func:`rltransfer.compare.accounting.step_axis` for total steps).
        thresholds: one threshold per task, or a scalar for all tasks.

    Returns:
        ``(runs, tasks)``: the first ``steps[i]`` with ``curves[r, t, i] >= thresholds[t]``
        (0 when solved before training), and ``numpy.inf`` when a run never reaches it.
        Use :func:`reached_fraction` for the share of runs that did.
    """
    data = as_curves(curves)
    x = as_steps(steps, data.shape[2])
    limits = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (data.shape[1],))
    reached = data >= limits[None, :, None]
    first = np.argmax(reached, axis=2)
    return np.where(reached.any(axis=2), x[first], np.inf)


def reached_fraction(times: npt.ArrayLike) -> FloatArray:
    """Fraction of runs that reached the threshold, per task.

    Args:
        times: ``(runs, tasks)`` output of :func:`time_to_threshold`.

    Returns:
        ``(tasks,)`` fractions in ``[0, 1]``.
    """
    data = np.asarray(times, dtype=np.float64)
    return np.asarray(np.isfinite(data).mean(axis=0), dtype=np.float64)


def transfer_ratio(auc_transfer: npt.ArrayLike, auc_scratch: npt.ArrayLike) -> FloatArray:
    """Relative total-reward gain: ``(AUC_transfer - AUC_scratch) / |AUC_scratch|``.

    Positive means transfer collected more reward over training than scratch; ``0.25``
    reads "25 % more", ``-0.5`` "half as much" (for positive returns). Dividing by the
    absolute value keeps the sign meaningful for negative-return tasks (Pendulum). The
    arguments broadcast; typically ``auc_transfer`` is ``(runs, tasks)`` and
    ``auc_scratch`` the ``(tasks,)`` mean scratch AUC. A zero ``auc_scratch`` gives
    ``±inf`` (or NaN for a zero numerator) without a warning.

    Returns:
        The ratio, with the broadcast shape of the inputs.
    """
    a = np.asarray(auc_transfer, dtype=np.float64)
    b = np.asarray(auc_scratch, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray((a - b) / np.abs(b), dtype=np.float64)


def forgetting(source_before: npt.ArrayLike, source_after: npt.ArrayLike) -> FloatArray:
    """Loss of source-task return caused by fine-tuning on the targets.

    Args:
        source_before: source-task evaluation return of the pretrained policy.
        source_after: source-task return of the same policy after transfer.

    Returns:
        ``source_before - source_after`` (broadcast): positive means forgetting, negative
        means the source task improved.
    """
    before = np.asarray(source_before, dtype=np.float64)
    after = np.asarray(source_after, dtype=np.float64)
    return np.asarray(before - after, dtype=np.float64)
