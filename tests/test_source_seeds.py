"""Several sources per experiment (``source.seeds``): target seed k fine-tunes source seeds[k % S].

Each target seed then replicates the whole pipeline, pretraining included, so the report's
intervals over seeds hold the source's variance; one source stays the default (``<out>/source``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from specs import grid_spec, run_cli

from rltransfer.checkpoint import load_checkpoint
from rltransfer.errors import UserError
from rltransfer.experiment.runner import SourceJob, plan_jobs, schedule
from rltransfer.experiment.runner import source_dir as source_path
from rltransfer.experiment.source_checks import check_solved
from rltransfer.experiment.spec import load_spec, parse_spec


def _write(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(grid_spec("sources", **changes), sort_keys=False))
    return path


def _source(**keys: Any) -> dict[str, Any]:
    return {"timesteps": 128, "hyperparams": grid_spec("x")["hyperparams"], **keys}


def test_one_source_by_default_and_a_count_or_list_of_seeds() -> None:
    spec = parse_spec(grid_spec("a"))
    assert spec.source.seeds == (0,) and spec.source.seed == 0
    assert [spec.source.seed_for(k) for k in range(3)] == [0, 0, 0]
    spec = parse_spec(grid_spec("a", source=_source(seeds=3), seeds=5))
    assert spec.source.seeds == (0, 1, 2)
    assert [spec.source.seed_for(k) for k in range(5)] == [0, 1, 2, 0, 1]
    spec = parse_spec(grid_spec("a", source=_source(seeds=[7, 4]), seeds=[3, 4, 5]))
    assert [spec.source.seed_for(k) for k in spec.seeds] == [4, 7, 4]


def test_paired_sources_follow_the_target_seeds(tmp_path: Path) -> None:
    spec = parse_spec(grid_spec("a", source=_source(seeds="paired"), seeds=[2, 5]))
    assert spec.source.paired and spec.source.seeds == (2, 5)
    assert [spec.source.seed_for(k) for k in (2, 5, 9)] == [2, 5, 9]
    more = spec.with_seeds((0, 1, 2))  # `--seeds 3`, or a report of a grid run with them
    assert more.seeds == more.source.seeds == (0, 1, 2) and more.fingerprint() == spec.fingerprint()
    one = spec.with_seeds((0,))
    assert source_path(one, tmp_path, 0) == tmp_path / "source" / "seed0"  # more seeds later go beside it
    unpaired = parse_spec(grid_spec("a", source=_source(seeds=2)))
    assert unpaired.with_seeds((0, 1, 2)).source.seeds == (0, 1)


def test_more_seeds_later_add_their_sources_and_runs_only(tmp_path: Path) -> None:
    from rltransfer.experiment.run import run_experiment

    spec = _write(tmp_path, source=_source(seeds="paired"))
    out = tmp_path / "grid"
    result, _ = run_experiment(spec, out=out, seeds=1, workers=1, progress=False)
    assert result.complete and sorted(p.name for p in (out / "source").iterdir()) == ["seed0"]
    kept = (out / "freeze" / "seed0" / "model.zip").stat().st_mtime_ns
    result, report = run_experiment(spec, out=out, seeds=2, workers=1, progress=False, resume=True)
    assert sorted((j.arm.name, j.seed) for j in result.finished) == [("freeze", 1), ("scratch", 1)]
    assert sorted(p.name for p in (out / "source").iterdir()) == ["seed0", "seed1"]
    assert (out / "freeze" / "seed0" / "model.zip").stat().st_mtime_ns == kept
    lineage = json.loads((out / "freeze" / "seed1" / "manifest.json").read_text())["source"]
    assert lineage["path"] == str(out / "source" / "seed1" / "model.zip")
    assert report is not None and "pretrained with that seed" in (report / "report.md").read_text()


def test_source_seeds_change_the_fingerprint_and_the_one_source_layout_is_unchanged(tmp_path: Path) -> None:
    one, two = parse_spec(grid_spec("a")), parse_spec(grid_spec("a", source=_source(seeds=2)))
    assert one.fingerprint() != two.fingerprint()  # the runs measure different things: not resumable as one
    assert source_path(one, tmp_path, 0) == tmp_path / "source"
    assert [source_path(two, tmp_path, s) for s in (0, 1)] == [
        tmp_path / "source" / "seed0",
        tmp_path / "source" / "seed1",
    ]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"seed": 0, "seeds": 2}, "not both"),
        ({"seeds": 2, "checkpoint": "x.zip"}, "remove it to transfer from source.checkpoint"),
        ({"seeds": [1, 1]}, "must be distinct"),
        ({"seeds": 0}, "positive integer"),
        ({"seeds": [-1]}, "non-negative integers"),
        ({"seed": -1}, "non-negative integer"),
        ({"seed": "zero"}, "non-negative integer"),
        ({"seeds": "five"}, "a count, a list or 'paired'"),
        ({"seeds": "paired", "checkpoint": "x.zip"}, "remove it to transfer from source.checkpoint"),
    ],
)
def test_bad_source_seeds_are_one_line_errors_with_the_line(tmp_path: Path, source: dict, message: str) -> None:
    path = _write(tmp_path, source=_source(**source))
    with pytest.raises(UserError, match=message) as err:
        load_spec(path)
    assert f"{path}:" in str(err.value) and "\n" not in str(err.value)


def test_duplicate_target_seeds_are_refused() -> None:
    with pytest.raises(UserError, match="seeds must be distinct"):
        parse_spec(grid_spec("a", seeds=[0, 0]))


def test_each_run_is_paired_with_its_source_and_waits_only_for_it(tmp_path: Path) -> None:
    spec = parse_spec(grid_spec("a", source=_source(seeds=2), seeds=3))
    jobs = plan_jobs(spec, tmp_path)
    assert [(j.arm.name, j.seed, j.source_seed) for j in jobs] == [
        ("scratch", 0, None),
        ("scratch", 1, None),
        ("scratch", 2, None),
        ("freeze", 0, 0),
        ("freeze", 1, 1),
        ("freeze", 2, 0),
    ]
    ready = tmp_path / "ready"
    queue, gate = schedule(spec, tmp_path, jobs, {0: ready})  # source 0 finished before, source 1 not
    assert queue[0] == SourceJob(tmp_path / "source" / "seed1", 1)
    assert [(j.arm.name, j.seed) for j in queue[1:]] == [
        ("scratch", 0),
        ("scratch", 1),
        ("scratch", 2),
        ("freeze", 0),
        ("freeze", 2),
    ]
    assert gate.path(jobs[3]) == str(ready) and gate.path(jobs[0]) is None
    assert [(j.arm.name, j.seed) for j in gate.waiting[1]] == [("freeze", 1)]
    queue, gate = schedule(spec, tmp_path, jobs, ready)  # one checkpoint for every source seed
    assert not any(isinstance(j, SourceJob) for j in queue) and gate.path(jobs[4]) == str(ready)


def _curves(out: Path) -> dict[str, Any]:
    found = {}
    for npz in sorted(out.glob("*/seed*/curves.npz")):
        with np.load(npz) as data:
            found[str(npz.relative_to(out))] = data["returns"].tolist()
    return found


def _weights(path: Path) -> dict[str, Any]:
    return load_checkpoint(path).state_dict


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny grid with two sources, through the pool (2 workers): its spec and directory."""
    from rltransfer.experiment.run import run_experiment

    root = tmp_path_factory.mktemp("two-sources")
    spec = _write(root, source=_source(seeds=2))
    result, report = run_experiment(spec, out=root / "pool", workers=2, progress=False)
    assert result.complete and len(result.finished) == 4 and report is not None
    return spec, root / "pool"


