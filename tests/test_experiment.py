"""Experiment specs, the grid runner, resume, determinism and the report, at tiny budgets."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from specs import HP, grid_spec
from torch.backends.cpu import get_cpu_capability

from rltransfer.devices import cpu_model
from rltransfer.errors import UserError
from rltransfer.experiment.report import build_report
from rltransfer.experiment.run import run_experiment
from rltransfer.experiment.spec import load_spec, parse_spec


def tiny_spec(**changes: Any) -> dict[str, Any]:
    """The shared tiny grid with two targets (one custom) and four arms."""
    base = {
        "source": {"timesteps": 256, "hyperparams": HP},
        "targets": ["long", {"name": "mine", "params": {"length": 0.9}}],
        "arms": ["scratch", "zero-shot", "freeze", {"name": "ft-heads", "strategy": "finetune", "transfer": "heads"}],
        "timesteps": 192,
    }
    return grid_spec("tiny", **{**base, **changes})


def write(tmp_path: Path, spec: dict[str, Any], name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_shipped_specs_parse() -> None:
    for path in sorted(Path("experiments").glob("*.yaml")):
        spec = load_spec(path)
        assert "scratch" in [a.name for a in spec.arms], path


def test_unknown_key_names_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("family: cartpole\ntargets: [long]\narms: [scratch]\nsedes: 3\n")
    with pytest.raises(UserError, match=r"bad.yaml:4: unknown key 'sedes' \(did you mean 'seeds'\?\); allowed: "):
        load_spec(path)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "arms: [scratch, freeze]\ntargets: [long]\narms: [scratch]\n",
            ":4: key 'arms' is given twice (also on line 2)",
        ),
        (
            "arms: [scratch]\ntargets: [long]\neval:\n  freq: 64\n  freq: 128\n",
            ":6: key 'eval.freq' is given twice (also on line 5)",
        ),
    ],
)
def test_a_key_given_twice_is_refused_not_overwritten(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text("family: cartpole\n" + text)
    with pytest.raises(UserError, match=re.escape(f"{path}{says}; keep one")):
        load_spec(path)


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("family: cartpole\ntargets: [long\narms: [scratch]\n")
    with pytest.raises(UserError, match=r"bad.yaml:\d+: malformed YAML"):
        load_spec(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"family": "nope"}, "unknown family 'nope'"),
        ({"seeds": []}, r"seeds is an empty list; give a count \(3\) or seeds \(\[0, 1, 2\]\)"),
        ({"targets": ["nope"]}, "no variant 'nope'"),
        ({"targets": [{"name": "x", "params": {"length": 99}}]}, "outside its valid range"),
        ({"targets": [{"length": 99}]}, "outside its valid range"),
        ({"targets": [{"nmae": 0.5}]}, "has no parameter 'nmae'; known"),
        ({"targets": [{"lenght": 0.9}]}, r"has no parameter 'lenght' \(did you mean 'length'\?\); known"),
        (
            {"targets": [{"name": "x", "prams": {}}]},
            r"^spec: unknown key 'prams' in targets.0 \(did you mean 'params'\?\); allowed",
        ),
        ({"targets": [3]}, r"target 3 is not a variant name, \{param: value\} or \{name, params\}"),
        ({"targets": [{}]}, "target {} is not a variant name"),
        ({"targets": [{"family": "acrobot"}]}, "names no variant; add variant: NAME"),
        ({"targets": [{"family": "acrobot", "variant": "long1", "params": {}}]}, "variant .* or params .*, not both"),
        ({"targets": [{"family": "nope", "variant": "x"}]}, r"^spec: unknown family 'nope'"),
        (
            {"source": {"variant": "long", "params": {"length": 0.9}}},
            "the source takes variant .* or params .*, not both",
        ),
        ({"arms": ["scratch", "warp"]}, "unknown strategy 'warp'"),
        ({"arms": ["freeze"]}, "must include 'scratch'"),
        ({"arms": ["scratch", "freeze", "freeze"]}, "distinct"),
        ({"seeds": 0}, "positive integer"),
        ({"seeds": [-1]}, "non-negative"),
        ({"timesteps": -5}, "positive integer"),
        ({"eval": {"freq": 0}}, "positive integer"),
        ({"eval": {"every": 10}}, "unknown key 'every'"),
        ({"mode": "both"}, "mode 'both' unknown"),
        ({"thresholds": {"nope": 1}}, "unknown key 'nope'"),
        ({"thresholds": {"long": "abc"}}, "'thresholds.long' must be a number"),
        ({"source": {"timesteps": 256, "hyperparams": {"gamma": 2}}}, r"gamma must lie in \(0, 1\]"),
        ({"source": {"timesteps": 256, "hyperparams": [1]}}, "'source.hyperparams' must be a mapping"),
        (
            {"hyperparams": {"n_stepz": 3}},
            "unknown hyperparameter 'n_stepz' \\(did you mean 'n_steps'\\?\\); use a PPO argument",
        ),
        ({"arms": ["scratch", {"strategy": "partial:x"}]}, "partial:N"),
        ({"name": ".."}, "start with neither '.' nor '-'"),  # runs/.. is the working directory
        ({"name": ".hidden"}, "start with neither '.' nor '-'"),
        ({"name": "a/b"}, "may hold only letters"),
        ({"targets": [{"name": "..", "params": {"length": 0.9}}]}, "variant name '..' may hold only letters"),
        ({"targets": [{"name": "a/b", "params": {"length": 0.9}}]}, "variant name 'a/b' may hold only letters"),
        (
            {"hyperparams": {**HP, "n_timesteps": 1000}},
            r"^spec: 'timesteps' \(192\) and 'hyperparams.n_timesteps' \(1000\) both set it; keep one",
        ),
        ({"hyperparams": {**HP, "eval_freq": 128}}, r"'eval.freq' \(64\) and 'hyperparams.eval_freq' \(128\)"),
        (
            {"source": {"timesteps": 256, "hyperparams": {**HP, "n_timesteps": 512}}},
            r"'source.timesteps' \(256\) and 'source.hyperparams.n_timesteps' \(512\) both set it",
        ),
    ],
)
def test_bad_specs(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_spec(tiny_spec(**changes))


def test_a_target_by_its_values_alone(tmp_path: Path) -> None:
    """As --targets takes them: {length: 0.9} is a custom target named by its position."""
    spec = parse_spec(tiny_spec(targets=["long", {"length": 0.9}]))
    assert [(t.variant.name, dict(t.variant.params)) for t in spec.targets][1] == ("custom1", {"length": 0.9})


def test_grid_runs_reports_and_resumes(tmp_path: Path) -> None:
    spec_path = write(tmp_path, tiny_spec())
    out = tmp_path / "exp"
    result, report = run_experiment(spec_path, out=out, workers=1, progress=False)
    assert result.complete and len(result.finished) == 8
    assert report is not None
    for name in ("report.md", "report.html", "scores.csv", "curves.npz", "summary.json"):
        assert (report / name).exists(), name
    assert (out / "experiment.json").exists() and (out / "source" / "model.zip").exists()
    run = out / "freeze" / "seed1"
    for name in ("model.zip", "manifest.json", "config.json", "curves.npz", "transfer_report.json"):
        assert (run / name).exists(), name
    assert list((run / "logs").glob("events.out.tfevents.*"))
    assert list((out / "_layout").glob("events.out.tfevents.*"))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["source"]["zip_sha256"] == json.loads((out / "source" / "manifest.json").read_text())["zip_sha256"]
    assert manifest["forgetting"] is not None and manifest["forgetting"]["drop"] == 0.0  # frozen trunk
    assert manifest["device"] == {"type": "cpu", "name": "cpu", "cpu": cpu_model(), "isa": get_cpu_capability()}
    md = (report / "report.md").read_text()
    assert "## long" in md and "## mine" in md and "Source-task forgetting" in md
    assert "| targets | long (near), mine (custom: length=0.9) |" in md
    assert (
        json.loads((report / "summary.json").read_text())["meta"]["trained on"]
        == f"cpu ({cpu_model()}, {get_cpu_capability()}) (8 runs)"
    )
    # A grid resumed on another device says so in its report.
    on_gpu = {**manifest, "device": {"type": "cuda", "name": "cuda", "gpu": "NVIDIA H100", "cuda": "12.8"}}
    (run / "manifest.json").write_text(json.dumps(on_gpu))
    meta = json.loads((build_report(out) / "summary.json").read_text())["meta"]
    assert meta["trained on"] == f"cpu ({cpu_model()}, {get_cpu_capability()}) (7 runs), cuda (NVIDIA H100) (1 run)"
    assert meta["target budget (env steps)"] == 192  # 3 rollouts of 2 tasks x 32 steps: exactly the budget
    assert meta["evaluation"] == "every 64 steps, 4 per run; 2 deterministic episodes per task"
    coarse = replace(load_spec(spec_path), eval_freq=192)  # a curve of its two ends, read from the same runs
    assert json.loads((build_report(out, coarse) / "summary.json").read_text())["meta"]["evaluation"] == (
        "every 192 steps, 2 per run (start and end only: eval.freq is not below the budget); "
        "2 deterministic episodes per task"
    )
    # A budget that is no multiple of a rollout is exceeded by whole rollouts: the report says by how much.
    (run / "manifest.json").write_text(json.dumps({**manifest, "timesteps": 256}))
    meta = json.loads((build_report(out) / "summary.json").read_text())["meta"]
    assert meta["target budget (env steps)"] == "192 (runs trained 192 to 256: PPO collects whole rollouts)"
    (run / "manifest.json").write_text(json.dumps(manifest))
    with np.load(report / "curves.npz") as data:
        assert data["scratch"].shape == (2, 2, len(data["steps"]))
        assert data["zero-shot"].shape == data["scratch"].shape

    # Without --resume the directory is refused; with it, finished runs are kept untouched.
    with pytest.raises(UserError, match="--resume"):
        run_experiment(spec_path, out=out, workers=1, progress=False)
    before = (run / "model.zip").stat().st_mtime_ns
    result2, _ = run_experiment(spec_path, out=out, workers=1, progress=False, resume=True)
    assert len(result2.skipped) == 8 and not result2.finished
    assert (run / "model.zip").stat().st_mtime_ns == before

    # An unfinished run (directory gone) is redone; more seeds extend the grid.
    import shutil

    shutil.rmtree(out / "scratch" / "seed0")
    result3, _ = run_experiment(spec_path, out=out, workers=1, progress=False, resume=True, seeds=3)
    assert {(j.arm.name, j.seed) for j in result3.finished} == {("scratch", 0)} | {
        (a, 2) for a in ("scratch", "zero-shot", "freeze", "ft-heads")
    }

    # Another experiment's directory is refused.
    other = write(tmp_path, tiny_spec(targets=["long"]), "other.yaml")
    with pytest.raises(UserError, match="different experiment"):
        run_experiment(other, out=out, workers=1, progress=False, resume=True)

    # The report can be rebuilt from the directory alone.
    assert build_report(out) == report


def test_parallel_workers_match_serial(tmp_path: Path) -> None:
    """Same spec and seeds: bit-identical curves from 1 worker and from 2 worker processes."""
    spec = tiny_spec(arms=["scratch", "freeze"], targets=["long"])
    serial, _ = run_experiment(write(tmp_path, spec), out=tmp_path / "a", workers=1, progress=False)
    parallel, _ = run_experiment(write(tmp_path, spec), out=tmp_path / "b", workers=2, progress=False)
    assert serial.complete and parallel.complete
    for arm in ("scratch", "freeze"):
        for seed in (0, 1):
            with (
                np.load(tmp_path / "a" / arm / f"seed{seed}" / "curves.npz") as a,
                np.load(tmp_path / "b" / arm / f"seed{seed}" / "curves.npz") as b,
            ):
                np.testing.assert_array_equal(a["returns"], b["returns"])
                np.testing.assert_array_equal(a["steps"], b["steps"])
    assert (tmp_path / "a" / "report" / "scores.csv").read_text() == (
        tmp_path / "b" / "report" / "scores.csv"
    ).read_text()


def test_per_target_mode(tmp_path: Path) -> None:
    spec = tiny_spec(arms=["scratch", "freeze"], seeds=1, mode="per-target")
    result, report = run_experiment(write(tmp_path, spec), out=tmp_path / "pt", workers=1, progress=False)
    assert result.complete and len(result.finished) == 4
    assert (tmp_path / "pt" / "freeze" / "seed0" / "mine" / "model.zip").exists()
    with np.load(report / "curves.npz") as data:  # type: ignore[operator]
        assert data["freeze"].shape[:2] == (1, 2)


def test_failed_run_is_recorded_and_grid_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rltransfer.experiment import pool, runner

    real = runner.execute_job

    def flaky(job: runner.Job, spec: Any, source: str | None) -> dict[str, Any]:
        if job.arm.name == "freeze" and job.seed == 1:
            return {"ok": False, "traceback": "Traceback...\nRuntimeError: boom"}
        return real(job, spec, source)

    monkeypatch.setattr(pool, "execute_job", flaky)
    spec = tiny_spec(arms=["scratch", "freeze"], targets=["long"])
    result, report = run_experiment(write(tmp_path, spec), out=tmp_path / "f", workers=1, progress=False)
    assert not result.complete and len(result.failed) == 1
    marker = tmp_path / "f" / "freeze" / "seed1.failed.json"
    assert "boom" in json.loads(marker.read_text())["traceback"]
    assert report is not None and "FAILED" in (report / "report.md").read_text()


def test_arms_with_different_env_counts_are_read_on_one_grid() -> None:
    """Rehearsal adds envs, so evaluations land on other env steps: both map to the nominal grid."""
    from rltransfer.experiment.collect import nominal_grid, on_grid

    grid = nominal_grid(100, 30)
    assert grid.tolist() == [0, 30, 60, 90, 100]
    returns = np.arange(6.0)[None]  # one task
    a = on_grid(np.array([0, 32, 64, 96, 128, 130]), returns, grid)
    b = on_grid(np.array([0, 30, 60, 90, 100]), returns[:, :5], grid)
    assert a.tolist() == [[0, 1, 2, 3, 4]] and b.tolist() == [[0, 1, 2, 3, 4]]
    assert on_grid(np.array([0]), np.array([[7.0]]), grid).tolist() == [[7.0] * 5]  # zero-shot


def test_spec_differences_name_each_changed_value_by_its_key_path() -> None:
    from rltransfer.experiment.spec_diff import spec_differences

    recorded = {"name": "a", "seeds": 3, "hyperparams": {"n_steps": 64, "gamma": 0.99}, "targets": ["long"]}
    raw = {"name": "a", "seeds": 5, "hyperparams": {"n_steps": 32, "ent_coef": 0.01}, "targets": ("long",)}
    assert spec_differences(recorded, raw, skip=("seeds",)) == [
        "hyperparams.ent_coef: (absent) -> 0.01",
        "hyperparams.gamma: 0.99 -> (absent)",
        "hyperparams.n_steps: 64 -> 32",
    ]
    assert spec_differences(recorded, {**recorded, "seeds": 9}, skip=("seeds",)) == []


def test_finished_runs_of_seeds_left_out_are_named_in_the_report(tmp_path: Path) -> None:
    out = tmp_path / "grid"
    run_experiment(grid_spec("fewer", seeds=2), out=out, workers=1, progress=False)
    _, report = run_experiment(grid_spec("fewer", seeds=1), out=out, workers=1, progress=False, resume=True)
    text = (report / "report.md").read_text()
    assert "| not reported: finished runs of other seeds | seed 1 (2 runs); `rltransfer run SPEC --resume`" in text
    assert "| arms | scratch (1 seed), freeze (1 seed) |" in text


def test_a_setting_given_twice_with_one_value_is_fine() -> None:
    spec = parse_spec(tiny_spec(hyperparams={**HP, "n_timesteps": 192, "eval_freq": 64}))
    assert spec.timesteps == 192 and spec.eval_freq == 64
