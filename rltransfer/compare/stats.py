"""Aggregate estimators and stratified bootstrap confidence intervals.

Follows Agarwal et al. (2021), "Deep RL at the Edge of the Statistical Precipice", and
reproduces the definitions of the ``rliable`` package on the same arrays. The data
contract is a score matrix ``(runs, tasks)``; two-sample functions take two matrices
with the same number of tasks and possibly different numbers of runs.

Bootstrap resampling is *stratified*: runs are resampled with replacement independently
within each task (the task set is fixed), and intervals are percentile intervals. Every
function draws from a ``numpy.random.Generator`` built from an explicit ``seed``, so
results are deterministic. A sample of one run has no interval (NaN bounds): its resamples
are all that run, a zero-width interval no spread was measured for (``rliable`` returns it
as such), which would make any difference between two single runs look certain.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Statistic = Callable[[FloatArray], float]
PairStatistic = Callable[[FloatArray, FloatArray], float]

# Keep one bootstrap batch below this many elements (bounded memory for large inputs).
_MAX_BATCH_ELEMENTS = 4_000_000
#: Runs per sample a bootstrap interval needs; with fewer, intervals are ``NO_INTERVAL``.
MIN_RUNS = 2
NO_INTERVAL = (float("nan"), float("nan"))


def as_scores(scores: npt.ArrayLike, name: str = "scores") -> FloatArray:
    """Converts ``scores`` to a float ``(runs, tasks)`` matrix, checking its shape.

    Raises:
        ValueError: if the array is not 2-D or has no runs or no tasks.
    """
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (runs, tasks) array, got shape {array.shape}")
    return array


def iqm(scores: npt.ArrayLike) -> float:
    """Interquartile mean over all runs and tasks (25 % trimmed mean, as ``rliable``).

    Args:
        scores: ``(runs, tasks)`` scores.

    Returns:
        Mean of the middle 50 % of all ``runs * tasks`` values.
    """
    from scipy.stats import trim_mean  # here, not at import: scipy.stats costs every worker ~0.5 s

    return float(trim_mean(as_scores(scores), proportiontocut=0.25, axis=None))


def mean(scores: npt.ArrayLike) -> float:
    """Mean over tasks of the per-task mean over runs (``rliable.metrics.aggregate_mean``).

    Args:
        scores: ``(runs, tasks)`` scores.
    """
    return float(np.mean(np.mean(as_scores(scores), axis=0)))


def mean_difference(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """``mean(x) - mean(y)`` for two score matrices with the same tasks."""
    return mean(x) - mean(y)


def mean_relative_difference(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Mean over tasks of ``(mean(x_t) - mean(y_t)) / |mean(y_t)|`` (the transfer ratio of two arms).

    A task whose ``y`` mean is 0 gives ``±inf`` (NaN for a zero numerator), without a warning.
    """
    a, b = (scores.mean(axis=0) for scores in _check_pair(x, y))
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.mean((a - b) / np.abs(b)))


