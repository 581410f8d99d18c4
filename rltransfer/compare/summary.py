"""Comparison of transfer arms against a baseline, per task and over all tasks.

:func:`compare_arms` turns learning curves into one :class:`TaskComparison` per
``(arm, task)`` plus one per arm for :data:`ALL_TASKS`: each metric of
:data:`~rltransfer.compare.scores.METRICS` as mean and IQM with stratified bootstrap
intervals, the probability that the arm improves on the baseline (on AUC), the AUC
difference to the baseline with its interval, and the transfer flags.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from rltransfer.compare.accounting import Accounting
from rltransfer.compare.metrics import reached_fraction
from rltransfer.compare.scores import METRICS, per_run_scores, validate_arms
from rltransfer.compare.stats import (
    iqm,
    mean,
    mean_difference,
    mean_relative_difference,
    probability_of_improvement,
    probability_of_improvement_ci,
    stratified_bootstrap_ci,
    stratified_independent_bootstrap_ci,
)

FloatArray = npt.NDArray[np.float64]

#: Task name of the aggregate over all tasks.
ALL_TASKS = "all tasks"
#: ``winner`` value when the best arm's AUC interval overlaps the runner-up's.
TIE = "tie"


def json_float(value: float) -> float | str | None:
    """A JSON-safe float: NaN becomes ``None``, infinities ``"inf"`` / ``"-inf"``."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap confidence interval ``[low, high]``."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float | str | None]:
        """JSON-safe dictionary (see :func:`json_float`)."""
        return {"value": json_float(self.value), "low": json_float(self.low), "high": json_float(self.high)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Estimate:
        """The estimate ``to_dict`` wrote: ``null`` (one run: no interval; or not measured) is NaN again."""
        value, low, high = (math.nan if d.get(k) is None else float(d[k]) for k in ("value", "low", "high"))
        return cls(value, low, high)


@dataclass(frozen=True)
class MetricSummary:
    """Mean and interquartile mean of one metric over runs (and tasks, for the aggregate)."""

    mean: Estimate
    iqm: Estimate

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary."""
        return {"mean": self.mean.to_dict(), "iqm": self.iqm.to_dict()}


@dataclass(frozen=True)
class TaskComparison:
    """One arm on one task (or on :data:`ALL_TASKS`), compared with the baseline.

    Attributes:
        arm: arm name.
        task: task name, or :data:`ALL_TASKS`.
        baseline: the reference arm (usually ``"scratch"``).
        n_runs: runs of this arm.
        threshold: the task's threshold; ``None`` for the aggregate.
        metrics: metric name (``jumpstart``, ``auc``, ``final_return``,
            ``time_to_threshold``, ``transfer_ratio``) to its mean and IQM with intervals
            over the arm's runs; jumpstart and transfer ratio are relative to the baseline's
            mean, so for arms other than the baseline their means' intervals resample the
            baseline's runs too (independently, as ``auc_difference``).
            Time to threshold is ``inf`` for runs that never reached it, so its mean is
            ``inf`` as soon as one run failed while its IQM stays finite while fewer than
            a quarter did.
        time_to_threshold_median: median over runs (``inf`` if half never reached it).
        reached_fraction: share of runs that reached the threshold.
        prob_improvement: ``P(arm > baseline)`` on AUC; ``None`` for the baseline itself.
        auc_difference: mean AUC of the arm minus that of the baseline, with an interval
            from resampling both arms' runs independently; ``None`` for the baseline.
        asymptotic_gain: mean final return of the arm minus that of the baseline, with the
            same kind of interval; ``None`` for the baseline.
        negative_transfer: the whole AUC-difference interval lies below 0.
        positive_transfer: the whole AUC-difference interval lies above 0.
        winner: arm with the highest mean AUC on this task, :data:`TIE` when its mean
            AUC interval overlaps that of the next best arm, ``""`` with one arm alone.
        confidence: coverage of every interval.
        last_k: evaluations averaged for the final return.
        source_steps: pretraining steps of this arm.
        accounting: ``"target"`` or ``"total"`` steps for time to threshold.
    """

    arm: str
    task: str
    baseline: str
    n_runs: int
    threshold: float | None
    metrics: dict[str, MetricSummary]
    time_to_threshold_median: float
    reached_fraction: float
    prob_improvement: Estimate | None
    auc_difference: Estimate | None
    negative_transfer: bool
    positive_transfer: bool
    winner: str = ""
    confidence: float = 0.95
    last_k: int = 1
    source_steps: float = 0.0
    accounting: Accounting = "target"
    asymptotic_gain: Estimate | None = None

    @property
    def is_winner(self) -> bool:
        """Whether this arm is the (untied) winner of its task."""
        return self.winner == self.arm

    @property
    def ends_lower(self) -> bool:
        """The whole asymptotic-gain interval lies below 0: the arm finishes below the baseline,
        whatever its AUC (a head start that stalls)."""
        return self.asymptotic_gain is not None and self.asymptotic_gain.high < 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (non-finite floats as in :func:`json_float`)."""
        return {
            "arm": self.arm,
            "task": self.task,
            "baseline": self.baseline,
            "n_runs": self.n_runs,
            "threshold": None if self.threshold is None else json_float(self.threshold),
            "metrics": {name: summary.to_dict() for name, summary in self.metrics.items()},
            "time_to_threshold_median": json_float(self.time_to_threshold_median),
            "reached_fraction": json_float(self.reached_fraction),
            "prob_improvement": None if self.prob_improvement is None else self.prob_improvement.to_dict(),
            "auc_difference": None if self.auc_difference is None else self.auc_difference.to_dict(),
            "asymptotic_gain": None if self.asymptotic_gain is None else self.asymptotic_gain.to_dict(),
            "negative_transfer": self.negative_transfer,
            "positive_transfer": self.positive_transfer,
            "ends_lower": self.ends_lower,
            "winner": self.winner,
            "is_winner": self.is_winner,
            "confidence": self.confidence,
            "last_k": self.last_k,
            "source_steps": json_float(self.source_steps),
            "accounting": self.accounting,
        }


def compare_arms(
    curves: Mapping[str, npt.ArrayLike],
    steps: npt.ArrayLike,
    task_names: Sequence[str],
    thresholds: Sequence[float] | npt.ArrayLike,
    baseline: str = "scratch",
    reps: int = 2000,
    seed: int = 0,
    *,
    confidence: float = 0.95,
    last_k: int = 1,
    source_steps: Mapping[str, float] | None = None,
    accounting: Accounting = "target",
) -> list[TaskComparison]:
    """Compares every arm with ``baseline`` on each task and over all tasks.

    Args:
        curves: arm name to ``(runs, tasks, evals)`` evaluation returns; arms may have
            different numbers of runs but must share tasks and evaluation steps.
        steps: ``(evals,)`` target-environment steps of the evaluations.
        task_names: one name per task.
        thresholds: one "solved" return per task, for time to threshold.
        baseline: the reference arm, usually ``"scratch"``.
        reps: bootstrap replicates per interval.
        seed: seed of every bootstrap (results are deterministic).
        confidence: coverage of every interval.
        last_k: evaluations averaged for the final return.
        source_steps: pretraining steps per arm (missing arms: 0).
        accounting: ``"target"`` or ``"total"`` steps for time to threshold.

    Returns:
        For each arm in ``curves`` order, its per-task comparisons followed by its
        :data:`ALL_TASKS` aggregate.

    Raises:
        ValueError: for a missing baseline, inconsistent shapes, or NaN/inf curves.
    """
    arrays, x, limits = validate_arms(curves, steps, task_names, thresholds, baseline)
    scores = per_run_scores(arrays, x, limits, baseline, last_k, source_steps, accounting)
    offsets = source_steps or {}
    columns: list[tuple[str, slice, float | None]] = [
        (name, slice(t, t + 1), float(limits[t])) for t, name in enumerate(task_names)
    ]
    columns.append((ALL_TASKS, slice(None), None))
    boot = _Bootstrap(reps, confidence, seed)
    results: list[TaskComparison] = []
    for arm, arm_scores in scores.items():
        for task, column, threshold in columns:
            part = {name: values[:, column] for name, values in arm_scores.items()}
            base_auc = scores[baseline]["auc"][:, column]
            base_final = scores[baseline]["final_return"][:, column]
            is_base = arm == baseline
            difference = None if is_base else _difference(part["auc"], base_auc, boot)
            summaries = {name: _summarise(part[name], boot) for name in METRICS}
            if not is_base:  # relative to the baseline's mean: its runs' spread belongs in the interval
                base_start = scores[baseline]["jumpstart"][:, column]
                summaries["jumpstart"] = dataclasses.replace(
                    summaries["jumpstart"], mean=_difference(part["jumpstart"], base_start, boot)
                )
                summaries["transfer_ratio"] = dataclasses.replace(
                    summaries["transfer_ratio"], mean=_relative(part["auc"], base_auc, boot)
                )
            results.append(
                TaskComparison(
                    arm=arm,
                    task=task,
                    baseline=baseline,
                    n_runs=arrays[arm].shape[0],
                    threshold=threshold,
                    metrics=summaries,
                    time_to_threshold_median=float(np.median(part["time_to_threshold"])),
                    reached_fraction=float(reached_fraction(part["time_to_threshold"]).mean()),
                    prob_improvement=None if is_base else _improvement(part["auc"], base_auc, boot),
                    auc_difference=difference,
                    negative_transfer=difference is not None and difference.high < 0,
                    positive_transfer=difference is not None and difference.low > 0,
                    confidence=confidence,
                    last_k=last_k,
                    source_steps=float(offsets.get(arm, 0)),
                    accounting=accounting,
                    asymptotic_gain=None if is_base else _difference(part["final_return"], base_final, boot),
                )
            )
    return _with_winners(results)


class _Bootstrap(NamedTuple):
    reps: int
    confidence: float
    seed: int


def _summarise(values: FloatArray, boot: _Bootstrap) -> MetricSummary:
    estimates = [
        Estimate(statistic(values), *stratified_bootstrap_ci(values, statistic, *boot)) for statistic in (mean, iqm)
    ]
    return MetricSummary(mean=estimates[0], iqm=estimates[1])


def _difference(x: FloatArray, y: FloatArray, boot: _Bootstrap) -> Estimate:
    low, high = stratified_independent_bootstrap_ci(x, y, mean_difference, *boot)
    return Estimate(mean_difference(x, y), low, high)


def _relative(x: FloatArray, y: FloatArray, boot: _Bootstrap) -> Estimate:
    low, high = stratified_independent_bootstrap_ci(x, y, mean_relative_difference, *boot)
    return Estimate(mean_relative_difference(x, y), low, high)


def _improvement(x: FloatArray, y: FloatArray, boot: _Bootstrap) -> Estimate:
    low, high = probability_of_improvement_ci(x, y, *boot)
    return Estimate(probability_of_improvement(x, y), low, high)


def _with_winners(results: list[TaskComparison]) -> list[TaskComparison]:
    """Fills ``winner`` on every comparison: best mean AUC, or a tie on overlapping CIs."""
    winners: dict[str, str] = {}
    for task in dict.fromkeys(r.task for r in results):
        ranked = sorted((r for r in results if r.task == task), key=lambda r: -r.metrics["auc"].mean.value)
        winner = ""  # one arm alone (a grid in progress) wins nothing
        if len(ranked) > 1:
            best, runner_up = ranked[0].metrics["auc"].mean, ranked[1].metrics["auc"].mean
            # No interval (an arm of one run) separates nothing: a tie, as overlapping ones.
            winner = ranked[0].arm if best.low > runner_up.high else TIE
        winners[task] = winner
    return [dataclasses.replace(r, winner=winners[r.task]) for r in results]
