"""Several experiments in one worker pool (``rltransfer run A.yaml B.yaml``): the same results as each
run alone, every grid's sources first, one grid's failed source leaving the others to finish, and
one overview table over them."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from specs import grid_spec

from rltransfer.cli import main
from rltransfer.errors import UserError
from rltransfer.experiment.overview import ttt_ratio
from rltransfer.experiment.pool import Grid, run_grids
from rltransfer.experiment.run import run_experiment, run_experiments
from rltransfer.experiment.runner import SourceJob, prepare_out
from rltransfer.experiment.spec import load_spec


def write(root: Path, name: str, **changes: Any) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid_spec(name, **changes)))
    return path


def curves(out: Path) -> dict[str, list[Any]]:
    found = {}
    for path in sorted(out.glob("*/seed*/curves.npz")):
        with np.load(path) as data:
            found[str(path.relative_to(out))] = data["returns"].tolist()
    return found


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("specs")
    return write(root, "carts", targets=["long"]), write(root, "pend", family="pendulum", targets=["g12"])


def test_one_pool_runs_every_grid_as_each_alone(specs: tuple[Path, Path], tmp_path: Path) -> None:
    """Both grids' sources start first, side by side; the runs equal those their grid makes alone."""
    grids = []
    for path, out in zip(specs, (tmp_path / "a", tmp_path / "b"), strict=True):
        spec = load_spec(path)
        prepare_out(spec, out, resume=False)
        grids.append(Grid(spec, out, None))
    starts: list[Any] = []
    run_grids(grids, workers=2, on_event=lambda event, job, _: starts.append(job) if event == "start" else None)
    assert all(isinstance(job, SourceJob) for job in starts[:2])
    assert {job.run_dir.parent for job in starts[:2]} == {tmp_path / "a", tmp_path / "b"}
    for grid in grids:
        assert grid.gate.error is None and grid.result.complete and len(grid.result.finished) == 4
    alone, _ = run_experiment(specs[0], out=tmp_path / "alone", workers=1, progress=False)
    assert curves(grids[0].out) == curves(alone.out) and len(curves(alone.out)) == 4


def test_two_specs_writing_one_directory_are_refused(specs: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="would both write to"):
        run_experiments([specs[0], specs[0]], workers=2, progress=False)
    same = load_spec(specs[0])
    with pytest.raises(UserError, match="would both write to"):  # one spec object twice, too
        run_experiments([same, same], [tmp_path / "x", tmp_path / "x"], workers=2, progress=False)
    assert not (tmp_path / "runs").exists()


