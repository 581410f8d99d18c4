"""A report against another arm than scratch: ``rltransfer report DIR --baseline ARM``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from specs import grid_spec

from rltransfer.cli import main
from rltransfer.compare import compare_arms
from rltransfer.errors import UserError
from rltransfer.experiment.report import build_report
from rltransfer.experiment.run import run_experiment
from rltransfer.experiment.spec import parse_spec
from rltransfer.report.tables import NEGATIVE, POSITIVE, row


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vs") / "grid"
    run_experiment(grid_spec("vs", arms=["scratch", "freeze", "finetune"]), out=out, workers=1, progress=False)
    return out


def test_every_arm_is_compared_with_the_one_asked_for(grid: Path) -> None:
    before = (grid / "report" / "summary.json").read_text()
    where = build_report(grid, baseline="freeze")
    assert where == grid / "report-vs-freeze"
    summary = json.loads((where / "summary.json").read_text())
    assert summary["baseline"] == "freeze" and summary["title"] == "Arms vs freeze: vs"
    assert {c["arm"] for c in summary["comparisons"] if c["auc_difference"] is None} == {"freeze"}
    assert {c["arm"] for c in summary["comparisons"]} == {"scratch", "freeze", "finetune"}
    text = (where / "report.md").read_text()
    assert "| baseline | freeze: every interval, P(improvement) and flag compares an arm with it;" in text
    assert "## Source policies" not in text  # the scratch report keeps those
    assert (grid / "report" / "summary.json").read_text() == before  # the report against scratch stays


def test_flags_against_another_arm_say_better_or_worse() -> None:
    steps = np.arange(3) * 10.0
    low, high = np.zeros((3, 1, 3)) + np.arange(3.0)[:, None, None], np.full((3, 1, 3), 50.0)
    comps = compare_arms({"freeze": low, "finetune": high, "scratch": low}, steps, ["t"], [100.0], "freeze", reps=200)
    better = next(c for c in comps if c.arm == "finetune" and c.task == "t")
    assert better.baseline == "freeze" and better.positive_transfer
    assert "better than freeze" in row(better).flags and POSITIVE not in row(better).flags
    worse = dataclasses.replace(better, negative_transfer=True, positive_transfer=False)
    assert "worse than freeze" in row(worse).flags and NEGATIVE not in row(worse).flags


def test_the_command_line_prints_it_and_refuses_an_arm_not_in_the_spec(
    grid: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(grid), "--baseline", "freeze"]) == 0
    out = capsys.readouterr().out
    assert f"report: {grid / 'report-vs-freeze' / 'report.md'}" in out
    assert "arms vs freeze, " in out and "steps to threshold / freeze's" in out
    for args, says in [
        (
            ["--baseline", "l2sp"],
            "'l2sp' is not an arm of experiment 'vs'; compare with one of: scratch, freeze, finetune",
        ),
        (["--baseline", "freeze", "--overview", str(grid)], "--overview compares every experiment with scratch"),
    ]:
        assert main(["report", str(grid), *args]) == 2
        assert says in capsys.readouterr().err


def test_no_arm_may_take_the_name_of_such_a_report() -> None:
    with pytest.raises(UserError, match="starts as the reports against other arms do"):
        parse_spec(grid_spec("vs", arms=["scratch", {"name": "report-vs-freeze", "strategy": "freeze"}]))


def test_an_arm_without_finished_runs_is_nothing_to_compare_with(tmp_path: Path) -> None:
    out = tmp_path / "grid"
    run_experiment(grid_spec("half", arms=["scratch", "freeze"], seeds=1), out=out, workers=1, progress=False)
    spec = parse_spec(grid_spec("half", arms=["scratch", "freeze", "finetune"], seeds=1))
    with pytest.raises(UserError, match=r"no finished finetune runs under .*; nothing to compare with"):
        build_report(out, spec, baseline="finetune")


def test_the_report_against_scratch_brings_those_against_other_arms_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "grid"
    run_experiment(grid_spec("grow", arms=["scratch", "freeze"], seeds=1), out=out, workers=1, progress=False)
    build_report(out, baseline="freeze")
    run_experiment(grid_spec("grow", arms=["scratch", "freeze"]), out=out, workers=1, progress=False, resume=True)
    summary = json.loads((out / "report-vs-freeze" / "summary.json").read_text())
    assert {c["n_runs"] for c in summary["comparisons"]} == {2}  # the second seed, not the first alone


def test_worse_than_the_baseline_arm_is_marked_as_bad_news(tmp_path: Path) -> None:
    from rltransfer.report import write_report

    steps = np.arange(3) * 10.0
    low, high = np.zeros((3, 1, 3)) + np.arange(3.0)[:, None, None], np.full((3, 1, 3), 50.0)
    curves = {"scratch": low, "freeze": high, "finetune": low}
    comps = compare_arms(curves, steps, ["t"], [100.0], "freeze", reps=200)
    write_report(tmp_path, "vs freeze", comps, curves, steps, ["t"], [100.0], {"experiment": "x"})
    assert "**worse than freeze**" in (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert '<span class="negative">worse than freeze</span>' in html and 'positive">worse' not in html
