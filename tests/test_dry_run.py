"""``rltransfer run --dry-run``: what the same command would train, keep and resume, with nothing written."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from specs import grid_spec

from rltransfer.cli import main
from rltransfer.experiment.plan import plan_experiments
from rltransfer.experiment.run import run_experiment
from rltransfer.experiment.runner import LOCK_FILE
from rltransfer.io import SNAPSHOT_FILE, exclusive_lock


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(grid_spec("plan", arms=["scratch", "freeze", "zero-shot"])))
    return path


def test_a_new_experiment_is_planned_and_nothing_written(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = listing(tmp_path)
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "plan -> " in printed and "(new; multitask on long)" in printed
    assert "sources: 1 to pretrain (seeds 0; 128 steps each)" in printed
    assert "scratch    scratch      2 to run; 128 steps each" in printed
    assert "zero-shot  zero-shot    2 to run; evaluated only" in printed
    assert "640 env steps to train in all" in printed  # 128 (source) + 4 training runs x 128
    assert "  evaluation: every 64 steps, 3 per run; 2 deterministic episodes per task" in printed  # 0, 64, 128
    assert listing(tmp_path) == before


def test_a_resumed_experiment_says_what_is_kept_redone_and_resumed(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    run_experiment(spec, out=out, workers=1, progress=False)
    shutil.rmtree(out / "scratch" / "seed1")  # failed: its marker stays until the resume redoes it
    (out / "scratch" / "seed1.failed.json").write_text("{}")
    shutil.rmtree(out / "freeze" / "seed1")  # killed mid-run: its staging directory holds a snapshot
    staging = out / "freeze" / f"seed1.partial-{os.getpid()}-x"
    staging.mkdir()
    (staging / SNAPSHOT_FILE).write_bytes(b"")

    before = listing(tmp_path)
    assert main(["run", str(spec), "--out", str(out), "--dry-run"]) == 2  # as the run itself: --resume needed
    assert "pass --resume to continue it" in capsys.readouterr().err
    assert main(["run", str(spec), "--out", str(out), "--dry-run", "--resume", "--seeds", "3"]) == 0
    printed = capsys.readouterr().out
    assert "(resumed; multitask on long)" in printed
    assert "sources: 1 kept (seeds 0; 128 steps each)" in printed  # one source serves every seed
    assert "scratch    scratch      1 to run, 1 redone, 1 kept" in printed
    assert "freeze     freeze       1 to run, 1 resumes, 1 kept" in printed
    assert "zero-shot  zero-shot    1 to run, 2 kept; evaluated only" in printed
    assert "512 env steps to train in all" in printed  # a resumed run counted whole
    assert listing(tmp_path) == before

    # What the run then does is what the plan said (the fake snapshot removed: that run starts over).
    shutil.rmtree(staging)
    (plan,), _ = plan_experiments([spec], [out], seeds=3, resume=True)
    todo = {job.run_dir for job, status in plan.runs if status != "kept"}
    result, _ = run_experiment(spec, out=out, seeds=3, workers=1, resume=True, progress=False)
    assert {job.run_dir for job in result.finished} == todo
    assert {job.run_dir for job in result.skipped} == {job.run_dir for job, s in plan.runs if s == "kept"}


def test_a_grid_in_progress_shows_its_progress(spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Another runner holds the directory and builds a run: the dry run says so, and that run is in progress."""
    out = tmp_path / "out"
    run_experiment(spec, out=out, workers=1, progress=False)
    shutil.rmtree(out / "freeze" / "seed1")
    (out / "freeze" / f"seed1.partial-{os.getppid()}-x").mkdir()  # a live process (pytest's parent) builds it
    with exclusive_lock(out / LOCK_FILE, "out"):  # the other runner (a second open file: flock conflicts)
        before = listing(tmp_path)
        assert main(["run", str(spec), "--out", str(out), "--dry-run", "--resume"]) == 0
        assert listing(tmp_path) == before
    printed = capsys.readouterr().out
    assert f"(in progress under pid {os.getpid()};" in printed
    assert "freeze     freeze       1 in progress, 1 kept" in printed
    assert f"{out} is in use by pid {os.getpid()}: run refuses it until that ends." in printed


def test_reporting_a_grid_with_nothing_finished_names_its_runner(spec: Path, tmp_path: Path) -> None:
    from rltransfer.errors import UserError
    from rltransfer.experiment.generalization import generalize
    from rltransfer.experiment.report import build_report

    out = tmp_path / "out"
    run_experiment(spec, out=out, workers=1, progress=False)
    for arm in ("scratch", "freeze", "zero-shot"):
        shutil.rmtree(out / arm)
    with pytest.raises(UserError, match=r"run `rltransfer run SPEC --out .* --resume`"):
        build_report(out)
    with exclusive_lock(out / LOCK_FILE, "out"), pytest.raises(UserError) as caught:  # a runner at work there
        build_report(out)
    with exclusive_lock(out / LOCK_FILE, "out"), pytest.raises(UserError, match="running its grid"):
        generalize(out)
    assert str(caught.value).endswith(f"yet; pid {os.getpid()} is running its grid: try again once runs finish")


def test_the_plan_counts_the_whole_rollouts_ppo_takes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """100 steps are 4 rollouts of 32 (one env): 128; two targets make a rollout of 64 (100 -> 128); a
    rehearsing arm trains the source task too, a rollout of 96 (100 -> 192)."""
    path = tmp_path / "spec.yaml"
    arms = ["scratch", {"name": "rehearse", "strategy": "finetune", "rehearse": True}]
    path.write_text(yaml.safe_dump(grid_spec("round", timesteps=100, targets=["long", "longer"], arms=arms)))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "(seeds 0; 128 steps each)" in printed  # the source: an exact budget says nothing more
    assert "scratch   scratch      2 to run; 100 steps each (128 in whole rollouts)" in printed
    assert "rehearse  finetune     2 to run; 100 steps each (192 in whole rollouts)" in printed
    assert "768 env steps to train in all" in printed  # 128 (source) + 2 x 128 + 2 x 192


@pytest.mark.parametrize(
    ("arm", "says"),
    [
        ({"name": "deep", "strategy": "partial:3"}, "arm 'deep': 'partial:3': the trunk has only 2 layers"),
        ("partial:3", "^'partial:3': the trunk has only 2 layers"),
        ({"strategy": "finetune", "trunk_lr_scale": [0.1, 0.5, 1]}, "arm .finetune.: trunk_lr_scale has 3 values"),
    ],
)
def test_arms_counting_past_the_trunk_stop_before_anything_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arm: object, says: str
) -> None:
    """The source is still to pretrain: the spec's trunk decides, not a preflight once it exists."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(grid_spec("deep", arms=["scratch", arm, "partial:2"])))
    for extra in (["--dry-run"], []):
        assert main(["run", str(path), "--out", str(tmp_path / "out"), *extra]) == 2
        assert re.search(says, capsys.readouterr().err.removeprefix("rltransfer: error: "))
    assert not (tmp_path / "out").exists()
