"""The Ray backend: same results as the local pool, resume across backends, task failures and worker
deaths (a real two-node cluster that loses a node: ``test_ray_cluster.py``)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from grid_events import Events, assert_source_beside_scratch
from ray_results import assert_clean, free_port, results, run_locally
from specs import grid_spec

from rltransfer.cli import main
from rltransfer.errors import UserError
from rltransfer.experiment.run import run_experiment
from rltransfer.experiment.runner import Job, execute_job

SPEC: dict[str, Any] = grid_spec("ray")


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


@pytest.fixture(scope="module")
def reference(spec_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_locally(spec_path, tmp_path_factory.mktemp("ref") / "exp")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """One local Ray instance with 2 CPUs for the module (started once: it takes seconds)."""
    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_without_ray_says_how_to_install(
    spec_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["run", str(spec_path), "--backend", "ray", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert 'pip install "rltransfer[ray]"' in one_line_error(capsys)
    assert not (tmp_path / "x").exists()


def test_address_needs_ray_backend(spec_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(spec_path), "--address", "auto", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "--backend ray" in one_line_error(capsys)
    assert not (tmp_path / "x").exists()


def test_unreachable_cluster_is_one_line(spec_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray")
    argv = ["run", str(spec_path), "--backend", "ray", "--address", f"127.0.0.1:{free_port()}"]
    assert main([*argv, "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "cannot reach a Ray cluster" in one_line_error(capsys)
    assert not (tmp_path / "x").exists()


def test_ray_grid_matches_local_backend(local_ray: Any, spec_path: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    result, report = run_experiment(spec_path, out=out, backend="ray", progress=False)
    assert result.complete and len(result.finished) == 4 and report is not None
    assert results(out) == results(reference)
    assert_clean(out)
    manifest = json.loads((out / "freeze" / "seed0" / "manifest.json").read_text())
    assert manifest["source"]["path"] == str(out / "source" / "model.zip")  # the driver's copy, not the worker's
    assert manifest["command"] == sys.argv


def test_ray_pretrains_the_source_beside_scratch_runs(
    local_ray: Any, spec_path: Path, reference: Path, tmp_path: Path
) -> None:
    from rltransfer.experiment.ray_backend import run_grid_ray
    from rltransfer.experiment.runner import prepare_out
    from rltransfer.experiment.spec import load_spec

    spec = load_spec(spec_path)
    out = tmp_path / "exp"
    prepare_out(spec, out, resume=False)
    events = Events()
    result = run_grid_ray(spec, out, None, workers=2, on_event=events)
    assert result.complete and len(result.finished) == 4
    assert_source_beside_scratch(events)
    with zipfile.ZipFile(out / "source" / "model.zip") as a, zipfile.ZipFile(reference / "source" / "model.zip") as b:
        assert a.read("policy.pth") == b.read("policy.pth")


def test_ray_pretrains_one_source_per_source_seed(local_ray: Any, tmp_path: Path) -> None:
    """``source.seeds``: each source a Ray task, each run shipped its own; the same files as locally."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "source": {**SPEC["source"], "seeds": 2}}))
    reference = run_locally(path, tmp_path / "local")
    out = tmp_path / "exp"
    result, _ = run_experiment(path, out=out, backend="ray", progress=False)
    assert result.complete and len(result.finished) == 4
    for seed in (0, 1):
        with (
            zipfile.ZipFile(out / "source" / f"seed{seed}" / "model.zip") as a,
            zipfile.ZipFile(reference / "source" / f"seed{seed}" / "model.zip") as b,
        ):
            assert a.read("policy.pth") == b.read("policy.pth")
        manifest = json.loads((out / "freeze" / f"seed{seed}" / "manifest.json").read_text())
        assert manifest["source"]["path"] == str(out / "source" / f"seed{seed}" / "model.zip")
    assert {k: v for k, v in results(out).items() if k != "report.md"} == {
        k: v for k, v in results(reference).items() if k != "report.md"
    }
    assert_clean(out)


