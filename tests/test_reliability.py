"""Reliability: bad input (one line, exit 2, nothing written), NaN environments, divergence,
write failures, kill -9 of the runner or a worker followed by --resume, determinism."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from specs import HP, grid_spec, start_cli

from rltransfer.cli import main

HP_ARGS = [a for k, v in {**HP, "eval_freq": 32, "eval_episodes": 1}.items() for a in ("--hp", f"{k}={v}")]


def tiny_spec(**changes: Any) -> dict[str, Any]:
    return grid_spec("rel", **changes)


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content hash: the state bad input must not change."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A workspace: a tiny source, a finished experiment, specs good and bad, a corrupt zip."""
    root = tmp_path_factory.mktemp("world")
    from rltransfer.experiment.run import run_experiment

    good = root / "good.yaml"
    good.write_text(yaml.safe_dump(tiny_spec()))
    run_experiment(good, out=root / "exp", workers=1, progress=False)
    other = root / "other.yaml"
    other.write_text(yaml.safe_dump(tiny_spec(name="other", targets=["longer"])))
    bad_zip = root / "bad.zip"
    bad_zip.write_bytes(b"PK\x03\x04 this is not a zip")
    not_model = root / "notmodel.zip"
    with zipfile.ZipFile(not_model, "w") as z:
        z.writestr("readme.txt", "hello")
    (root / "file").write_text("a regular file")
    from rltransfer.pretraining import pretrain

    pretrain("acrobot", seed=0, timesteps=64, hyperparams={**HP, "eval_freq": 64, "eval_episodes": 1},
             out=root / "acrobot-src")  # fmt: skip
    from stable_baselines3 import PPO

    # A plain SB3 zip, as the RL Zoo saves them: no manifest, no source states.
    PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, device="cpu").save(root / "plain.zip")
    (root / "binary.yaml").write_bytes((root / "plain.zip").read_bytes())  # a binary file named as YAML
    return {"root": root, "good": good, "other": other, "exp": root / "exp", "src": root / "exp" / "source"}


def spec_file(root: Path, text: str) -> str:
    path = root / f"spec-{hashlib.sha1(text.encode()).hexdigest()[:8]}.yaml"
    path.write_text(text)
    return str(path)


