"""Report rendering from synthetic curves: every file, markers, CSV rows and NPZ round trip."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from rltransfer.compare import compare_arms
from rltransfer.report import atomic_path, plot_learning_curves, write_report

STEPS = np.arange(9) * 2000.0
TASKS = ["length 1.0", "gravity|15"]
THRESHOLDS = [80.0, 60.0]


def make_curves() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.0, 100.0, STEPS.size)

    def arm(runs: int, scale: float, offset: float) -> np.ndarray:
        return scale * ramp + offset + rng.normal(0.0, 3.0, (runs, len(TASKS), STEPS.size))

    return {"scratch": arm(5, 1.0, 0.0), "good": arm(4, 1.0, 30.0), "bad": arm(5, 0.4, 0.0)}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path], dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("report")
    curves = make_curves()
    comparisons = compare_arms(curves, STEPS, TASKS, THRESHOLDS, reps=300)
    meta = {"experiment": "synthetic", "spec": Path("specs/x.yml"), "seeds": [0, 1, 2, 3, 4]}
    written = write_report(out, "Synthetic transfer", comparisons, curves, STEPS, TASKS, THRESHOLDS, meta)
    return out, written, curves


def table_rows(markdown: str, arm: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith(f"| {arm} |")]


def test_every_file_is_written(report: tuple) -> None:
    out, written, _ = report
    for name in ("report.md", "report.html", "scores.csv", "curves.npz", "summary.json"):
        assert written[name] == out / name and (out / name).stat().st_size > 0
    pngs = sorted((out / "plots").glob("*.png"))
    assert len(pngs) == len(TASKS) and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_markdown_flags_negative_transfer_and_winner(report: tuple) -> None:
    out, _, _ = report
    markdown = (out / "report.md").read_text()
    assert "synthetic" in markdown and "specs/x.yml" in markdown
    bad, good = table_rows(markdown, "bad"), table_rows(markdown, "good")
    assert len(bad) == len(TASKS) + 1
    assert all("**NEGATIVE TRANSFER**" in line for line in bad)
    assert not any("NEGATIVE" in line for line in good + table_rows(markdown, "scratch"))
    assert all("**winner**" in line for line in good)
    assert "| spec | specs/x.yml |" in markdown and "| seeds | [0, 1, 2, 3, 4] |" in markdown
    assert "## gravity|15 (threshold 60)" in markdown
    assert "](plots/learning_curve_" in markdown


def test_html_is_self_contained(report: tuple) -> None:
    out, _, _ = report
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(TASKS)
    assert 'class="negative"' in page and "<style>" in page
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # no external assets


def test_scores_csv_has_one_row_per_run_arm_task(report: tuple) -> None:
    out, _, curves = report
    with (out / "scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == sum(c.shape[0] * c.shape[1] for c in curves.values())
    assert {r["arm"] for r in rows} == set(curves)
    assert {"jumpstart", "auc", "final_return", "time_to_threshold", "transfer_ratio"} <= set(rows[0])
    bad = [r for r in rows if r["arm"] == "bad" and r["task"] == TASKS[0]]
    assert all(r["time_to_threshold"] == "inf" and r["reached_threshold"] == "0" for r in bad)


def test_npz_round_trips(report: tuple) -> None:
    out, _, curves = report
    with np.load(out / "curves.npz") as data:
        np.testing.assert_array_equal(data["steps"], STEPS)
        assert list(data["task_names"]) == TASKS
        assert list(data["arm_names"]) == list(curves)
        for arm, values in curves.items():
            np.testing.assert_array_equal(data[arm], values)


def test_summary_json(report: tuple) -> None:
    out, _, curves = report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["spec"] == "specs/x.yml"
    assert len(summary["comparisons"]) == len(curves) * (len(TASKS) + 1)
    flagged = {c["arm"] for c in summary["comparisons"] if c["negative_transfer"]}
    assert flagged == {"bad"}


def test_plot_learning_curves_alone(tmp_path: Path) -> None:
    paths = plot_learning_curves(make_curves(), STEPS, ["a/b", "a b"], THRESHOLDS, tmp_path, reps=50)
    assert len(set(paths)) == 2 and all(p.exists() for p in paths)


def test_atomic_path_keeps_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_reserved_arm_name_is_rejected(tmp_path: Path) -> None:
    curves = make_curves()
    curves["steps"] = curves.pop("good")
    comparisons = compare_arms(curves, STEPS, TASKS, THRESHOLDS, reps=20)
    with pytest.raises(ValueError, match="clash"):
        write_report(tmp_path, "t", comparisons, curves, STEPS, TASKS, THRESHOLDS, {})


def test_an_arm_that_ends_lower_is_flagged_whatever_its_auc(tmp_path: Path) -> None:
    """A head start that stalls: the same AUC as scratch (no AUC flag), a lower final return."""
    from rltransfer.report.tables import ENDS_LOWER, row

    rng = np.random.default_rng(1)
    ramp = np.linspace(0.0, 100.0, STEPS.size)
    curves = {
        "scratch": ramp + rng.normal(0.0, 3.0, (5, len(TASKS), STEPS.size)),
        "stalls": 50.0 + rng.normal(0.0, 3.0, (5, len(TASKS), STEPS.size)),  # AUC 50, as the ramp's
    }
    comparisons = compare_arms(curves, STEPS, TASKS, THRESHOLDS, reps=300)
    for c in comparisons:
        assert not c.negative_transfer and not c.positive_transfer
        assert (ENDS_LOWER in row(c).flags) == (c.arm == "stalls") == c.ends_lower == c.to_dict()["ends_lower"]
    write_report(tmp_path, "t", comparisons, curves, STEPS, TASKS, THRESHOLDS, {})
    assert all(ENDS_LOWER in line for line in table_rows((tmp_path / "report.md").read_text(), "stalls"))
    assert f'<span class="negative">{ENDS_LOWER}</span>' in (tmp_path / "report.html").read_text()


def test_time_to_threshold_is_written_in_whole_steps() -> None:
    """Steps, not a measurement: a head start that is there at once reads ``0``, not ``0.00``."""
    from rltransfer.report.tables import fmt_steps, fmt_time_to_threshold

    assert [fmt_steps(v) for v in (0.0, 50.0, 4500.0, 1_234_567.0, float("inf"))] == [
        "0",
        "50",
        "4,500",
        "1,234,567",
        "not reached",
    ]
    solved = {"scratch": make_curves()["scratch"], "solved": np.full((3, len(TASKS), STEPS.size), 1e3)}
    comparisons = compare_arms(solved, STEPS, TASKS, THRESHOLDS, reps=20)
    assert {fmt_time_to_threshold(c) for c in comparisons if c.arm == "solved"} == {"0 (100% reached)"}
