"""Pure statistics for comparing transfer arms: metrics, aggregates and bootstrap intervals.

Scores are ``(runs, tasks)`` arrays and curves ``(runs, tasks, evals)`` arrays with a
shared ``(evals,)`` step vector; nothing here reads or writes files.
"""

from rltransfer.compare.accounting import Accounting, shift_time_to_threshold, step_axis
from rltransfer.compare.metrics import (
    area_under_curve,
    final_return,
    forgetting,
    jumpstart,
    reached_fraction,
    time_to_threshold,
    transfer_ratio,
)
from rltransfer.compare.mmd import mmd_rbf
from rltransfer.compare.scores import METRICS, per_run_scores, validate_arms
from rltransfer.compare.stats import (
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
from rltransfer.compare.summary import (
    ALL_TASKS,
    TIE,
    Estimate,
    MetricSummary,
    TaskComparison,
    compare_arms,
)

__all__ = [
    "ALL_TASKS",
    "METRICS",
    "TIE",
    "Accounting",
    "Estimate",
    "MetricSummary",
    "TaskComparison",
    "area_under_curve",
    "compare_arms",
    "final_return",
    "forgetting",
    "iqm",
    "jumpstart",
    "mean",
    "mean_curve_ci",
    "mean_difference",
    "mean_relative_difference",
    "mmd_rbf",
    "per_run_scores",
    "percentile_interval",
    "probability_of_improvement",
    "probability_of_improvement_ci",
    "reached_fraction",
    "shift_time_to_threshold",
    "step_axis",
    "stratified_bootstrap_ci",
    "stratified_independent_bootstrap_ci",
    "time_to_threshold",
    "transfer_ratio",
    "validate_arms",
]
