"""Transfer metrics on synthetic curves with known answers, and the arm comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rltransfer.compare import (
    ALL_TASKS,
    TIE,
    area_under_curve,
    compare_arms,
    final_return,
    forgetting,
    jumpstart,
    per_run_scores,
    reached_fraction,
    shift_time_to_threshold,
    step_axis,
    time_to_threshold,
    transfer_ratio,
)

STEPS = np.arange(11) * 1000.0
TASKS = ["short", "long"]
THRESHOLDS = [80.0, 80.0]


def ramp_curves(runs: int, top: float, seed: int, noise: float = 3.0) -> np.ndarray:
    """Curves rising linearly from 0 to ``top`` on both tasks, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    mean = np.linspace(0.0, top, STEPS.size)
    return np.broadcast_to(mean, (runs, len(TASKS), STEPS.size)) + rng.normal(0, noise, (runs, 2, STEPS.size))


def test_area_under_constant_and_linear_curves() -> None:
    constant = np.full((3, 2, STEPS.size), 7.0)
    np.testing.assert_allclose(area_under_curve(constant, STEPS), 7.0)
    ramp = np.broadcast_to(np.linspace(0.0, 1.0, STEPS.size), (1, 1, STEPS.size))
    assert area_under_curve(ramp, STEPS)[0, 0] == pytest.approx(0.5)
    # Uneven steps: 0 for the first 1000 steps, then 10 for the last 3000 -> (5*1000 + 10*3000) / 4000.
    uneven = np.array([[[0.0, 10.0, 10.0]]])
    assert area_under_curve(uneven, [0, 1000, 4000])[0, 0] == pytest.approx(35000 / 4000)
    assert area_under_curve(constant, STEPS + 5e5)[0, 0] == pytest.approx(7.0)  # shift-invariant


def test_shape_and_step_checks() -> None:
    with pytest.raises(ValueError, match="runs, tasks, evals"):
        area_under_curve(np.zeros((3, 11)), STEPS)
    with pytest.raises(ValueError, match="strictly increasing"):
        area_under_curve(np.zeros((1, 1, 3)), [0, 2, 1])
    with pytest.raises(ValueError, match="evaluations"):
        area_under_curve(np.zeros((1, 1, 4)), [0, 1, 2])
    with pytest.raises(ValueError, match="last_k"):
        final_return(np.zeros((1, 1, 3)), last_k=4)


def test_jumpstart_uses_mean_scratch_start() -> None:
    scratch = np.zeros((4, 2, 3))
    scratch[:, :, 0] = [[10.0, -5.0], [20.0, -5.0], [30.0, -5.0], [40.0, -5.0]]
    transfer = np.zeros((2, 2, 3))
    transfer[:, :, 0] = [[100.0, 0.0], [25.0, -10.0]]
    np.testing.assert_allclose(jumpstart(transfer, scratch), [[75.0, 5.0], [0.0, -5.0]])


def test_final_return_averages_last_k() -> None:
    curves = np.arange(10.0).reshape(1, 1, 10)
    assert final_return(curves)[0, 0] == 9.0
    assert final_return(curves, last_k=4)[0, 0] == pytest.approx(7.5)


def test_time_to_threshold_on_step_curves() -> None:
    curves = np.zeros((3, 2, 5))
    curves[0, 0, 2:] = 1.0  # reaches at index 2
    curves[1, 0, :] = 1.0  # solved before training
    curves[:, 1, 4] = [0.5, 1.0, 2.0]  # only runs 1 and 2 reach at the last evaluation
    steps = [0, 10, 20, 30, 40]
    times = time_to_threshold(curves, steps, thresholds=[1.0, 1.0])
    np.testing.assert_array_equal(times, [[20.0, np.inf], [0.0, 40.0], [np.inf, 40.0]])
    np.testing.assert_allclose(reached_fraction(times), [2 / 3, 2 / 3])
    assert time_to_threshold(curves, steps, 1.0).shape == (3, 2)  # scalar threshold


def test_transfer_ratio_and_forgetting() -> None:
    np.testing.assert_allclose(transfer_ratio([150.0, 50.0], 100.0), [0.5, -0.5])
    # Negative returns: -600 is better than -800, so the ratio is positive.
    assert transfer_ratio(-600.0, -800.0) == pytest.approx(0.25)
    assert np.isinf(transfer_ratio(1.0, 0.0))
    np.testing.assert_allclose(forgetting([500.0, 500.0], [450.0, 510.0]), [50.0, -10.0])