GOOD_YAML = yaml.safe_dump(tiny_spec(), sort_keys=False)
# (id, argv builder, expected fragment of the one-line error)
CASES: list[tuple[str, Callable[[dict[str, Path]], list[str]], str]] = [
    ("yaml-malformed", lambda w: ["run", spec_file(w["root"], "family: cartpole\ntargets: [long\n")], "malformed YAML"),
    ("yaml-unknown-key", lambda w: ["run", spec_file(w["root"], GOOD_YAML + "sedes: 3\n")], "unknown key 'sedes'"),
    ("yaml-not-mapping", lambda w: ["run", spec_file(w["root"], "- a\n- b\n")], "must be a mapping"),
    ("yaml-missing-file", lambda w: ["run", str(w["root"] / "nope.yaml")], "not found"),
    ("yaml-a-grid-dir", lambda w: ["run", str(w["exp"])], "is a grid's output directory; pass a YAML file"),
    ("yaml-a-zip", lambda w: ["run", str(w["root"] / "plain.zip")], "is not a text file; pass a YAML file"),
    ("report-a-run-dir", lambda w: ["report", str(w["exp"] / "scratch" / "seed0")], "holds no experiment.json; pass its grid, '"),
    ("report-missing-dir", lambda w: ["report", str(w["root"] / "gone")], "does not exist"),
    ("yaml-unknown-family", lambda w: ["run", spec_file(w["root"], GOOD_YAML.replace("cartpole", "cartpol"))],
     "unknown family 'cartpol' (did you mean 'cartpole'?)"),
    ("yaml-unknown-variant", lambda w: ["run", spec_file(w["root"], GOOD_YAML.replace("- long", "- lengthy"))],
     "no variant 'lengthy'"),
    ("yaml-unknown-arm", lambda w: ["run", spec_file(w["root"], GOOD_YAML.replace("- freeze", "- melt"))],
     "unknown strategy 'melt'"),
    ("yaml-param-bounds", lambda w: ["run", spec_file(w["root"], GOOD_YAML.replace("- long", "- {name: x, params: {length: 9}}"))],
     "outside its valid range"),
    ("yaml-zero-budget", lambda w: ["run", spec_file(w["root"], GOOD_YAML.replace("timesteps: 128\neval:", "timesteps: 0\neval:"))],
     "positive integer"),
    ("yaml-negative-seeds", lambda w: ["run", spec_file(w["root"], GOOD_YAML.replace("seeds: 2", "seeds: -1"))],
     "positive integer"),
    ("yaml-unknown-hyperparam", lambda w: ["run", spec_file(w["root"], GOOD_YAML.replace("n_epochs", "n_epochz"))],
     "unknown hyperparameter"),
    ("yaml-missing-checkpoint", lambda w: ["run", spec_file(w["root"], GOOD_YAML.replace("source:\n", f"source:\n  checkpoint: {w['root']}/missing.zip\n"))],
     "does not exist"),
    ("yaml-dann-plain-zip", lambda w: ["run", spec_file(w["root"], GOOD_YAML.replace("source:\n", f"source:\n  checkpoint: {w['root']}/plain.zip\n")
                                                                    .replace("- freeze", "- {name: d, strategy: dann}")), "--out", str(w["root"] / "n8")],
     "dann aligns target features with the source's states"),
    ("yaml-partial-past-trunk", lambda w: ["run", spec_file(w["root"], GOOD_YAML.replace("source:\n", f"source:\n  checkpoint: {w['src']}\n")
                                                                        .replace("- freeze", "- partial:9")), "--out", str(w["root"] / "n7")],
     "only 2 layers"),
    ("run-other-experiment-dir", lambda w: ["run", str(w["other"]), "--out", str(w["exp"]), "--resume"], "different experiment"),
    ("run-finished-without-resume", lambda w: ["run", str(w["good"]), "--out", str(w["exp"])], "--resume"),
    ("run-unwritable-out", lambda w: ["run", str(w["good"]), "--out", str(w["root"] / "file" / "x")], "cannot write"),
    ("run-zero-seeds", lambda w: ["run", str(w["good"]), "--seeds", "0", "--out", str(w["root"] / "n1")], "--seeds"),
    ("run-zero-workers", lambda w: ["run", str(w["good"]), "--workers", "0", "--out", str(w["root"] / "n2")], "--workers"),
    ("pretrain-unknown-family", lambda w: ["pretrain", "--family", "nope", "--out", str(w["root"] / "p1")], "unknown family"),
    ("pretrain-unknown-variant", lambda w: ["pretrain", "--family", "cartpole", "--variant", "x", "--out", str(w["root"] / "p2")],
     "no variant 'x'"),
    ("pretrain-param-bounds", lambda w: ["pretrain", "--family", "cartpole", "--param", "length=99", "--out", str(w["root"] / "p3")],
     "outside its valid range"),
    ("pretrain-unknown-param", lambda w: ["pretrain", "--family", "cartpole", "--param", "mass=1", "--out", str(w["root"] / "p4")],
     "no parameter 'mass'"),
    ("pretrain-zero-timesteps", lambda w: ["pretrain", "--family", "cartpole", "--timesteps", "0", "--out", str(w["root"] / "p5")],
     "positive integer"),
    ("pretrain-negative-seed", lambda w: ["pretrain", "--family", "cartpole", "--seed", "-3", "--timesteps", "64", "--out", str(w["root"] / "p6")],
     "seed"),
    ("pretrain-overwrite-finished", lambda w: ["pretrain", "--family", "cartpole", "--timesteps", "64", "--out", str(w["src"])],
     "already holds a finished run"),
    ("pretrain-unwritable", lambda w: ["pretrain", "--family", "cartpole", "--out", str(w["root"] / "file" / "sub")], "cannot write"),
    ("pretrain-binary-conf-file", lambda w: ["pretrain", "--family", "cartpole", "--conf-file", str(w["root"] / "plain.zip"),
                                             "--out", str(w["root"] / "p9")], "is not a text file; pass an RL Zoo"),
    ("pretrain-binary-family-file", lambda w: ["pretrain", "--family", str(w["root"] / "binary.yaml"), "--out", str(w["root"] / "p10")],
     "is not a text file; pass a YAML file defining a family"),
    ("pretrain-bad-hp-syntax", lambda w: ["pretrain", "--family", "cartpole", "--hp", "n_steps", "--out", str(w["root"] / "p7")],
     "must look like KEY=VALUE"),
    ("pretrain-bad-schedule", lambda w: ["pretrain", "--family", "cartpole", "--hp", "learning_rate=lin_x", "--out", str(w["root"] / "p8")],
     "lin_"),
    ("transfer-missing-zip", lambda w: ["transfer", "--family", "cartpole", "--targets", "long", "--strategy", "freeze",
                                        "--source", str(w["root"] / "none.zip"), "--out", str(w["root"] / "t1")], "does not exist"),
    ("transfer-corrupt-zip", lambda w: ["transfer", "--family", "cartpole", "--targets", "long", "--strategy", "freeze",
                                        "--source", str(w["root"] / "bad.zip"), "--out", str(w["root"] / "t2")], "not a readable SB3 zip"),
    ("transfer-zip-without-policy", lambda w: ["transfer", "--family", "cartpole", "--targets", "long", "--strategy", "freeze",
                                               "--source", str(w["root"] / "notmodel.zip"), "--out", str(w["root"] / "t3")], "policy"),
    ("transfer-space-mismatch", lambda w: ["transfer", "--family", "cartpole", "--targets", "long", "--strategy", "freeze",
                                           "--source", str(w["root"] / "acrobot-src"), *HP_ARGS, "--out", str(w["root"] / "t4")],
     "observation space Box(6,) cannot map onto the targets' Box(4,)"),
    ("transfer-action-mismatch", lambda w: ["transfer", "--family", "cartpole", "--targets", "long", "--strategy", "freeze",
                                            "--transfer", "heads", "--option", "layer_map={skip: [features_extractor.trunk.0.*]}",
                                            "--source", str(w["root"] / "acrobot-src"), *HP_ARGS, "--out", str(w["root"] / "t5")],
     "action space Discrete(3) cannot map onto the targets' Discrete(2)"),
    ("transfer-unknown-strategy", lambda w: ["transfer", "--family", "cartpole", "--targets", "long", "--strategy", "melt",
                                             "--out", str(w["root"] / "t6")], "unknown strategy"),
    ("transfer-bad-partial", lambda w: ["transfer", "--family", "cartpole", "--targets", "long", "--strategy", "partial:9",
                                        "--source", str(w["src"]), *HP_ARGS, "--out", str(w["root"] / "t7")], "only 2 layers"),
    ("transfer-unknown-target", lambda w: ["transfer", "--family", "cartpole", "--targets", "long,nope", "--strategy", "scratch",
                                           "--out", str(w["root"] / "t8")], "no variant 'nope'"),
    ("transfer-no-source", lambda w: ["transfer", "--family", "cartpole", "--targets", "long", "--strategy", "finetune",
                                      "--out", str(w["root"] / "t9")], "--source"),
    ("yaml-bad-device", lambda w: ["run", spec_file(w["root"], GOOD_YAML + "device: gpu\n"), "--out", str(w["root"] / "n3")],
     "not a torch device"),
    ("run-bad-device", lambda w: ["run", str(w["good"]), "--device", "gpu", "--out", str(w["root"] / "n4")], "not a torch device"),
    ("run-missing-gpu", lambda w: ["run", str(w["good"]), "--device", "cuda:99", "--out", str(w["root"] / "n5")], "--device cuda:99"),
    ("run-ray-gpu-unreserved", lambda w: ["run", str(w["good"]), "--backend", "ray", "--device", "cuda", "--out", str(w["root"] / "n6")],
     "--gpus-per-run > 0"),
    ("pretrain-missing-gpu", lambda w: ["pretrain", "--family", "cartpole", "--device", "cuda:99", "--out", str(w["root"] / "p9")],
     "--device cuda:99"),
    ("transfer-bad-device", lambda w: ["transfer", "--family", "cartpole", "--targets", "long", "--strategy", "scratch",
                                       "--device", "gpu", "--out", str(w["root"] / "t10")], "not a torch device"),
    ("report-not-an-experiment", lambda w: ["report", str(w["root"])], "holds no experiment.json"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "fragment"), [pytest.param(a, f, id=i) for i, a, f in CASES])