def test_every_target_seed_fine_tunes_its_own_source(two_sources: tuple[Path, Path]) -> None:
    _, out = two_sources
    assert not (out / "source" / "manifest.json").exists()
    shas = set()
    for seed in (0, 1):
        source = out / "source" / f"seed{seed}"
        assert json.loads((source / "manifest.json").read_text())["seed"] == seed
        lineage = json.loads((out / "freeze" / f"seed{seed}" / "manifest.json").read_text())["source"]
        assert lineage["path"] == str(source / "model.zip") and lineage["manifest"]["seed"] == seed
        shas.add(lineage["zip_sha256"])
    assert len(shas) == 2  # two different policies
    a, b = _weights(out / "source" / "seed0"), _weights(out / "source" / "seed1")
    assert any(not a[k].equal(b[k]) for k in a)


def test_the_report_lists_the_sources_and_says_the_intervals_hold_their_variance(
    two_sources: tuple[Path, Path],
) -> None:
    _, out = two_sources
    text = (out / "report" / "report.md").read_text()
    assert "Source policies" in text and "include the variance of pretraining" in text
    for seed in (0, 1):
        assert f"| {seed} | source/seed{seed}/model.zip |" in text  # from the experiment's directory
    # 128 pretraining steps solve nothing: each source is marked, and the note says what that means
    assert text.count("| NO (475) |") == 2 and "2 of 2 sources did not reach the threshold" in text
    by_source = text.split("## Transfer by source")[1].split("\n## ")[0]
    assert "| arm | source 0 (NOT solved) | source 1 (NOT solved) |" in by_source
    [row] = [line for line in by_source.splitlines() if line.startswith("| freeze |")]
    assert all(cell.strip() for cell in row.split("|")[2:4])  # a gain for each source's run
    assert "| scratch |" not in by_source


