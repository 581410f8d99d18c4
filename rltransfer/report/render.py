"""The experiment report: Markdown, self-contained HTML, per-run CSV, curves NPZ and JSON."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy.typing as npt

from rltransfer.compare.scores import METRICS, per_run_scores, validate_arms
from rltransfer.compare.summary import ALL_TASKS, TaskComparison, json_float
from rltransfer.report.files import RESERVED_NPZ_KEYS, write_csv, write_curves_npz, write_json, write_text
from rltransfer.report.plots import plot_learning_curves
from rltransfer.report.tables import ENDS_LOWER, LEGEND, WINNER, Row, headers, is_negative, row, winner_sentence


class ExtraTable(NamedTuple):
    """A titled table of pre-formatted cells, with an optional explanatory note."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
.negative { color: #fff; background: #c0392b; font-weight: bold; padding: 0 0.3em; }
.positive { color: #1e7b34; }
.winner { font-weight: bold; color: #1f4e9c; }
.legend { color: #555; font-size: 0.9em; max-width: 60em; }
img { max-width: 100%; }
"""


def write_report(
    out_dir: str | Path,
    title: str,
    comparisons: Sequence[TaskComparison],
    curves: Mapping[str, npt.ArrayLike],
    steps: npt.ArrayLike,
    task_names: Sequence[str],
    thresholds: Sequence[float] | npt.ArrayLike,
    meta: Mapping[str, Any],
    extra_tables: Sequence[ExtraTable] = (),
) -> dict[str, Path]:
    """Writes the full report into ``out_dir`` (created if missing), every file atomically.

    Files: ``report.md`` (summary table per task, links to the plots), ``report.html``
    (the same, self-contained: inline CSS, PNGs as base64 data URIs), ``scores.csv`` (one
    row per run, arm and task with every per-run metric), ``curves.npz`` (``steps``,
    ``task_names``, ``arm_names``, ``thresholds`` and one ``(runs, tasks, evals)`` array per
    arm), ``summary.json`` (title, meta and every comparison) and ``plots/*.png``.

    Args:
        out_dir: report directory.
        title: report title.
        comparisons: output of :func:`rltransfer.compare.compare_arms` on the same curves;
            its baseline, ``last_k``, source steps and accounting are reused for the CSV.
        curves: arm name to ``(runs, tasks, evals)`` evaluation returns.
        steps: ``(evals,)`` target-environment steps.
        task_names: one name per task.
        thresholds: one threshold per task.
        meta: header facts (experiment name, spec path, seeds, versions, ...).
        extra_tables: further tables (forgetting, total-step accounting...) shown after the tasks.

    Returns:
        Path of every written file, keyed by its path relative to ``out_dir``.
    """
    if not comparisons:
        raise ValueError("write_report needs at least one comparison (from compare_arms)")
    first = comparisons[0]
    arrays, x, limits = validate_arms(curves, steps, task_names, thresholds, first.baseline)
    clashes = RESERVED_NPZ_KEYS.intersection(arrays)
    if clashes:
        raise ValueError(f"arm names {sorted(clashes)} clash with curves.npz's own keys")
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    plots = plot_learning_curves(arrays, x, task_names, limits, directory / "plots", baseline=first.baseline)
    written = {str(p.relative_to(directory)): p for p in plots}
    plot_of = dict(zip(task_names, plots, strict=True))
    sections = _sections(comparisons, [*task_names, ALL_TASKS])

    written["report.md"] = write_text(
        directory / "report.md", _markdown(title, meta, sections, plot_of, directory, extra_tables)
    )
    written["report.html"] = write_text(directory / "report.html", _html(title, meta, sections, plot_of, extra_tables))
    written["scores.csv"] = _write_scores(directory / "scores.csv", comparisons, arrays, x, task_names, limits)
    written["curves.npz"] = write_curves_npz(directory / "curves.npz", arrays, x, task_names, limits)
    summary = {
        "title": title,
        "meta": json.loads(json.dumps(dict(meta), default=str)),
        "baseline": first.baseline,
        "arms": list(arrays),
        "tasks": list(task_names),
        "thresholds": [json_float(float(v)) for v in limits],
        "comparisons": [c.to_dict() for c in comparisons],
        "extra_tables": [t._asdict() for t in extra_tables],
    }
    written["summary.json"] = write_json(directory / "summary.json", summary)
    return written


def _sections(comparisons: Sequence[TaskComparison], tasks: Sequence[str]) -> list[tuple[str, list[TaskComparison]]]:
    return [(task, [c for c in comparisons if c.task == task]) for task in tasks]


def _write_scores(
    path: Path,
    comparisons: Sequence[TaskComparison],
    curves: Mapping[str, npt.ArrayLike],
    steps: npt.ArrayLike,
    task_names: Sequence[str],
    thresholds: npt.ArrayLike,
) -> Path:
    first = comparisons[0]
    sources = {c.arm: c.source_steps for c in comparisons}
    scores = per_run_scores(curves, steps, thresholds, first.baseline, first.last_k, sources, first.accounting)
    rows: list[list[Any]] = []
    for arm, metrics in scores.items():
        runs = metrics["auc"].shape[0]
        for t, task in enumerate(task_names):
            for run in range(runs):
                values = [float(metrics[name][run, t]) for name in METRICS]
                reached = int(math.isfinite(float(metrics["time_to_threshold"][run, t])))
                rows.append([arm, task, run, *values, reached, sources.get(arm, 0.0)])
    header = ["arm", "task", "run", *METRICS, "reached_threshold", "source_steps"]
    return write_csv(path, header, rows)


def _meta_rows(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    def text(value: Any) -> str:
        if isinstance(value, Mapping | list | tuple):
            return json.dumps(value, default=str)
        return str(value)

    return [(str(key), text(value)) for key, value in meta.items()]


def _markdown(
    title: str,
    meta: Mapping[str, Any],
    sections: list[tuple[str, list[TaskComparison]]],
    plot_of: Mapping[str, Path],
    directory: Path,
    extra_tables: Sequence[ExtraTable] = (),
) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    def flags(r: Row) -> str:
        return ", ".join(f"**{f}**" if (is_negative(f) and f != ENDS_LOWER) or f == WINNER else f for f in r.flags)

    out = [f"# {title}", "", line(["key", "value"]), line(["---", "---"])]
    out += [line(pair) for pair in _meta_rows(meta)]
    out += ["", LEGEND, ""]
    for task, group in sections:
        if not group:
            continue
        titles = headers(group[0].confidence)
        threshold = group[0].threshold
        heading = task if threshold is None else f"{task} (threshold {threshold:g})"
        out += [f"## {heading}", "", line(titles), line(["---"] * len(titles))]
        out += [line([*r.cells, flags(r)]) for r in map(row, group)]
        out += ["", winner_sentence(group), ""]
        if task in plot_of:
            out += [f"![{task} learning curves]({plot_of[task].relative_to(directory).as_posix()})", ""]
    for extra in extra_tables:
        out += [f"## {extra.title}", "", line(extra.headers), line(["---"] * len(extra.headers))]
        out += [line(r) for r in extra.rows]
        out += ["", extra.note, ""] if extra.note else [""]
    return "\n".join(out)


def _html(
    title: str,
    meta: Mapping[str, Any],
    sections: list[tuple[str, list[TaskComparison]]],
    plot_of: Mapping[str, Path],
    extra_tables: Sequence[ExtraTable] = (),
) -> str:
    esc = html.escape

    def table(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
        cells = "".join(f"<th>{esc(h)}</th>" for h in head)
        rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
        return f"<table><thead><tr>{cells}</tr></thead><tbody>{rows}</tbody></table>"

    def flags(r: Row) -> str:
        def kind(f: str) -> str:
            return "negative" if is_negative(f) else "winner" if f == WINNER else "positive"

        return " ".join(f'<span class="{kind(f)}">{esc(f)}</span>' for f in r.flags)

    parts = [
        f"<h1>{esc(title)}</h1>",
        table(["key", "value"], [[esc(k), esc(v)] for k, v in _meta_rows(meta)]),
    ]
    parts.append(f'<p class="legend">{esc(LEGEND)}</p>')
    for task, group in sections:
        if not group:
            continue
        threshold = group[0].threshold
        heading = task if threshold is None else f"{task} (threshold {threshold:g})"
        body = [[*(esc(c) for c in r.cells), flags(r)] for r in map(row, group)]
        parts += [f"<h2>{esc(heading)}</h2>", table(headers(group[0].confidence), body)]
        parts.append(f"<p>{esc(winner_sentence(group))}</p>")
        if task in plot_of:
            data = base64.b64encode(plot_of[task].read_bytes()).decode("ascii")
            parts.append(f'<img alt="{esc(task)} learning curves" src="data:image/png;base64,{data}">')
    for extra in extra_tables:
        parts += [
            f"<h2>{esc(extra.title)}</h2>",
            table(extra.headers, [[esc(c) for c in r] for r in extra.rows]),
        ]
        if extra.note:
            parts.append(f'<p class="legend">{esc(extra.note)}</p>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