def test_bad_input_one_line_exit_2_nothing_written(
    world: dict[str, Path],
    argv: Callable[[dict[str, Path]], list[str]],
    fragment: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(world["root"])  # a default --out lands inside the checked tree
    args = argv(world)
    assert all(
        s in GOOD_YAML for s in ("timesteps: 128\neval:", "seeds: 2", "- long", "- freeze", "n_epochs", "source:\n")
    )
    before = tree(world["root"])
    assert main([*args, "--quiet"] if args[0] in ("run", "pretrain", "transfer") else args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("rltransfer: error: ") and fragment in err[0], err[0]
    after = tree(world["root"])
    created = {k for k in set(after) - set(before) if not k.startswith("spec-")}
    assert not created, f"bad input wrote files: {sorted(created)}"
    assert {k: v for k, v in after.items() if k in before} == before, "bad input changed existing files"


@pytest.mark.parametrize(
    ("damage", "fragment", "text"),
    [
        ("freeze/seed0/manifest.json", "manifest.json' is damaged (not valid JSON", "{truncated"),
        ("freeze/seed0/manifest.json", "manifest.json' is damaged (it records no kind or hyperparams)", "{}"),
        ("freeze/seed0/curves.npz", "curves.npz' is missing or damaged (ValueError)", "{truncated"),
        ("experiment.json", "experiment.json' is damaged (not valid JSON", "{truncated"),
    ],
)
def test_a_damaged_run_file_is_one_line_naming_it(
    world: dict[str, Path], tmp_path: Path, damage: str, fragment: str, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated or hand-edited file of a finished grid: `report` names it and how to redo it."""
    exp = tmp_path / "exp"
    shutil.copytree(world["exp"], exp)
    (exp / damage).write_text(text)
    assert main(["report", str(exp)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert ("rerun with --resume to redo it" in err[0]) == damage.startswith("freeze/")


def test_at_least_25_bad_input_cases() -> None:
    assert len(CASES) >= 25


def test_nan_environment_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from stable_baselines3.common.vec_env import VecEnvWrapper

    from rltransfer import pretraining

    class NanAfter(VecEnvWrapper):
        """An environment that starts returning NaN observations after 10 steps."""

        steps = 0

        def reset(self) -> Any:
            return self.venv.reset()

        def step_wait(self) -> Any:
            obs, rewards, dones, infos = self.venv.step_wait()
            self.steps += 1
            return (obs * np.nan if self.steps > 10 else obs), rewards, dones, infos

    real = pretraining.make_task_vec_env
    monkeypatch.setattr(pretraining, "make_task_vec_env", lambda *a, **k: NanAfter(real(*a, **k)))
    out = tmp_path / "nan"
    argv = ["pretrain", "--family", "cartpole", "--timesteps", "128", *HP_ARGS, "--out", str(out), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite observation" in err[0] and "cartpole: source" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_divergence_stops_with_step_and_is_recorded_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from rltransfer.experiment.run import run_experiment
    from rltransfer.ppo import TransferPPO

    real_train = TransferPPO.train

    def poisoned(self: TransferPPO) -> None:
        real_train(self)
        if self.policy.features_extractor.trunk[0].weight.requires_grad:  # type: ignore[index]
            with torch.no_grad():
                next(self.policy.parameters()).fill_(float("nan"))

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(timesteps=256)))
    run_experiment(spec, out=tmp_path / "e", workers=1, progress=False, seeds=1)  # source and grid, unpoisoned
    import shutil

    shutil.rmtree(tmp_path / "e" / "scratch" / "seed0")
    monkeypatch.setattr(TransferPPO, "train", poisoned)
    result, _ = run_experiment(spec, out=tmp_path / "e", workers=1, progress=False, seeds=1, resume=True)
    assert [j.label for j, _ in result.failed] == [str(tmp_path / "e" / "scratch" / "seed0")]
    tb = result.failed[0][1]
    assert "DivergenceError: training diverged at step" in tb and "non-finite parameters" in tb
    assert (tmp_path / "e" / "freeze" / "seed0" / "manifest.json").exists()  # the other run is untouched


# --- kill -9 and resume ------------------------------------------------------------------------


REPORT_FILES = ("report.md", "scores.csv", "summary.json")


def _report(out: Path) -> dict[str, str]:
    files = {n: (out / "report" / n).read_text() for n in REPORT_FILES}
    with np.load(out / "report" / "curves.npz") as data:
        files["curves"] = json.dumps({k: data[k].tolist() for k in sorted(data.files)})
    return files


def _runs(out: Path) -> dict[str, bytes]:
    """Finished runs' curves (not a killed run's staging directory, ``seedN.partial-*``, which resume removes)."""
    curves = sorted(out.glob("*/seed*/curves.npz"))
    return {str(p.relative_to(out)): p.read_bytes() for p in curves if ".partial" not in p.parent.name}


@pytest.fixture(scope="module")
def kill_spec(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    """The spec, an uninterrupted reference run of it, and how long that run took."""
    root = tmp_path_factory.mktemp("kill")
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(seeds=3, arms=["scratch", "freeze", "finetune"])))
    started = time.time()
    proc = start_cli(["run", str(spec), "--out", str(root / "ref"), "--workers", "2", "--quiet"])
    assert proc.wait(timeout=300) == 0, proc.stderr.read() if proc.stderr else ""
    return spec, root / "ref", time.time() - started


@pytest.mark.parametrize("trial", range(1))  # kills at set points: test_snapshot, the worker tests below
def test_kill_runner_then_resume_matches_uninterrupted(
    kill_spec: tuple[Path, Path, float], tmp_path: Path, trial: int
) -> None:
    spec, ref, duration = kill_spec
    out = tmp_path / "run"
    proc = start_cli(["run", str(spec), "--out", str(out), "--workers", "2", "--quiet"], start_new_session=True)
    time.sleep(random.Random(trial).uniform(0.5, max(1.0, 0.9 * duration)))
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its workers, as a crash or OOM would
    proc.wait()
    kept = {k: v for k, v in _runs(out).items()}  # finished before the kill
    resume = start_cli(["run", str(spec), "--out", str(out), "--workers", "2", "--resume", "--quiet"])
    assert resume.wait(timeout=300) == 0, resume.stderr.read() if resume.stderr else ""
    after = _runs(out)
    assert {k: after[k] for k in kept} == kept, "a finished run changed on resume"
    assert after == _runs(ref)
    assert _report(out) == _report(ref)
    assert not list(out.glob("*/seed*.partial*")) and not list(out.glob("*/seed*.failed.json"))


def _kill_when(proc: subprocess.Popen[bytes], find: Callable[[], list[int]]) -> int | None:
    """SIGKILL the first process ``find`` names while ``proc`` runs (polled for up to 2 minutes); its pid."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        pids = find()
        if pids:
            try:
                os.kill(pids[0], signal.SIGKILL)
                return pids[0]
            except ProcessLookupError:  # it ended between the look and the kill: find another
                continue
        time.sleep(0.02)
    return None


def test_killed_workers_are_retried_and_grid_completes(kill_spec: tuple[Path, Path, float], tmp_path: Path) -> None:
    """A worker killed while it pretrains the source (beside the scratch runs), then one killed while it
    trains a run: each broken pool is replaced and the jobs in flight retried; the grid equals the
    uninterrupted one."""
    spec, ref, _ = kill_spec
    out = tmp_path / "run"
    proc = start_cli(["run", str(spec), "--out", str(out), "--workers", "2", "--quiet"])
    killed: list[int] = []

    def workers_staging(pattern: str) -> list[int]:
        """Live workers with a staging directory matching ``pattern`` (named after the worker's pid)."""
        pids = {int(p.name.split(".partial-")[1].split("-")[0]) for p in out.glob(pattern)}
        return [pid for pid in sorted(pids) if pid != proc.pid and pid not in killed and Path(f"/proc/{pid}").exists()]

    for pattern, what in (("source.partial-*", "pretraining the source"), ("*/seed*.partial-*", "training a run")):
        pid = _kill_when(proc, lambda pattern=pattern: workers_staging(pattern))
        assert pid is not None, f"no worker was seen {what}"
        killed.append(pid)
    assert proc.wait(timeout=300) == 0, proc.stderr.read() if proc.stderr else ""
    assert _runs(out) == _runs(ref)
    assert _report(out) == _report(ref)
    assert not list(out.glob("source.partial-*"))


def finish_then_die(job: Any, spec: Any, source: str | None) -> dict[str, Any]:
    """A pool worker's run that dies once, after its run directory was renamed into place but before
    returning (module level: spawned workers import it by name)."""
    from rltransfer.experiment.runner import execute_job

    outcome = execute_job(job, spec, source)
    marker = job.run_dir.with_name("died-once")
    if (job.arm.name, job.seed) == ("freeze", 0) and not marker.exists():
        marker.touch()
        os._exit(1)
    return outcome


def test_a_worker_dying_after_its_run_finished_counts_the_run(
    kill_spec: tuple[Path, Path, float], tmp_path: Path
) -> None:
    """The retry would refuse to replace the finished run ('already holds a finished run'): the pool
    counts it instead, and the grid completes with the reference's runs."""
    from rltransfer.experiment.pool import Grid, run_grids
    from rltransfer.experiment.runner import prepare_out
    from rltransfer.experiment.spec import load_spec

    spec_path, ref, _ = kill_spec
    spec, out = load_spec(spec_path), tmp_path / "run"
    prepare_out(spec, out, resume=False)
    grid = Grid(spec, out, ref / "source")
    run_grids([grid], workers=2, execute=finish_then_die)
    assert (out / "freeze" / "died-once").exists()
    assert grid.gate.error is None and not grid.result.failed and grid.result.complete
    assert _runs(out) == _runs(ref)


def test_a_pool_found_broken_when_submitting_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker can die between two waits, after the last future came back well: the next ``submit``
    then raises ``BrokenProcessPool`` itself. The job goes back to the queue and a new pool runs it."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from rltransfer.experiment import pool
    from rltransfer.experiment.runner import prepare_out
    from rltransfer.experiment.spec import load_spec

    submitted = [0]

    class BreaksOnce(ProcessPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            submitted[0] += 1
            if submitted[0] == 2:  # the first run is in flight
                raise BrokenProcessPool("a child process terminated abruptly")
            return super().submit(fn, *args, **kwargs)

    spec_path = tmp_path / "spec.yaml"  # four scratch runs (no source: no run fine-tunes one)
    spec_path.write_text(yaml.safe_dump(tiny_spec(arms=["scratch"], seeds=4)))
    spec, grids = load_spec(spec_path), []
    for name in ("ref", "run"):
        prepare_out(spec, tmp_path / name, resume=False)
        grids.append(pool.Grid(spec, tmp_path / name, None))
    pool.run_grids(grids[:1], workers=1)  # the reference, in this process
    monkeypatch.setattr(pool, "ProcessPoolExecutor", BreaksOnce)
    pool.run_grids(grids[1:], workers=2)
    assert submitted[0] == 5 and not grids[1].result.failed and grids[1].result.complete
    assert _runs(tmp_path / "run") == _runs(tmp_path / "ref") != {}


def test_two_runners_on_one_directory_are_refused(kill_spec: tuple[Path, Path, float], tmp_path: Path) -> None:
    spec, _, _ = kill_spec
    out = tmp_path / "run"
    first = start_cli(["run", str(spec), "--out", str(out), "--workers", "1", "--quiet"])
    deadline = time.time() + 60
    while not (out / ".lock").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    second = start_cli(["run", str(spec), "--out", str(out), "--workers", "1", "--resume", "--quiet"])
    assert second.wait(timeout=60) == 2
    assert second.stderr is not None and b"in use by pid" in second.stderr.read()
    first.kill()
    first.wait()


def test_a_run_finished_meanwhile_by_another_process_is_kept(tmp_path: Path) -> None:
    """Two commands writing one --out: the second to finish gets one line, and the first's run stays."""
    from rltransfer.errors import UserError
    from rltransfer.io import staging_dir

    final = tmp_path / "run"
    refused = pytest.raises(UserError, match="was finished by another process while this run trained")
    with refused, staging_dir(final) as staging:
        (staging / "manifest.json").write_text("mine")
        final.mkdir()  # the other process's rename lands first
        (final / "manifest.json").write_text("theirs")
    assert (final / "manifest.json").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging directory left behind