def probability_of_improvement(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Average probability of improvement of ``X`` over ``Y`` (``rliable`` definition).

    For each task, ``P(X > Y) + 0.5 P(X = Y)`` over all pairs of runs, which is the
    Mann-Whitney U statistic of ``x`` divided by ``n_x * n_y``; then averaged over tasks.

    Args:
        x: ``(runs_x, tasks)`` scores of algorithm X.
        y: ``(runs_y, tasks)`` scores of algorithm Y.

    Returns:
        A probability in ``[0, 1]``; 0.5 when the two are indistinguishable.
    """
    xs, ys = _check_pair(x, y)
    return float(_batched_probability_of_improvement(xs[None], ys[None])[0])


def stratified_bootstrap_ci(
    scores: npt.ArrayLike,
    statistic: Statistic,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile confidence interval of ``statistic`` under a stratified bootstrap.

    Each replicate resamples, for every task independently, ``runs`` runs with
    replacement (``rliable.library.StratifiedBootstrap`` with ``task_bootstrap=False``).
    :func:`iqm` and :func:`mean` take a vectorised path; any other callable is applied
    to each replicate.

    Args:
        scores: ``(runs, tasks)`` scores.
        statistic: maps a ``(runs, tasks)`` matrix to a scalar.
        reps: number of bootstrap replicates.
        confidence: coverage of the two-sided interval.
        seed: seed of the ``numpy.random.Generator``.

    Returns:
        ``(lower, upper)``; infinite when the statistic is infinite in the tail
        replicates, NaN when any replicate is NaN or there is one run.
    """
    data = as_scores(scores)
    _check_bootstrap_args(reps, confidence)
    if data.shape[0] < MIN_RUNS:
        return NO_INTERVAL
    rng = np.random.default_rng(seed)
    batched = _BATCHED.get(statistic)
    values = np.empty(reps)
    for start, stop in _batches(reps, data.size):
        sample = _resample(rng, data, stop - start)
        if batched is not None:
            values[start:stop] = batched(sample)
        else:
            values[start:stop] = [statistic(s) for s in sample]
    return percentile_interval(values, confidence)


def stratified_independent_bootstrap_ci(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    statistic: PairStatistic,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of a two-sample statistic, resampling ``x`` and ``y`` independently.

    Within each task, the runs of ``x`` and the runs of ``y`` are resampled with
    replacement, independently of each other and of the other tasks
    (``rliable.library.StratifiedIndependentBootstrap``). :func:`probability_of_improvement`
    and :func:`mean_difference` take a vectorised path.

    Args:
        x: ``(runs_x, tasks)`` scores.
        y: ``(runs_y, tasks)`` scores.
        statistic: maps two score matrices to a scalar.
        reps: number of bootstrap replicates.
        confidence: coverage of the two-sided interval.
        seed: seed of the ``numpy.random.Generator``.

    Returns:
        ``(lower, upper)``; NaN when either sample has one run.
    """
    xs, ys = _check_pair(x, y)
    _check_bootstrap_args(reps, confidence)
    if min(xs.shape[0], ys.shape[0]) < MIN_RUNS:
        return NO_INTERVAL
    rng = np.random.default_rng(seed)
    batched = _BATCHED_PAIR.get(statistic)
    values = np.empty(reps)
    size = max(xs.size, ys.size, xs.shape[0] * ys.shape[0] * xs.shape[1])
    for start, stop in _batches(reps, size):
        sample_x = _resample(rng, xs, stop - start)
        sample_y = _resample(rng, ys, stop - start)
        if batched is not None:
            values[start:stop] = batched(sample_x, sample_y)
        else:
            values[start:stop] = [statistic(a, b) for a, b in zip(sample_x, sample_y, strict=True)]
    return percentile_interval(values, confidence)


def probability_of_improvement_ci(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Stratified independent bootstrap interval of :func:`probability_of_improvement`."""
    return stratified_independent_bootstrap_ci(x, y, probability_of_improvement, reps, confidence, seed)


def mean_curve_ci(
    curves: npt.ArrayLike, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Mean learning curve over runs with a pointwise bootstrap band.

    Args:
        curves: ``(runs, evals)`` returns of one arm on one task.
        reps: number of bootstrap replicates (runs resampled with replacement).
        confidence: coverage of the pointwise interval.
        seed: seed of the ``numpy.random.Generator``.

    Returns:
        ``(mean, lower, upper)``, each of shape ``(evals,)``.
    """
    data = np.asarray(curves, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] == 0:
        raise ValueError(f"curves must be a non-empty (runs, evals) array, got shape {data.shape}")
    _check_bootstrap_args(reps, confidence)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.shape[0], size=(reps, data.shape[0]))].mean(axis=1)
    alpha = 100.0 * (1.0 - confidence) / 2.0
    lower, upper = np.percentile(means, [alpha, 100.0 - alpha], axis=0)
    return data.mean(axis=0), lower, upper


def percentile_interval(values: npt.ArrayLike, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided percentile interval of bootstrap replicates (linear interpolation).

    Matches ``numpy.percentile`` for finite replicates; a bound whose neighbouring order
    statistics include an infinity is that infinity; any NaN gives ``(nan, nan)``.
    """
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    alpha = (1.0 - confidence) / 2.0
    if v.size == 0 or np.isnan(v).any():
        return float("nan"), float("nan")
    if np.isfinite(v).all():
        lower, upper = np.percentile(v, [100.0 * alpha, 100.0 * (1.0 - alpha)])
        return float(lower), float(upper)
    return _order_statistic(v, alpha), _order_statistic(v, 1.0 - alpha)


def _order_statistic(v: FloatArray, q: float) -> float:
    position = q * (v.size - 1)
    low, high = v[int(np.floor(position))], v[int(np.ceil(position))]
    if low == high:
        return float(low)
    if not np.isfinite(low):
        return float(low)
    if not np.isfinite(high):
        return float(high)
    return float(low + (high - low) * (position - np.floor(position)))


def _check_pair(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    xs, ys = as_scores(x, "x"), as_scores(y, "y")
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(f"x and y must have the same number of tasks, got {xs.shape[1]} and {ys.shape[1]}")
    return xs, ys


def _check_bootstrap_args(reps: int, confidence: float) -> None:
    if reps < 1:
        raise ValueError(f"reps must be positive, got {reps}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _batches(reps: int, elements_per_rep: int) -> list[tuple[int, int]]:
    size = max(1, _MAX_BATCH_ELEMENTS // max(1, elements_per_rep))
    return [(start, min(reps, start + size)) for start in range(0, reps, size)]


def _resample(rng: np.random.Generator, data: FloatArray, reps: int) -> FloatArray:
    """``reps`` stratified resamples of ``data``: shape ``(reps, runs, tasks)``."""
    runs, tasks = data.shape
    indices = rng.integers(0, runs, size=(reps, runs, tasks))
    return data[indices, np.arange(tasks)]


def _batched_iqm(sample: FloatArray) -> FloatArray:
    from scipy.stats import trim_mean

    flat = sample.reshape(sample.shape[0], -1)
    return np.asarray(trim_mean(flat, proportiontocut=0.25, axis=1), dtype=np.float64)


def _batched_mean(sample: FloatArray) -> FloatArray:
    return sample.mean(axis=1).mean(axis=1)


def _batched_mean_difference(x: FloatArray, y: FloatArray) -> FloatArray:
    return _batched_mean(x) - _batched_mean(y)


def _batched_mean_relative_difference(x: FloatArray, y: FloatArray) -> FloatArray:
    a, b = x.mean(axis=1), y.mean(axis=1)  # (reps, tasks)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(((a - b) / np.abs(b)).mean(axis=1), dtype=np.float64)


def _batched_probability_of_improvement(x: FloatArray, y: FloatArray) -> FloatArray:
    """``(reps, runs_x, tasks)`` and ``(reps, runs_y, tasks)`` to ``(reps,)``."""
    a, b = x[:, :, None, :], y[:, None, :, :]
    greater = np.count_nonzero(a > b, axis=(1, 2))
    equal = np.count_nonzero(a == b, axis=(1, 2))
    per_task = (greater + 0.5 * equal) / (x.shape[1] * y.shape[1])
    return np.asarray(per_task.mean(axis=1), dtype=np.float64)


_BATCHED: dict[Callable[..., float], Callable[[FloatArray], FloatArray]] = {
    iqm: _batched_iqm,
    mean: _batched_mean,
}
_BATCHED_PAIR: dict[Callable[..., float], Callable[[FloatArray, FloatArray], FloatArray]] = {
    probability_of_improvement: _batched_probability_of_improvement,
    mean_difference: _batched_mean_difference,
    mean_relative_difference: _batched_mean_relative_difference,
}
