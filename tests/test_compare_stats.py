"""Aggregate estimators and stratified bootstrap intervals, on matrices with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from rltransfer.compare import (
    iqm,
    mean,
    mean_curve_ci,
    mean_difference,
    mean_relative_difference,
    percentile_interval,
    probability_of_improvement,
    probability_of_improvement_ci,
    stratified_bootstrap_ci,
    stratified_independent_bootstrap_ci,
)


@pytest.fixture
def scores() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.normal(size=(10, 4)) * np.array([1.0, 2.0, 3.0, 4.0]) + np.arange(4)


@pytest.mark.parametrize("shape", [(100, 1), (10, 10), (4, 25)])
def test_iqm_of_0_to_99_is_mean_of_middle_half(shape: tuple[int, int]) -> None:
    assert iqm(np.arange(100.0).reshape(shape)) == pytest.approx(np.mean(np.arange(25, 75)))


def test_iqm_ignores_outliers_and_mean_does_not() -> None:
    values = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1e6]])
    assert iqm(values) == 1.0
    assert mean(values) > 1e5


def test_mean_is_mean_of_task_means() -> None:
    values = np.array([[0.0, 10.0], [2.0, 30.0]])
    assert mean(values) == pytest.approx((1.0 + 20.0) / 2)
    assert mean_difference(values + 3.0, values) == pytest.approx(3.0)
    # Per task: (1 + 3 - 1) / 1 and (20 + 10 - 20) / 20, then their mean.
    assert mean_relative_difference(values + np.array([3.0, 10.0]), values) == pytest.approx((3.0 + 0.5) / 2)
    assert mean_relative_difference(-values - 1.0, -values) == pytest.approx(-(1.0 + 1.0 / 20) / 2)  # |negative| mean


def test_scores_must_be_two_dimensional() -> None:
    with pytest.raises(ValueError, match="runs, tasks"):
        iqm(np.zeros(5))
    with pytest.raises(ValueError, match="same number of tasks"):
        probability_of_improvement(np.zeros((3, 2)), np.zeros((3, 3)))


def test_bootstrap_is_stratified_over_tasks() -> None:
    # Each task is constant, so resampling runs within tasks never changes the mean; a
    # bootstrap pooling runs across tasks would.
    values = np.tile([0.0, 1.0], (6, 1))
    assert stratified_bootstrap_ci(values, mean) == (0.5, 0.5)
    assert stratified_bootstrap_ci(values, iqm) == (0.5, 0.5)


def test_bootstrap_is_deterministic_and_brackets_the_estimate(scores: np.ndarray) -> None:
    low, high = stratified_bootstrap_ci(scores, iqm, reps=1000, seed=3)
    assert low < iqm(scores) < high
    assert stratified_bootstrap_ci(scores, iqm, reps=1000, seed=3) == (low, high)
    assert stratified_bootstrap_ci(scores, iqm, reps=1000, seed=4) != (low, high)
    narrow = stratified_bootstrap_ci(scores, iqm, reps=1000, seed=3, confidence=0.5)
    assert low < narrow[0] < narrow[1] < high


def test_vectorised_and_generic_statistics_agree(scores: np.ndarray) -> None:
    for statistic in (iqm, mean):
        fast = stratified_bootstrap_ci(scores, statistic, reps=500, seed=7)
        slow = stratified_bootstrap_ci(scores, lambda s, f=statistic: f(s), reps=500, seed=7)
        np.testing.assert_allclose(fast, slow, rtol=1e-12)
    x, y = scores[:6], scores[3:] + 0.5
    for pair in (probability_of_improvement, mean_difference, mean_relative_difference):
        fast = stratified_independent_bootstrap_ci(x, y, pair, reps=300, seed=2)
        slow = stratified_independent_bootstrap_ci(x, y, lambda a, b, f=pair: f(a, b), reps=300, seed=2)
        np.testing.assert_allclose(fast, slow, rtol=1e-12)


def test_bootstrap_rejects_bad_arguments(scores: np.ndarray) -> None:
    with pytest.raises(ValueError, match="confidence"):
        stratified_bootstrap_ci(scores, iqm, confidence=1.5)
    with pytest.raises(ValueError, match="reps"):
        stratified_bootstrap_ci(scores, iqm, reps=0)


def test_probability_of_improvement_known_values() -> None:
    low = np.arange(12.0).reshape(4, 3)
    high = low + 100.0
    assert probability_of_improvement(high, low) == 1.0
    assert probability_of_improvement(low, high) == 0.0
    assert probability_of_improvement(low, low) == 0.5
    assert probability_of_improvement(high[:2], low) == 1.0  # different run counts
    # Ties count one half: x = [1, 2] vs y = [2] -> (0 + 0.5) / 2 per pair set.
    assert probability_of_improvement([[1.0], [2.0]], [[2.0]]) == 0.25


def test_probability_of_improvement_is_mann_whitney_u(scores: np.ndarray) -> None:
    x, y = scores[:7], scores[2:] + 0.3
    expected = np.mean(
        [scipy.stats.mannwhitneyu(x[:, t], y[:, t], alternative="greater").statistic / (7 * 8) for t in range(4)]
    )
    assert probability_of_improvement(x, y) == pytest.approx(expected, rel=1e-12)


def test_probability_of_improvement_ci() -> None:
    low = np.arange(12.0).reshape(4, 3)
    assert probability_of_improvement_ci(low + 100.0, low) == (1.0, 1.0)
    lo, hi = probability_of_improvement_ci(low, low, reps=500)
    assert lo < 0.5 < hi


def test_percentile_interval_handles_infinities_and_nan() -> None:
    finite = np.arange(101.0)
    assert percentile_interval(finite, 0.9) == pytest.approx((5.0, 95.0))
    assert percentile_interval(np.r_[finite, [np.inf] * 20], 0.9) == (pytest.approx(6.0), np.inf)
    assert all(np.isnan(percentile_interval([1.0, np.nan])))


def test_mean_curve_ci() -> None:
    curves = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]])
    centre, low, high = mean_curve_ci(curves, reps=200)
    np.testing.assert_allclose(centre, [1.0, 2.0, 3.0])
    assert np.all(low <= centre) and np.all(centre <= high)
    np.testing.assert_allclose(mean_curve_ci(np.ones((3, 4)))[1], np.ones(4))


def test_agrees_with_rliable(scores: np.ndarray) -> None:
    rly = pytest.importorskip("rliable.library")
    rly_metrics = pytest.importorskip("rliable.metrics")
    state = np.random.get_state()  # rliable draws from NumPy's global generator
    np.random.seed(0)
    try:
        assert iqm(scores) == rly_metrics.aggregate_iqm(scores)
        assert mean(scores) == pytest.approx(rly_metrics.aggregate_mean(scores), rel=1e-12)
        tolerance = 0.02 * np.ptp(scores)
        for ours, theirs in ((iqm, rly_metrics.aggregate_iqm), (mean, rly_metrics.aggregate_mean)):
            _, intervals = rly.get_interval_estimates({"arm": scores}, lambda s, f=theirs: np.array([f(s)]), reps=5000)
            expected = intervals["arm"].ravel()
            np.testing.assert_allclose(stratified_bootstrap_ci(scores, ours, reps=5000), expected, atol=tolerance)

        x, y = scores[:8, :3], scores[3:, :3] + 0.5
        assert probability_of_improvement(x, y) == pytest.approx(
            rly_metrics.probability_of_improvement(x, y), rel=1e-12
        )
        _, intervals = rly.get_interval_estimates(
            {"pair": [x, y]}, lambda a, b: np.array([rly_metrics.probability_of_improvement(a, b)]), reps=500
        )
        np.testing.assert_allclose(probability_of_improvement_ci(x, y, reps=2000), intervals["pair"].ravel(), atol=0.05)
    finally:
        np.random.set_state(state)


def test_one_run_has_no_interval() -> None:
    one, three = np.array([[1.0, 2.0]]), np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    for statistic in (mean, iqm, lambda m: float(m.max())):
        assert np.isnan(stratified_bootstrap_ci(one, statistic)).all()
    for x, y in ((one, three), (three, one), (one, one)):
        assert np.isnan(stratified_independent_bootstrap_ci(x, y, mean_difference)).all()
        assert np.isnan(probability_of_improvement_ci(x, y)).all()
    low, high = stratified_independent_bootstrap_ci(three[:2], three, mean_difference)
    assert low < high
