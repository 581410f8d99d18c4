"""Summary-table rows of comparison results, independent of the output format."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rltransfer.compare.stats import MIN_RUNS
from rltransfer.compare.summary import TIE, Estimate, TaskComparison

#: Flag texts; renderers emphasise them (bold negative-transfer marker, winner marker).
NEGATIVE = "NEGATIVE TRANSFER"
POSITIVE = "positive transfer"
ENDS_LOWER = "ends below baseline"  # a head start (or none) that finishes lower: the AUC flags miss it
WINNER = "winner"
WORSE_THAN = "worse than "  # + the arm: NEGATIVE's counterpart in a report against another arm than scratch


def is_negative(flag: str) -> bool:
    """A flag renderers mark as bad news: negative transfer, worse than the baseline arm, ending lower."""
    return flag in (NEGATIVE, ENDS_LOWER) or flag.startswith(WORSE_THAN)


def auc_flag(negative: bool, positive: bool, baseline: str = "scratch") -> str:
    """The short flag of an AUC-difference interval, as summary tables and the overview write it:
    ``NEGATIVE`` (entirely below 0), ``positive`` (entirely above 0) or ``""`` (null); against another
    arm than scratch, ``worse`` or ``better`` (than it: not transfer, which is measured against scratch)."""
    if baseline != "scratch":
        return "worse" if negative else "better" if positive else ""
    return "NEGATIVE" if negative else "positive" if positive else ""


def flag_of(comparison: TaskComparison) -> str:
    """``auc_flag`` of a comparison."""
    return auc_flag(comparison.negative_transfer, comparison.positive_transfer, comparison.baseline)


@dataclass(frozen=True)
class Row:
    """One arm's cells in a task table, plus its flags (subsets of the constants above)."""

    cells: tuple[str, ...]
    flags: tuple[str, ...]


def fmt_number(value: float | None) -> str:
    """Compact, readable number: thousands separators for large values, ``—`` for NaN."""
    if value is None or math.isnan(value):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    magnitude = abs(value)
    if magnitude >= 100:
        text = f"{value:,.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return text.removeprefix("-") if float(text.replace(",", "")) == 0 else text


def fmt_estimate(estimate: Estimate | None) -> str:
    """``value [low, high]``, or ``—`` when there is no estimate (the baseline's own row)."""
    if estimate is None:
        return "—"
    return f"{fmt_number(estimate.value)} [{fmt_number(estimate.low)}, {fmt_number(estimate.high)}]"


def fmt_steps(steps: float) -> str:
    """A median step count to threshold: whole steps (``0``, ``4,500``, not ``0.00``), or ``not reached``."""
    return "not reached" if math.isinf(steps) else f"{steps:,.0f}"


def fmt_time_to_threshold(comparison: TaskComparison) -> str:
    """Median steps to threshold and the share of runs that reached it."""
    return f"{fmt_steps(comparison.time_to_threshold_median)} ({comparison.reached_fraction:.0%} reached)"


def headers(confidence: float) -> tuple[str, ...]:
    """Column titles of :func:`row`."""
    ci = f"[{confidence:.0%} CI]"
    return (
        "arm",
        "runs",
        f"AUC mean {ci}",
        f"AUC IQM {ci}",
        f"jumpstart {ci}",
        "time to threshold: median (reached)",
        f"final return {ci}",
        f"asymptotic gain {ci}",
        f"transfer ratio {ci}",
        f"P(improvement) {ci}",
        "flags",
    )


def row(comparison: TaskComparison) -> Row:
    """Cells for one comparison; the last column (flags) is left to the renderer."""
    metrics = comparison.metrics
    negative, positive = NEGATIVE, POSITIVE
    if comparison.baseline != "scratch":  # against another arm: better or worse than it, not transfer
        negative, positive = f"{WORSE_THAN}{comparison.baseline}", f"better than {comparison.baseline}"
    flags = [negative] if comparison.negative_transfer else []
    if comparison.positive_transfer:
        flags.append(positive)
    if comparison.ends_lower:
        flags.append(ENDS_LOWER)
    if comparison.is_winner:
        flags.append(WINNER)
    cells = (
        comparison.arm,
        str(comparison.n_runs),
        fmt_estimate(metrics["auc"].mean),
        fmt_estimate(metrics["auc"].iqm),
        fmt_estimate(metrics["jumpstart"].mean),
        fmt_time_to_threshold(comparison),
        fmt_estimate(metrics["final_return"].mean),
        fmt_estimate(comparison.asymptotic_gain),
        fmt_estimate(metrics["transfer_ratio"].mean),
        fmt_estimate(comparison.prob_improvement),
    )
    return Row(cells=cells, flags=tuple(flags))


def winner_sentence(comparisons: Sequence[TaskComparison]) -> str:
    """A sentence naming the task's winner, or explaining a tie."""
    winner = comparisons[0].winner if comparisons else ""
    if not winner:
        arms = ", ".join(c.arm for c in comparisons)
        return f"No winner: only {arms or 'no arm'} has finished runs on this task, nothing to compare it with yet."
    if winner == TIE and any(c.n_runs < MIN_RUNS for c in comparisons):
        return (
            "No winner: an arm with a single run has no confidence interval to tell it from the others "
            "(and no transfer flag); run 2 or more seeds (3 or more advised)."
        )
    if winner == TIE:
        return "Winner: tie — the best mean AUC's interval overlaps the runner-up's."
    return f"Winner (highest mean AUC, interval clear of the runner-up): {winner}."


LEGEND = (
    "AUC is the mean evaluation return over training (trapezoidal area divided by the step span). "
    "IQM is the interquartile mean. Jumpstart is the return before training minus the baseline's. "
    "Final return averages the last evaluations; asymptotic gain is the arm's final return minus the "
    "baseline's. Transfer ratio is (AUC - baseline AUC) / |baseline AUC|. The intervals of jumpstart, "
    "asymptotic gain and transfer ratio resample both arms' runs independently. P(improvement) is the "
    "probability that a run of the arm has a higher AUC than a run of the baseline. Intervals are "
    "stratified bootstrap percentile intervals over runs; one run has none ([—, —]), nor any flag. "
    "NEGATIVE TRANSFER marks an arm whose "
    "AUC-difference interval to the baseline lies entirely below 0; positive transfer, entirely above 0; "
    "ends below baseline, an arm whose asymptotic-gain interval lies entirely below 0, whatever its AUC. "
    "The all-tasks rows pool raw returns across tasks."
)
