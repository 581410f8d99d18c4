"""One table over several experiments (families x strategies): the headline of a multi-spec run.

Per experiment, target and transfer arm: the time-to-threshold ratio transfer/scratch (mean steps;
a run that never reaches the threshold counts as the full budget, so such ratios are bounds) with
a 95% stratified bootstrap CI over seeds, the AUC gain and the asymptotic gain (final return)
over scratch with their CIs (the report's), the fraction of runs that reached the threshold and
the negative-transfer flag; then, per experiment and arm, on how many targets transfer was
positive, null or NEGATIVE. Built from each experiment's finished report
(``report/summary.json``, ``report/curves.npz``), so it costs no training and can be rebuilt at
any time (``rltransfer report DIR DIR ...``).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from rltransfer.compare import stratified_independent_bootstrap_ci, time_to_threshold
from rltransfer.compare.summary import Estimate
from rltransfer.experiment.report import GENERALIZATION_DIR
from rltransfer.experiment.spec import ExperimentSpec
from rltransfer.hyperparams import resolve_hyperparams
from rltransfer.io import atomic_write_text, read_json
from rltransfer.report.forest import Interval, plot_forest
from rltransfer.report.tables import auc_flag

OVERVIEW_MD, OVERVIEW_CSV, OVERVIEW_PNG = "overview.md", "overview.csv", "overview.png"
CSV_COLUMNS = [
    "experiment",
    "budget",
    "target",
    "arm",
    "ttt_ratio",
    "ttt_low",
    "ttt_high",
    "auc_gain",
    "auc_low",
    "auc_high",
    "asymptotic_gain",
    "asymptotic_low",
    "asymptotic_high",
    "reached",
    "flag",
    "ends_lower",
]
# Report metadata that makes an experiment's numbers suspect: repeated beside its rows.
WARNINGS = ("NOT COMPARABLE", "FAILED runs", "unfinished runs", "resumed with new episodes")


@dataclass(frozen=True)
class Row:
    """One target and transfer arm of one experiment."""

    experiment: str
    budget: str
    task: str
    arm: str
    ttt: tuple[float, float, float]  # ratio transfer/scratch, CI low, CI high
    auc: tuple[float, float, float]  # gain over scratch, CI low, CI high
    reached: float
    flag: str  # "positive", "NEGATIVE" or ""
    # Final return over scratch, CI low, CI high (NaN: a report built before it was measured).
    asymptotic: tuple[float, float, float] = (math.nan, math.nan, math.nan)

    @property
    def ends_lower(self) -> bool:
        """The final return's interval lies below scratch's, whatever the AUC says (the report's
        ``ends below baseline``)."""
        return self.asymptotic[2] < 0  # NaN (not measured): False

    def line(self) -> str:
        (r, lo, hi), (d, dlo, dhi), (g, glo, ghi) = self.ttt, self.auc, self.asymptotic
        ttt = "— (neither reached)" if math.isnan(r) else f"{r:.2f} [{_bound(lo, '.2f')}, {_bound(hi, '.2f')}]"
        final = (
            "— (rebuild with `rltransfer report`)"
            if math.isnan(g)
            else f"{g:+.1f} [{_bound(glo, '+.1f')}, {_bound(ghi, '+.1f')}]"
        )
        flags = ", ".join(f for f in (self.flag, "ends lower" if self.ends_lower else "") if f)
        return (
            f"| {self.experiment} | {self.task} | {self.arm} | {ttt} | {d:+.1f} "
            f"[{_bound(dlo, '+.1f')}, {_bound(dhi, '+.1f')}] | {final} | {self.reached:.0%} | {flags} |"
        )


def _bound(value: float, spec: str) -> str:
    """An interval's bound, ``—`` where there is no interval (an arm of one run)."""
    return "—" if math.isnan(value) else format(value, spec)


def ttt_ratio(arm: np.ndarray, scratch: np.ndarray, budget: float) -> tuple[float, float, float]:
    """Mean steps to threshold, arm / scratch, with never-reached runs counted as the budget; its CI.

    NaN where no run of either reached the threshold: both means would be the budget, and a ratio
    of 1 [1, 1] would read as a measured tie."""

    def ratio(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(x) / max(np.mean(y), 1.0))

    if not (np.isfinite(arm).any() or np.isfinite(scratch).any()):
        return math.nan, math.nan, math.nan
    a, s = np.minimum(arm, budget), np.minimum(scratch, budget)
    low, high = stratified_independent_bootstrap_ci(a, s, ratio)
    return ratio(a, s), low, high


