"""The answer on the terminal: after a grid (``run``, ``report``) each transfer arm against scratch
per target, and after ``generalize`` each arm on the held-out targets, as the reports give them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rltransfer.report.tables import fmt_number

if TYPE_CHECKING:
    from rltransfer.experiment.generalization import Generalization
    from rltransfer.experiment.spec import ExperimentSpec


def _console() -> Console:
    return Console(width=max(Console().width, 140))


def _interval(value: float, low: float, high: float) -> str:
    return f"{fmt_number(value)} [{fmt_number(low)}, {fmt_number(high)}]"


def print_results(out: Path, spec: ExperimentSpec | None = None, prefix: str = "", baseline: str = "scratch") -> None:
    """Per target and transfer arm of the grid in ``out`` (report built; ``spec``: its spec, read
    from there if not given): AUC gain over scratch (or ``baseline``, whose report is built too),
    time to threshold as a share of its, final return over its, with 95% CIs and flags."""
    from rltransfer.experiment.overview import rows_for
    from rltransfer.experiment.report import load_experiment, report_dir

    spec = spec or load_experiment(out)
    rows = rows_for(spec, out, report_dir(out, spec, baseline))
    if not rows:
        return
    what = "transfer vs scratch" if baseline == "scratch" else f"arms vs {baseline}"
    title = f"{prefix}{what}, {rows[0].budget} (95% CIs over seeds; report.md has every metric)"
    table = Table(title=escape(title), title_justify="left")
    ttt = f"steps to threshold / {baseline}'s"
    for col in ("target", "arm", "AUC gain", ttt, "final return gain", "reached", "flags"):
        table.add_column(col)
    targets = list(dict.fromkeys(row.task for row in rows))
    for row in sorted(rows, key=lambda r: targets.index(r.task)):  # by target, arms in their order
        ratio = "— (neither reached)" if math.isnan(row.ttt[0]) else _interval(*row.ttt)
        final = "—" if math.isnan(row.asymptotic[0]) else _interval(*row.asymptotic)
        flags = ", ".join(f for f in (row.flag, "ends lower" if row.ends_lower else "") if f)
        style = "bold red" if row.flag in ("NEGATIVE", "worse") or row.ends_lower else "green" if row.flag else None
        cells = [row.task, row.arm, _interval(*row.auc), ratio, final, f"{row.reached:.0%}", flags]
        table.add_row(*map(escape, cells), style=style)
    if any(math.isnan(row.auc[1]) and not math.isnan(row.auc[0]) for row in rows):
        table.caption = "[—, —]: an arm with one run has no interval, and no flag; run 2 or more seeds (--seeds 3)"
    _console().print(table)


def print_generalization(result: Generalization, all_targets_only: bool = False) -> None:
    """``generalize``'s comparison with scratch; ``all_targets_only``: the mean over the targets."""
    from rltransfer.experiment.generalization import ALL_TARGETS, table

    header, rows = table(result)
    out = Table(
        title=escape(f"held-out targets ({', '.join(result.targets)}), vs scratch" if all_targets_only else ""),
        title_justify="left",
    )
    for col in header:
        out.add_column(escape(col))
    for row in rows:
        if not all_targets_only or row[0] == ALL_TARGETS:
            out.add_row(*map(escape, row))
    _console().print(out)