def test_source_step_accounting() -> None:
    np.testing.assert_array_equal(step_axis(STEPS, 5000, "target"), STEPS)
    np.testing.assert_array_equal(step_axis(STEPS, 5000, "total"), STEPS + 5000)
    np.testing.assert_array_equal(shift_time_to_threshold([0.0, np.inf], 5000, "total"), [5000.0, np.inf])
    with pytest.raises(ValueError, match="accounting"):
        step_axis(STEPS, 1, "both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        step_axis(STEPS, -1, "total")


def test_per_run_scores_baseline_centres_on_zero() -> None:
    curves = {"scratch": ramp_curves(5, 100.0, 0), "copy": ramp_curves(5, 100.0, 1) + 20.0}
    scores = per_run_scores(curves, STEPS, THRESHOLDS, source_steps={"copy": 3000}, accounting="total")
    assert scores["scratch"]["jumpstart"].mean(axis=0) == pytest.approx([0.0, 0.0])
    assert scores["scratch"]["transfer_ratio"].mean(axis=0) == pytest.approx([0.0, 0.0], abs=1e-12)
    assert np.all(scores["copy"]["time_to_threshold"] >= 3000)


@pytest.fixture(scope="module")
def comparison() -> list:
    curves = {
        "scratch": ramp_curves(10, 100.0, 0),
        "same": ramp_curves(10, 100.0, 0),
        "worse": ramp_curves(10, 50.0, 1),
        "better": ramp_curves(6, 100.0, 2) + 30.0,  # fewer runs than scratch
    }
    return compare_arms(curves, STEPS, TASKS, THRESHOLDS, reps=500, seed=0)


def find(results: list, arm: str, task: str):
    (match,) = [r for r in results if r.arm == arm and r.task == task]
    return match


def test_compare_arms_layout(comparison: list) -> None:
    assert len(comparison) == 4 * (len(TASKS) + 1)
    assert [r.task for r in comparison[:3]] == [*TASKS, ALL_TASKS]
    assert find(comparison, "better", "short").n_runs == 6
    scratch = find(comparison, "scratch", "short")
    assert scratch.prob_improvement is None and scratch.auc_difference is None
    assert not scratch.negative_transfer and not scratch.positive_transfer
    json.dumps([r.to_dict() for r in comparison], allow_nan=False)


@pytest.mark.parametrize("task", [*TASKS, ALL_TASKS])
def test_compare_arms_flags(comparison: list, task: str) -> None:
    worse, same, better = (find(comparison, arm, task) for arm in ("worse", "same", "better"))
    assert worse.negative_transfer and not worse.positive_transfer
    assert worse.prob_improvement.value == 0.0
    assert not same.negative_transfer and not same.positive_transfer
    assert same.auc_difference.low < 0.0 < same.auc_difference.high
    assert same.prob_improvement.value == 0.5
    assert better.positive_transfer and not better.negative_transfer
    assert better.winner == "better" and better.is_winner and worse.winner == "better"
    assert better.metrics["jumpstart"].mean.value == pytest.approx(30.0, abs=3.0)
    assert better.metrics["transfer_ratio"].mean.value > 0.0
    auc = worse.metrics["auc"]
    assert auc.mean.value == pytest.approx(25.0, abs=1.0)
    assert auc.mean.low < auc.mean.value < auc.mean.high


def test_time_to_threshold_summary(comparison: list) -> None:
    worse, scratch = find(comparison, "worse", "short"), find(comparison, "scratch", "short")
    assert worse.reached_fraction == 0.0 and worse.time_to_threshold_median == np.inf
    assert worse.metrics["time_to_threshold"].mean.value == np.inf
    assert worse.to_dict()["time_to_threshold_median"] == "inf"
    assert scratch.reached_fraction == 1.0
    assert 7000.0 <= scratch.time_to_threshold_median <= 9000.0


def test_tie_when_intervals_overlap() -> None:
    curves = {"scratch": ramp_curves(5, 100.0, 0), "twin": ramp_curves(5, 100.0, 1)}
    results = compare_arms(curves, STEPS, TASKS, THRESHOLDS, reps=200)
    assert {r.winner for r in results} == {TIE}


def test_one_arm_alone_wins_nothing() -> None:
    """A grid in progress with only scratch finished: no arm to beat, so no winner and no claim of one."""
    from rltransfer.report.tables import WINNER, row, winner_sentence

    results = compare_arms({"scratch": ramp_curves(3, 100.0, 0)}, STEPS, TASKS, THRESHOLDS, reps=200)
    assert {r.winner for r in results} == {""} and not any(r.is_winner for r in results)
    assert WINNER not in row(results[0]).flags
    assert winner_sentence(results[:1]).startswith("No winner: only scratch has finished runs on this task")


def test_single_runs_have_no_interval_flag_or_winner() -> None:
    """One seed per arm: a difference of two runs is not evidence, however large (its resamples
    are itself, a zero-width interval that would flag it NEGATIVE and crown the other arm)."""
    from rltransfer.report.tables import row, winner_sentence

    curves = {"scratch": ramp_curves(1, 100.0, 0), "worse": ramp_curves(1, 50.0, 1)}
    results = compare_arms(curves, STEPS, TASKS, THRESHOLDS, reps=200)
    worse = find(results, "worse", "short")
    assert worse.auc_difference.value < -20 and np.isnan([worse.auc_difference.low, worse.auc_difference.high]).all()
    assert not any(r.negative_transfer or r.positive_transfer or r.ends_lower for r in results)
    assert {r.winner for r in results} == {TIE}
    assert winner_sentence([r for r in results if r.task == "short"]).startswith("No winner: an arm with a single run")
    assert "[—, —]" in " ".join(row(worse).cells)
    json.dumps([r.to_dict() for r in results], allow_nan=False)
    # A second run brings the interval, and the flag, back.
    curves = {"scratch": ramp_curves(2, 100.0, 0), "worse": ramp_curves(2, 50.0, 1)}
    assert find(compare_arms(curves, STEPS, TASKS, THRESHOLDS, reps=200), "worse", "short").negative_transfer


def test_compare_arms_rejects_bad_inputs() -> None:
    scratch = ramp_curves(3, 100.0, 0)
    broken = scratch.copy()
    broken[0, 1, 3] = np.nan
    with pytest.raises(ValueError, match="'broken'"):
        compare_arms({"scratch": scratch, "broken": broken}, STEPS, TASKS, THRESHOLDS, reps=10)
    with pytest.raises(ValueError, match="baseline"):
        compare_arms({"copy": scratch}, STEPS, TASKS, THRESHOLDS, reps=10)
    with pytest.raises(ValueError, match="disagree"):
        compare_arms({"scratch": scratch, "copy": scratch[:, :1]}, STEPS, TASKS, THRESHOLDS, reps=10)
    with pytest.raises(ValueError, match="task names"):
        compare_arms({"scratch": scratch}, STEPS, ["one"], THRESHOLDS, reps=10)


@pytest.mark.parametrize("task", [*TASKS, ALL_TASKS])
def test_asymptotic_gain_is_the_final_return_difference_to_scratch(comparison: list, task: str) -> None:
    scratch, better, same = (find(comparison, arm, task) for arm in ("scratch", "better", "same"))
    assert scratch.asymptotic_gain is None and scratch.to_dict()["asymptotic_gain"] is None
    final = {r.arm: r.metrics["final_return"].mean.value for r in (scratch, better, same)}
    gain = better.asymptotic_gain
    assert gain is not None and gain.value == pytest.approx(final["better"] - final["scratch"])
    assert gain.value == pytest.approx(30.0, abs=5.0) and 0.0 < gain.low <= gain.value <= gain.high
    assert same.asymptotic_gain is not None and same.asymptotic_gain.low < 0.0 < same.asymptotic_gain.high
    assert better.to_dict()["asymptotic_gain"]["value"] == pytest.approx(gain.value)


def test_intervals_relative_to_the_baseline_carry_its_spread() -> None:
    # Every run of "steady" starts at 50; the baseline's starts spread widely. Jumpstart is
    # "steady's start minus the baseline's mean start", so the baseline's spread is in its interval.
    rng = np.random.default_rng(0)
    scratch = ramp_curves(8, 100.0, 0)
    scratch[:, :, 0] = rng.normal(0.0, 40.0, (8, 2))
    steady = ramp_curves(8, 100.0, 1) + 10.0
    steady[:, :, 0] = 50.0
    results = compare_arms({"scratch": scratch, "steady": steady}, STEPS, TASKS, THRESHOLDS, reps=1000)
    for task in (*TASKS, ALL_TASKS):
        arm, base = find(results, "steady", task), find(results, "scratch", task)
        start = arm.metrics["jumpstart"].mean
        spread = base.metrics["jumpstart"].mean  # the baseline's start about its own mean
        assert start.value == pytest.approx(50.0 - base_start(scratch, task))
        assert start.high - start.low == pytest.approx(spread.high - spread.low, rel=0.3)
        assert arm.metrics["jumpstart"].iqm.high - arm.metrics["jumpstart"].iqm.low == 0.0  # per run: exact
        ratio = arm.metrics["transfer_ratio"].mean
        auc = area_under_curve(steady, STEPS).mean(axis=0), area_under_curve(scratch, STEPS).mean(axis=0)
        columns = slice(None) if task == ALL_TASKS else slice(TASKS.index(task), TASKS.index(task) + 1)
        assert ratio.value == pytest.approx(np.mean(((auc[0] - auc[1]) / np.abs(auc[1]))[columns]))
        assert ratio.low < ratio.value < ratio.high
        assert arm.auc_difference is not None and ratio.high - ratio.low > 0.0


def base_start(curves: np.ndarray, task: str) -> float:
    starts = curves[:, :, 0].mean(axis=0)
    return float(starts.mean() if task == ALL_TASKS else starts[TASKS.index(task)])
