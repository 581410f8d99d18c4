"""A spec's arms: names, strategies and options, and ``sweep`` expanding one arm into several."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from specs import grid_spec

from rltransfer.errors import UserError
from rltransfer.experiment.report import build_report
from rltransfer.experiment.run import run_experiment
from rltransfer.experiment.spec import parse_spec


def test_an_arm_sweeps_option_values_as_one_arm_each() -> None:
    spec = parse_spec(
        grid_spec(
            "sweep",
            arms=[
                "scratch",
                {"name": "l2sp", "strategy": "l2sp", "sweep": {"coef": [0.001, 0.1]}},
                {
                    "strategy": "finetune",
                    "transfer": "heads",
                    "sweep": {"trunk_lr_scale": [0.1, [0.1, 1.0]], "rehearse": [False, True]},
                },
            ],
        )
    )
    assert [a.name for a in spec.arms] == [  # keys in sorted order, whatever the spec's
        "scratch",
        "l2sp-coef=0.001",
        "l2sp-coef=0.1",
        "finetune-rehearse=false-trunk_lr_scale=0.1",
        "finetune-rehearse=false-trunk_lr_scale=0.1,1",
        "finetune-rehearse=true-trunk_lr_scale=0.1",
        "finetune-rehearse=true-trunk_lr_scale=0.1,1",
    ]
    assert [a.strategy.l2sp for a in spec.arms[1:3]] == [0.001, 0.1]
    last = spec.arms[-1].strategy
    assert last.trunk_lr_scale == (0.1, 1.0) and last.rehearse and "pi_head" in last.transfer
    assert spec.arms[-1].dirname == "finetune-rehearse-true-trunk_lr_scale-0.1-1"
    assert (spec.arms[-1].sweep_of, spec.arms[-1].swept) == (
        "finetune",
        (("rehearse", "true"), ("trunk_lr_scale", "0.1,1")),
    )
    assert spec.arms[0].sweep_of is None and spec.arms[0].swept == ()
    # experiment.json stores the spec with sorted keys: read back, the arms are the same.
    again = parse_spec(json.loads(json.dumps(spec.raw, sort_keys=True)))
    assert again.arms == spec.arms


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"lr": [1]}, "'lr' is not a strategy option; sweep one of: coef, layer_map"),
        ({"coef": 0.1}, r"sweep\.coef must be a non-empty list of values, got 0\.1"),
        ({"coef": []}, "must be a non-empty list"),
        ({}, "sweep must map options to lists of values"),
        ({"coef": [0.1, -1.0]}, r"spec: l2sp-coef=-1: l2sp coef must be > 0, got -1\.0"),
    ],
)
def test_bad_sweeps_are_one_line(sweep: dict[str, Any], message: str) -> None:
    arms = ["scratch", {"name": "l2sp", "strategy": "l2sp", "sweep": sweep}]
    with pytest.raises(UserError, match=message):
        parse_spec(grid_spec("sweep", arms=arms))
    with pytest.raises(UserError, match="'coef' is both set and swept; drop one"):
        parse_spec(grid_spec("sweep", arms=["scratch", {"strategy": "l2sp", "coef": 1, "sweep": {"coef": [2]}}]))


def test_a_swept_grid_runs_and_its_report_reads_down_the_values(tmp_path: Path) -> None:
    arms = ["scratch", {"name": "l2sp", "strategy": "l2sp", "sweep": {"rehearse": [False], "coef": [0.001, 0.1]}}]
    result, report_dir = run_experiment(grid_spec("swept", arms=arms, seeds=1), out=tmp_path, workers=2, progress=False)
    assert not result.failed
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("l2sp")) == [
        "l2sp-coef-0.001-rehearse-false",
        "l2sp-coef-0.1-rehearse-false",
    ]
    build_report(tmp_path)  # from experiment.json alone, as `rltransfer report` does
    report = (report_dir / "report.md").read_text()
    assert "## Sweep: l2sp over coef, rehearse" in report
    assert "| coef | rehearse | runs | AUC gain, all tasks | asymptotic gain, all tasks | AUC gain: long |" in report
    for coef in ("0.001", "0.1"):  # each value's row holds its run's numbers, not a missing arm's dashes
        row = next(line for line in report.splitlines() if line.startswith(f"| {coef} | false | "))
        cells = row.split(" | ")  # a missing arm's cells are dashes; one run's have values, intervals dashed
        assert cells[2] == "1" and "—" not in cells and all(c.split(" [")[0] != "—" for c in cells)


def test_a_grid_gains_arms_on_resume_and_keeps_each_arm_as_it_ran(tmp_path: Path) -> None:
    """An arm added to a finished grid runs beside the kept runs; an arm changed under its name (kept
    or dropped meanwhile) is refused with nothing written; a grid recorded before arms could change
    is read by the spec it recorded."""
    out = tmp_path / "grid"
    first, _ = run_experiment(grid_spec("grow", seeds=1), out=out, workers=1, progress=False)
    assert len(first.finished) == 2
    grown = grid_spec("grow", seeds=1, arms=["scratch", "freeze", "finetune"])
    second, report = run_experiment(grown, out=out, workers=1, progress=False, resume=True)
    assert [j.arm.name for j in second.finished] == ["finetune"] and len(second.skipped) == 2
    assert "| arms | scratch (1 seed), freeze (1 seed), finetune (1 seed) |" in (report / "report.md").read_text()
    record = out / "experiment.json"
    assert sorted(json.loads(record.read_text())["arms"]) == ["finetune", "freeze", "scratch"]

    smaller, report = run_experiment(grid_spec("grow", seeds=1), out=out, workers=1, progress=False, resume=True)
    assert not smaller.finished and (out / "finetune" / "seed0" / "model.zip").exists()  # dropped, not deleted
    text = (report / "report.md").read_text()
    assert "| not reported: arms no longer in the spec | finetune (1 finished run in finetune/) |" in text
    before = record.read_text()
    for arms, says in [
        (
            ["scratch", {"name": "freeze", "strategy": "partial:1"}],
            "strategy 'freeze' -> 'partial:1', trainable_layers 0 -> 1",
        ),
        (["scratch", {"name": "finetune", "strategy": "finetune", "trunk_lr_scale": 0.5}], "trunk_lr_scale 1.0 -> 0.5"),
    ]:
        with pytest.raises(UserError, match=f"arm '(freeze|finetune)' has other settings than its runs in .*{says}"):
            run_experiment(grid_spec("grow", seeds=1, arms=arms), out=out, workers=1, progress=False, resume=True)
    assert record.read_text() == before
    with pytest.raises(
        UserError, match=r"different experiment \('grow', recorded -> this spec: timesteps: 128 -> 256\)"
    ):
        run_experiment(grid_spec("grow", seeds=1, timesteps=256), out=out, workers=1, progress=False, resume=True)

    # A grid recorded before arms could change: its arms are read from the spec it recorded.
    older = {k: v for k, v in json.loads(before).items() if k not in ("shared_fingerprint", "arms")}
    assert older["spec"]["arms"] == ["scratch", "freeze"]
    record.write_text(json.dumps({**older, "fingerprint": parse_spec(grid_spec("grow", seeds=1)).fingerprint()}))
    with pytest.raises(UserError, match="arm 'freeze' has other settings than its runs"):
        run_experiment(grid_spec("grow", seeds=1, arms=["scratch", {"name": "freeze", "strategy": "partial:1"}]),
                       out=out, workers=1, progress=False, resume=True)  # fmt: skip
    with pytest.raises(UserError, match="different experiment"):
        run_experiment(grid_spec("grow", seeds=1, timesteps=256), out=out, workers=1, progress=False, resume=True)
    regrown, _ = run_experiment(grown, out=out, workers=1, progress=False, resume=True)
    assert len(regrown.skipped) == 3 and not regrown.finished  # finetune's runs were kept on disk
    assert sorted(json.loads(record.read_text())["arms"]) == ["finetune", "freeze", "scratch"]


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "makes no directory of its own"),
        (".", "makes no directory of its own"),
        ("..", "makes no directory of its own"),  # would write its runs beside --out
        (".hidden", "makes no directory of its own"),
        ("report", "is the grid's own 'report' directory"),
        ("Source", "is the grid's own 'source' directory"),
        ("generalization", "is the grid's own 'generalization' directory"),
        ("_layout", "is the grid's own '_layout' directory"),
        ("experiment.json", "is the grid's own 'experiment.json' directory"),
    ],
)
def test_an_arm_cannot_take_the_grids_own_directories(name: str, says: str) -> None:
    with pytest.raises(UserError, match=re.escape(says)):
        parse_spec(grid_spec("names", arms=["scratch", {"name": name, "strategy": "freeze"}]))


def test_arm_directories_differ_beyond_case() -> None:
    with pytest.raises(UserError, match=r"collide as directory names \(case aside\)"):
        parse_spec(grid_spec("names", arms=["scratch", "freeze", {"name": "Freeze", "strategy": "freeze"}]))


def test_the_reserved_names_are_the_grids_directories(tmp_path: Path) -> None:
    from rltransfer.experiment.arms import RESERVED_DIRS
    from rltransfer.experiment.report import GENERALIZATION_DIR
    from rltransfer.experiment.runner import EXPERIMENT_FILE, source_dir
    from rltransfer.experiment.tensorboard import LAYOUT_DIR

    spec = parse_spec(grid_spec("names", seeds=1))
    _, report_dir = run_experiment(grid_spec("names", seeds=1), out=tmp_path, workers=1, progress=False)
    written = {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")} - {a.dirname for a in spec.arms}
    source = source_dir(spec, tmp_path, 0).relative_to(tmp_path).parts[0]
    assert written == {EXPERIMENT_FILE, LAYOUT_DIR, source, report_dir.relative_to(tmp_path).parts[0]}
    assert set(RESERVED_DIRS) == written | {GENERALIZATION_DIR}  # `generalize` writes that one