def budget_of(spec: ExperimentSpec) -> str:
    """``source steps [xS sources] -> target steps, seeds`` as run (a given checkpoint: its directory's name)."""
    if spec.source.checkpoint is not None:
        source = Path(spec.source.checkpoint).name
    else:
        steps = spec.source.timesteps or resolve_hyperparams(spec.family)["n_timesteps"]
        sources = len(spec.source.seeds)
        source = f"{steps / 1000:g}k" + (f" x{sources} sources" if sources > 1 else "")
    n = len(spec.seeds)
    return f"{source} -> {spec.timesteps / 1000:g}k, {n} seed{'s' if n != 1 else ''}"


def rows_for(spec: ExperimentSpec, out: Path, report: Path | None = None) -> list[Row]:
    """The rows of one experiment whose report is built (``<out>/report``, or ``report``: one
    against another arm, whose flags then read ``worse`` and ``better``)."""
    report = report if report is not None else out / "report"
    summary = read_json(report / "summary.json", f"rebuild it with `rltransfer report {out}`")
    with np.load(report / "curves.npz") as data:
        steps = data["steps"]
        curves = {arm: data[arm] for arm in summary["arms"]}
    thresholds = np.asarray(summary["thresholds"], dtype=float)
    ttt = {arm: time_to_threshold(c, steps, thresholds) for arm, c in curves.items()}
    budget, as_run = float(steps[-1]), budget_of(spec)
    rows = []
    for c in summary["comparisons"]:
        arm, task = c["arm"], c["task"]
        if arm == summary["baseline"] or task not in summary["tasks"]:  # "all tasks" has no single threshold
            continue
        t = summary["tasks"].index(task)
        d = c["auc_difference"]
        g = c.get("asymptotic_gain") or {}
        flag = auc_flag(c["negative_transfer"], c["positive_transfer"], summary["baseline"])
        rows.append(
            Row(
                spec.name,
                as_run,
                task,
                arm,
                ttt_ratio(ttt[arm][:, t : t + 1], ttt[summary["baseline"]][:, t : t + 1], budget),
                _floats(d),
                c["reached_fraction"],
                flag,
                _floats(g),
            )
        )
    return rows


def _floats(estimate: Mapping[str, Any]) -> tuple[float, float, float]:
    """An estimate as summary.json holds it, as floats (NaN for ``null``)."""
    e = Estimate.from_dict(estimate)
    return e.value, e.low, e.high


def warnings_for(out: Path) -> list[str]:
    """What the experiment's report warns about (settings that differ, failed or unfinished runs)."""
    meta = read_json(out / "report" / "summary.json", f"rebuild it with `rltransfer report {out}`")["meta"]
    return [f"{key}: {value}" for key, value in meta.items() if key.startswith(WARNINGS)]