def test_several_specs_share_one_queue_and_a_failed_source_stops_only_its_grid(
    local_ray: Any, spec_path: Path, reference: Path, tmp_path: Path
) -> None:
    """``rltransfer run A.yaml B.yaml --backend ray``: both grids' sources start first, as Ray tasks of
    one queue; an unsolved source (``require_solved``) stops its grid, the other finishes as alone."""
    from rltransfer.experiment import ray_backend
    from rltransfer.experiment.run import run_experiments
    from rltransfer.experiment.runner import SourceJob

    failing = tmp_path / "unsolved.yaml"
    failing.write_text(yaml.safe_dump(grid_spec("unsolved", source={"timesteps": 128, "require_solved": True})))
    starts: list[Any] = []
    original = ray_backend.run_grids_ray

    def spy(grids: Any, workers: Any, on_event: Any, *args: Any) -> None:
        def both(event: str, job: Any, info: dict[str, Any]) -> None:
            if event == "start":
                starts.append(job)
            on_event(event, job, info)

        original(grids, workers, both, *args)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(ray_backend, "run_grids_ray", spy)
        runs = run_experiments(
            [failing, spec_path], [tmp_path / "a", tmp_path / "b"], workers=2, progress=False, backend="ray"
        )
    assert [type(job) for job in starts[:2]] == [SourceJob, SourceJob]
    assert isinstance(runs[0].error, UserError) and "threshold" in str(runs[0].error) and runs[0].report is None
    assert not list((tmp_path / "a").glob("freeze/seed*"))  # its runs waited for the source
    assert runs[1].error is None and runs[1].result.complete and runs[1].report is not None
    assert results(tmp_path / "b") == results(reference)
    assert_clean(tmp_path / "b")