def test_command_line_runs_several_specs_and_one_failing_stops_only_itself(
    specs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``require_solved``: a 512-step source (two rollouts: one learns) misses CartPole's threshold; the other
    grid finishes."""
    failing = write(tmp_path, "unsolved", targets=["long"], source={"timesteps": 512, "require_solved": True})
    args = ["run", str(failing), str(specs[1]), "--out", str(tmp_path / "all"), "--workers", "2", "--quiet"]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert f"pend: report: {tmp_path / 'all' / 'pend' / 'report' / 'report.md'}" in out
    assert "pend: runs: 4 finished (0 kept from before), 0 failed" in out
    assert err.startswith("rltransfer: error: unsolved: ") and "threshold" in err and len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "all" / "unsolved").glob("freeze/seed*"))  # its runs waited for the source
    # One overview over the experiments that have a report, naming the one left out.
    assert f"overview: {tmp_path / 'all' / 'overview.md'}" in out
    overview = (tmp_path / "all" / "overview.md").read_text()
    assert "| pend | g12 | freeze |" in overview and "| unsolved |" not in overview
    assert "- unsolved: not included, it has no report (" in overview and "threshold" in overview
    assert "](overview.png)" in overview and (tmp_path / "all" / "overview.png").read_bytes().startswith(b"\x89PNG")
    with open(tmp_path / "all" / "overview.csv") as f:
        rows = list(csv.DictReader(f))
    summary = json.loads((tmp_path / "all" / "pend" / "report" / "summary.json").read_text())
    gain = next(c for c in summary["comparisons"] if (c["arm"], c["task"]) == ("freeze", "g12"))["auc_difference"]
    assert [(r["experiment"], r["target"], r["arm"]) for r in rows] == [("pend", "g12", "freeze")]
    assert float(rows[0]["auc_gain"]) == gain["value"] and float(rows[0]["auc_low"]) == gain["low"]
    final = next(c for c in summary["comparisons"] if (c["arm"], c["task"]) == ("freeze", "g12"))["asymptotic_gain"]
    assert float(rows[0]["asymptotic_gain"]) == final["value"] and float(rows[0]["asymptotic_high"]) == final["high"]
    assert "asymptotic gain [95% CI]" in overview and f"{final['value']:+.1f} [" in overview
    assert rows[0]["ends_lower"] == str(int(final["high"] < 0))
    assert "| NEGATIVE | ends lower | AUC gain per target |" in overview
    # `rltransfer report` rebuilds it from the directories alone.
    assert main(["report", str(tmp_path / "all" / "pend"), "--overview", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "overview.csv").read_text() == (tmp_path / "all" / "overview.csv").read_text()


def test_an_arm_that_ends_lower_is_marked_and_counted() -> None:
    """The report's ``ends below baseline``: flagged beside the AUC flag, counted per arm."""
    from rltransfer.experiment.overview import Row, arm_summary

    def row(task: str, flag: str, final: tuple[float, float, float]) -> Row:
        return Row("e", "1k -> 1k, 3 seeds", task, "zero-shot", (1.0, 1.0, 1.0), (5.0, -1.0, 9.0), 1.0, flag, final)

    rows = [row("a", "", (-9.0, -12.0, -3.0)), row("b", "positive", (-1.0, -4.0, 2.0)), row("c", "", (math.nan,) * 3)]
    assert [r.ends_lower for r in rows] == [True, False, False]  # NaN: not measured, not flagged
    assert rows[0].line().endswith("| 100% | ends lower |") and rows[1].line().endswith("| positive |")
    assert arm_summary(rows)[-1] == "| e | 1k -> 1k, 3 seeds | zero-shot | 1 | 2 | 0 | 1 | a +5 / b +5 / c +5 |"


def test_time_to_threshold_ratio_counts_runs_that_never_reach_it_as_the_budget() -> None:
    ratio, low, high = ttt_ratio(np.array([[np.inf], [100.0]]), np.array([[200.0], [300.0]]), budget=1000.0)
    assert ratio == pytest.approx((1000 + 100) / 2 / 250) and low <= ratio <= high
    # Neither arm reached it: no ratio (1.00 [1.00, 1.00] would read as a measured tie).
    never = np.full((3, 1), np.inf)
    assert all(np.isnan(ttt_ratio(never, never, budget=1000.0)))
    assert ttt_ratio(never, np.array([[500.0], [np.inf], [np.inf]]), budget=1000.0)[0] == pytest.approx(
        1000 / 833.33, 1e-3
    )


def test_one_worker_a_failed_source_stops_its_grid_only(specs: tuple[Path, Path], tmp_path: Path) -> None:
    """With one worker the sources pretrain before the runs, in this process: the same isolation."""
    failing = write(tmp_path, "unsolved", targets=["long"], source={"timesteps": 128, "require_solved": True})
    runs = run_experiments([failing, specs[1]], [tmp_path / "a", tmp_path / "b"], workers=1, progress=False)
    assert isinstance(runs[0].error, UserError) and "threshold" in str(runs[0].error) and runs[0].report is None
    assert runs[1].error is None and runs[1].result.complete and runs[1].report is not None


def test_an_overview_of_grids_with_scratch_alone_says_so() -> None:
    from rltransfer.experiment.overview import overview_markdown

    text = overview_markdown([], ["exp: unfinished runs (excluded): exp/freeze/seed0"])
    assert text.startswith("No transfer arm has finished runs on any target yet") and "| --- |" not in text
    assert text.endswith("- exp: unfinished runs (excluded): exp/freeze/seed0\n")


def test_grids_of_one_name_are_told_apart_in_the_overview(specs: tuple[Path, Path], tmp_path: Path) -> None:
    """Two grids of one spec (before and after a change, say) in one overview: labelled by directory."""
    import shutil

    run_experiment(specs[0], out=tmp_path / "before", workers=1, progress=False)
    shutil.copytree(tmp_path / "before", tmp_path / "after")
    assert main(["report", str(tmp_path / "before"), str(tmp_path / "after"), "--overview", str(tmp_path)]) == 0
    text = (tmp_path / "overview.md").read_text()
    for out in ("before", "after"):
        assert f"| carts ({tmp_path / out}) | long | freeze |" in text
    assert "| carts | long |" not in text