def arm_summary(rows: Sequence[Row]) -> list[str]:
    """Per experiment and arm: on how many targets transfer was positive, null or NEGATIVE (by AUC),
    and on how many it ended below scratch."""
    lines = [
        "| experiment | budget (source -> target, seeds) | arm | positive | null | NEGATIVE | ends lower "
        "| AUC gain per target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.experiment, row.arm), []).append(row)
    for (experiment, arm), group in groups.items():
        flags = [row.flag for row in group]
        gains = " / ".join(f"{row.task} {row.auc[0]:+.0f}" for row in group)
        lines.append(
            f"| {experiment} | {group[0].budget} | {arm} | {flags.count('positive')} | {flags.count('')} | "
            f"{flags.count('NEGATIVE')} | {sum(row.ends_lower for row in group)} | {gains} |"
        )
    return lines


def labels(experiments: Sequence[tuple[ExperimentSpec, Path]]) -> list[str]:
    """Each experiment's name in the overview, with its directory where another has the same name
    (two grids of one spec, e.g. before and after a change)."""
    names = [spec.name for spec, _ in experiments]
    return [spec.name if names.count(spec.name) == 1 else f"{spec.name} ({out})" for spec, out in experiments]


def generalization_lines(experiments: Sequence[tuple[ExperimentSpec, Path]]) -> list[str]:
    """Per experiment and arm, its final policies over the held-out variants against scratch, as
    `rltransfer generalize` last played them (experiments it has not played are left out)."""
    rows = []
    for (_, out), label in zip(experiments, labels(experiments), strict=True):
        path = out / GENERALIZATION_DIR / "summary.json"
        summary = read_json(path, f"rerun `rltransfer generalize {out}`") if path.exists() else {}
        for target, arm, runs, mean, diff, _, _, flag in (summary.get("table") or {}).get("rows", []):
            if target == "all targets":
                rows.append(f"| {label} | {arm} | {runs} | {mean} | {diff} | {flag} |")
    if not rows:
        return []
    return [
        "",
        "Generalisation: final policies on the held-out variants (mean over them; `rltransfer generalize`):",
        "",
        "| experiment | arm | runs | mean return [95% CI] | vs scratch [95% CI] | flags |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
    ]


def overview_markdown(rows: Sequence[Row], notes: Sequence[str] = ()) -> str:
    """The per-target table, then the per-arm counts, then ``notes`` (one bullet each)."""
    if not rows:  # grids in progress: scratch alone, or nothing, has finished
        lines = ["No transfer arm has finished runs on any target yet: nothing to compare with scratch."]
        return "\n".join([*lines, *(["", *(f"- {note}" for note in notes)] if notes else [])]) + "\n"
    lines = [
        "| experiment | target | arm | TTT ratio transfer/scratch [95% CI] | AUC gain [95% CI] | "
        "asymptotic gain [95% CI] | reached | flag |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(row.line() for row in rows),
        "",
        "TTT ratio: mean env steps to the threshold, transfer / scratch (below 1: transfer gets there "
        "sooner); a run that never reaches it counts as the full budget, so a ratio over such runs is a "
        "bound. Asymptotic gain: final return minus scratch's; ends lower: its interval lies below 0, whatever "
        "the AUC flag. Reached: the transfer arm's runs that got there.",
        "",
        *arm_summary(rows),
    ]
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def overview_csv(rows: Sequence[Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            [r.experiment, r.budget, r.task, r.arm, *r.ttt, *r.auc, *r.asymptotic, r.reached, r.flag, int(r.ends_lower)]
        )
    return buf.getvalue()


def overview_dir(outs: Sequence[Path]) -> Path:
    """Where a run of several experiments puts its overview: their directories' common parent."""
    return Path(os.path.commonpath([str(Path(o).resolve().parent) for o in outs]))


def write_overview(
    experiments: Sequence[tuple[ExperimentSpec, Path]], where: Path, left_out: Sequence[str] = ()
) -> Path:
    """Write ``overview.md``, ``overview.csv`` and ``overview.png`` (a forest plot of the AUC gains)
    into ``where`` for experiments with a built report;
    ``left_out``: a line per experiment without one (it is named under the tables). Returns the markdown."""
    rows: list[Row] = []
    notes = list(left_out)
    for (spec, out), label in zip(experiments, labels(experiments), strict=True):
        rows += [replace(row, experiment=label) for row in rows_for(spec, out)]
        notes += [f"{label}: {warning}" for warning in warnings_for(out)]
    where.mkdir(parents=True, exist_ok=True)
    atomic_write_text(where / OVERVIEW_CSV, overview_csv(rows))
    text = "# Transfer vs scratch: overview\n\n" + overview_markdown(rows, notes)
    text += "".join(f"{line}\n" for line in generalization_lines(experiments))
    if rows:
        plot_forest(_panels(rows), where / OVERVIEW_PNG, xlabel="AUC gain over scratch [95% CI]")
        text += f"\n![AUC gain over scratch per experiment, target and arm]({OVERVIEW_PNG})\n"
    atomic_write_text(where / OVERVIEW_MD, text)
    return where / OVERVIEW_MD


def _panels(rows: Sequence[Row]) -> dict[str, list[Interval]]:
    """The AUC gains as forest-plot panels, one per experiment (returns differ in scale between families)."""
    panels: dict[str, list[Interval]] = {}
    for row in rows:
        panels.setdefault(f"{row.experiment} ({row.budget})", []).append(
            Interval(f"{row.task} · {row.arm}", *row.auc, flag=row.flag)
        )
    return panels