def test_resume_across_backends(local_ray: Any, spec_path: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    run_experiment(spec_path, out=out, workers=1, progress=False, seeds=1)  # half the grid, locally
    kept = {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/model.zip")}
    result, _ = run_experiment(spec_path, out=out, backend="ray", progress=False, resume=True)
    assert {(j.arm.name, j.seed) for j in result.finished} == {("scratch", 1), ("freeze", 1)}
    assert len(result.skipped) == 2 and {p: p.stat().st_mtime_ns for p in kept} == kept
    assert results(out) == results(reference)
    shutil.rmtree(out / "freeze" / "seed1")  # and back: a Ray-made grid finished by the local backend
    result, _ = run_experiment(spec_path, out=out, workers=1, progress=False, resume=True)
    assert [(j.arm.name, j.seed) for j in result.finished] == [("freeze", 1)]
    assert results(out) == results(reference)
    assert_clean(out)


def test_task_error_recorded_once_and_dead_worker_retried(
    local_ray: Any, spec_path: Path, reference: Path, tmp_path: Path
) -> None:
    """A raising task is a failed run with its traceback, never retried; a worker that dies is retried."""
    from rltransfer.experiment.ray_backend import run_grid_ray
    from rltransfer.experiment.spec import load_spec

    attempts = tmp_path / "attempts"
    attempts.mkdir()

    def flaky(job: Job, spec: Any, source: str | None) -> dict[str, Any]:
        tag = f"{job.arm.name}{job.seed}"
        with open(attempts / tag, "a") as f:
            f.write("x")
        if tag == "freeze1":
            raise RuntimeError("boom")
        if tag == "scratch0" and (attempts / tag).read_text() == "x":
            os._exit(1)  # the worker process dies on the first attempt
        return execute_job(job, spec, source)

    result = run_grid_ray(load_spec(spec_path), tmp_path / "g", reference / "source", execute=flaky)
    assert sorted((j.arm.name, j.seed) for j in result.finished) == [("freeze", 0), ("scratch", 0), ("scratch", 1)]
    [(job, tb)] = result.failed
    assert (job.arm.name, job.seed) == ("freeze", 1) and "RuntimeError: boom" in tb
    marker = json.loads((tmp_path / "g" / "freeze" / "seed1.failed.json").read_text())
    assert "RuntimeError: boom" in marker["traceback"]
    assert {p.name: p.read_text() for p in attempts.iterdir()} == {
        "scratch0": "xx",
        "scratch1": "x",
        "freeze0": "x",
        "freeze1": "x",
    }
    for run in ("scratch/seed0", "freeze/seed0"):
        with np.load(tmp_path / "g" / run / "curves.npz") as a, np.load(reference / run / "curves.npz") as b:
            np.testing.assert_array_equal(a["returns"], b["returns"])
    assert not list((tmp_path / "g").rglob("*.partial-*"))
    # The dead worker's temporary directory was removed by a later task on this machine.
    stale = [p for p in Path(tempfile.gettempdir()).glob("rltransfer-ray.partial-*") if not alive(p)]
    assert not stale, stale


def alive(partial: Path) -> bool:
    try:
        os.kill(int(partial.name.split(".partial-")[1].split("-")[0]), 0)
    except ProcessLookupError:
        return False
    return True


def test_ray_ships_a_plain_zips_vecnormalize_file(local_ray: Any, tmp_path: Path) -> None:
    """An RL Zoo zip trained inside VecNormalize: its ``<EnvId>/vecnormalize.pkl`` travels with it to
    the workers (which load the zip from their own copy), and the runs equal the local backend's."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    zoo = tmp_path / "zoo"
    (zoo / "Acrobot-v1").mkdir(parents=True)
    env = VecNormalize(make_vec_env("Acrobot-v1", n_envs=1, seed=0))
    model = PPO("MlpPolicy", env, seed=0, n_steps=32, batch_size=32, n_epochs=1, device="cpu")
    model.learn(32)
    model.save(zoo / "Acrobot-v1.zip")
    env.save(str(zoo / "Acrobot-v1" / "vecnormalize.pkl"))
    spec = {
        **SPEC,
        "family": "acrobot",
        "source": {"checkpoint": str(zoo / "Acrobot-v1.zip")},
        "targets": ["long1-far"],
        "seeds": 1,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    reference = run_locally(path, tmp_path / "local")
    out = tmp_path / "exp"
    result, _ = run_experiment(path, out=out, backend="ray", progress=False)
    assert result.complete and len(result.finished) == 2
    assert {k: v for k, v in results(out).items() if k != "report.md"} == {
        k: v for k, v in results(reference).items() if k != "report.md"
    }
    for arm in ("scratch", "freeze"):
        assert json.loads((out / arm / "seed0" / "config.json").read_text())["hyperparams"]["normalize"]["norm_reward"]
    lineage = json.loads((out / "freeze" / "seed0" / "manifest.json").read_text())["source"]["vec_normalize"]
    assert (
        lineage["sha256"]
        == json.loads((reference / "freeze" / "seed0" / "manifest.json").read_text())["source"]["vec_normalize"][
            "sha256"
        ]
    )


# --- mid-run snapshots across the cluster ----------------------------------------------------------


def _runs(out: Path) -> dict[str, Any]:
    """Curves and weights of every run (``results`` without the report, which ``run_grid_ray`` does not write)."""
    found: dict[str, Any] = {}
    for path in sorted(out.glob("*/seed*/curves.npz")):
        with np.load(path) as data:
            found[str(path.relative_to(out))] = {k: data[k].tolist() for k in sorted(data.files)}
    for path in sorted(out.glob("*/seed*/model.zip")):
        with zipfile.ZipFile(path) as z:
            found[str(path.relative_to(out))] = z.read("policy.pth")
    return found


def test_snapshots_cross_the_cluster(
    local_ray: Any, long_runs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mid-run snapshots on Ray. A run interrupted on the driver's machine (by either backend, or a
    killed driver's relayed copy) is shipped to a worker and continued there; a worker that dies
    mid-run is retried by Ray from the snapshot it relayed. The runs equal the local backend's,
    never snapshotted."""
    from dataclasses import replace

    from rltransfer.experiment.ray_backend import run_grid_ray
    from rltransfer.experiment.runner import plan_jobs, prepare_out
    from rltransfer.experiment.spec import load_spec
    from rltransfer.io import interrupted_runs
    from rltransfer.ppo import TransferPPO
    from rltransfer.snapshot import snapshot_listener

    spec_path, reference = long_runs
    spec = replace(load_spec(spec_path), snapshot_every=None)  # snapshots only where a run is stopped below
    every_update = replace(spec, snapshot_every=0)
    out = tmp_path / "g"
    prepare_out(spec, out, resume=False)
    left = next(j for j in plan_jobs(spec, out) if (j.arm.name, j.seed) == ("freeze", 1))
    original, calls = TransferPPO.train, [0]

    def train(self: TransferPPO) -> None:
        calls[0] += 1
        if calls[0] == 20:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(TransferPPO, "train", train)
    with pytest.raises(KeyboardInterrupt):
        execute_job(left, every_update, str(reference / "source"))
    monkeypatch.setattr(TransferPPO, "train", original)
    assert interrupted_runs(left.run_dir)

    attempts = tmp_path / "attempts"
    attempts.mkdir()

    def dies_after_five_snapshots(job: Job, spec: Any, source: str | None) -> dict[str, Any]:
        # Self-contained, as flaky above: Ray pickles it by value, and workers cannot import this module.
        tag = f"{job.arm.name}{job.seed}"
        with open(attempts / tag, "a") as f:
            f.write("x")
        if tag != "freeze0" or (attempts / tag).read_text() != "x":
            return execute_job(job, spec, source)
        count = [0]

        def die(_: Path) -> None:  # after the relay's listener has sent the snapshot
            count[0] += 1
            if count[0] == 5:
                os._exit(1)

        with snapshot_listener(die):
            return execute_job(job, every_update, source)

    result = run_grid_ray(spec, out, reference / "source", execute=dies_after_five_snapshots)
    assert result.complete and len(result.finished) == 4
    assert (attempts / "freeze0").read_text() == "xx"
    resumed = {
        run: json.loads((out / run / "manifest.json").read_text())["resumed"]
        for run in ("freeze/seed0", "freeze/seed1")
    }
    assert [r["at_step"] for r in resumed["freeze/seed1"]] == [19 * 32]  # the driver's
    assert [r["at_step"] for r in resumed["freeze/seed0"]] == [5 * 32]  # the relayed one
    assert all(r["exact"] for runs in resumed.values() for r in runs)
    assert _runs(out) == _runs(reference)
    assert not list(out.rglob("*.partial-*")), "the driver's copies of the snapshots were removed"


def test_a_full_disk_on_the_driver_stops_the_grid(
    local_ray: Any, spec_path: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose files cannot be installed on the driver for want of space stops the grid (as the
    local pool does): the runs after it would fail the same way."""
    import errno

    from rltransfer.experiment import ray_backend
    from rltransfer.experiment.spec import load_spec

    real = ray_backend.install
    attempts = tmp_path / "attempts"
    attempts.mkdir()

    full: list[Path] = []

    def install(files: Any, run_dir: Path) -> None:
        if not full:  # the first run to finish, whichever it is: the disk is full from then on
            full.append(run_dir)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run_dir / "model.zip"))
        real(files, run_dir)

    def counted(job: Job, spec: Any, source: str | None) -> dict[str, Any]:
        (attempts / f"{job.arm.name}{job.seed}").write_text("x")
        return execute_job(job, spec, source)

    monkeypatch.setattr(ray_backend, "install", install)
    with pytest.raises(OSError) as caught:
        ray_backend.run_grid_ray(load_spec(spec_path), tmp_path / "g", reference / "source", 2, execute=counted)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(full[0] / "model.zip")
    assert len(list(attempts.iterdir())) == 2  # those in flight (2 CPUs); the others were not started
    assert full[0].with_name(full[0].name + ".failed.json").is_file()


def test_an_interrupted_ray_grid_keeps_each_runs_iteration_in_progress(
    local_ray: Any, reference: Path, tmp_path: Path
) -> None:
    """Ctrl-C of the driver: the runs on the cluster are cancelled as an interrupt (not killed), so
    each snapshots its PPO iteration, relayed and kept beside its run for ``--resume``, though the
    5-minute snapshot interval had not come."""
    import signal
    import threading
    import time

    from rltransfer.experiment.ray_backend import run_grid_ray
    from rltransfer.experiment.spec import parse_spec
    from rltransfer.io import interrupted_runs

    started = tmp_path / "started"
    started.mkdir()

    def marked(job: Job, spec: Any, source: str | None) -> dict[str, Any]:
        """``execute_job``, marking its run once it has trained 3 PPO iterations (in the Ray worker)."""
        from rltransfer.snapshot import Snapshots

        real = Snapshots.on_rollout

        def on_rollout(self: Snapshots) -> None:
            real(self)
            if self._calls == 4:
                (started / f"{job.arm.name}{job.seed}").write_text("x")

        Snapshots.on_rollout = on_rollout  # type: ignore[method-assign]
        try:
            return execute_job(job, spec, source)
        finally:
            Snapshots.on_rollout = real  # type: ignore[method-assign]  # the worker runs other tests' tasks

    def interrupt_once_both_train() -> None:
        deadline = time.time() + 120
        while len(list(started.iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)

    spec = parse_spec(grid_spec("ray", arms=["scratch"], timesteps=200_000))
    threading.Thread(target=interrupt_once_both_train, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_grid_ray(spec, tmp_path / "g", reference / "source", 2, execute=marked)
    kept = [interrupted_runs(tmp_path / "g" / "scratch" / f"seed{s}") for s in (0, 1)]
    assert all(len(k) == 1 and k[0].name.endswith("-relayed") for k in kept), kept