def test_by_source_gains_are_each_sources_runs_minus_scratch(two_sources: tuple[Path, Path]) -> None:
    from rltransfer.compare import area_under_curve
    from rltransfer.experiment.collect import collect
    from rltransfer.experiment.report import _by_source_table, load_experiment

    _, out = two_sources
    spec = load_experiment(out)
    data = collect(spec, out)
    table = _by_source_table(spec, data)
    assert table is not None
    scratch = area_under_curve(data.curves["scratch"], data.steps).mean()
    freeze = area_under_curve(data.curves["freeze"], data.steps).mean(axis=1)  # seeds 0, 1 -> sources 0, 1
    [row] = table.rows
    assert [float(c) for c in row[1:]] == pytest.approx(list(freeze - scratch), rel=5e-3, abs=5e-3)


def test_a_source_is_solved_at_its_threshold() -> None:
    from rltransfer.experiment.collect import SourceUse

    assert SourceUse("a", 0, -100.0, -100.0).solved and not SourceUse("a", 0, -100.5, -100.0).solved
    assert SourceUse("plain-sb3.zip", None, None, None).solved is None


def test_one_source_report_says_the_source_is_held_fixed(tmp_path: Path) -> None:
    from rltransfer.experiment.run import run_experiment

    _, report = run_experiment(_write(tmp_path, seeds=1), out=tmp_path / "one", workers=1, progress=False)
    assert report is not None
    text = (report / "report.md").read_text()
    assert "source held fixed; give `source: {seeds: paired}`" in text and "Transfer by source" not in text


def test_serial_and_pool_give_the_same_sources_and_runs(two_sources: tuple[Path, Path], tmp_path: Path) -> None:
    from rltransfer.experiment.run import run_experiment

    spec, pool = two_sources
    result, _ = run_experiment(spec, out=tmp_path / "serial", workers=1, progress=False)
    assert result.complete
    for seed in (0, 1):
        a, b = _weights(pool / "source" / f"seed{seed}"), _weights(tmp_path / "serial" / "source" / f"seed{seed}")
        assert all(a[k].equal(b[k]) for k in a)
    assert _curves(pool) == _curves(tmp_path / "serial")


def test_resume_pretrains_only_the_missing_source_and_redoes_only_its_runs(
    two_sources: tuple[Path, Path], tmp_path: Path
) -> None:
    from rltransfer.experiment.run import run_experiment

    spec, pool = two_sources
    out = tmp_path / "resumed"
    shutil.copytree(pool, out, ignore=shutil.ignore_patterns(".lock"))
    for run in out.glob("*/seed*/manifest.json"):  # the lineage names this directory's sources
        run.write_text(run.read_text().replace(str(pool), str(out)))
    shutil.rmtree(out / "source" / "seed1")
    shutil.rmtree(out / "freeze" / "seed1")
    kept = (out / "source" / "seed0" / "model.zip").stat().st_mtime_ns
    result, _ = run_experiment(spec, out=out, workers=2, progress=False, resume=True)
    assert [(j.arm.name, j.seed) for j in result.finished] == [("freeze", 1)] and len(result.skipped) == 3
    assert (out / "source" / "seed0" / "model.zip").stat().st_mtime_ns == kept
    assert _curves(out) == _curves(pool)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"require_solved": "yes"}, "must be true or false"),
        ({"require_solved": True, "checkpoint": "x.zip"}, "remove it to use source.checkpoint"),
    ],
)
def test_bad_require_solved_is_a_one_line_error(tmp_path: Path, source: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_spec(_write(tmp_path, source=_source(**source)))


def test_require_solved_checks_the_final_evaluation_against_the_threshold(source_dir: Path, tmp_path: Path) -> None:
    spec = parse_spec(grid_spec("a", source=_source(require_solved=True)))
    copy = tmp_path / "source"
    shutil.copytree(source_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for mean_return, solved in ((475.0, True), (474.9, False)):
        manifest["eval"] = {**manifest["eval"], "mean_return": mean_return, "threshold": 475.0}
        (copy / "manifest.json").write_text(json.dumps(manifest))
        if solved:
            check_solved(spec, copy)
        else:
            with pytest.raises(UserError, match=r"returned 474.9 on its own task, below the threshold 475"):
                check_solved(spec, copy)
    check_solved(parse_spec(grid_spec("a")), copy)  # not asked: nothing checked


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_unsolved_source_stops_the_grid_with_one_line(tmp_path: Path, workers: str) -> None:
    spec = _write(tmp_path, source=_source(require_solved=True, seeds="paired"))
    out = tmp_path / "grid"
    proc = run_cli(spec, out, workers)
    assert proc.returncode == 2, proc.stderr
    assert "below the threshold 475 (source.require_solved)" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "freeze").exists()  # no run fine-tuned a failed source
