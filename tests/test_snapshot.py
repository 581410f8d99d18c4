"""Mid-run snapshots: a run stopped part-way resumes from its last snapshot with the same numbers.

"Stopped" is simulated in-process by a KeyboardInterrupt raised from PPO's ``train`` (the staging
directory with its snapshot survives, as after a kill -9), and for real by kill -9 of a grid.
Every check compares against one uninterrupted run with the same seed: curves, weights and
the CSV log bit for bit, and TensorBoard's scalars as TensorBoard reads them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
import yaml
from specs import grid_spec

from rltransfer import env_state
from rltransfer.errors import UserError
from rltransfer.experiment.run import run_experiment
from rltransfer.experiment.spec import parse_spec
from rltransfer.finetuning import finetune
from rltransfer.io import SNAPSHOT_FILE
from rltransfer.ppo import TransferPPO
from rltransfer.pretraining import pretrain
from rltransfer.snapshot import parse_snapshot_every

HP = {"n_steps": 64, "batch_size": 64, "n_epochs": 2, "n_envs": 2, "eval_freq": 512, "eval_episodes": 1}


@pytest.fixture
def stop_at_update(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``stop(k)``: the next run raises KeyboardInterrupt in its ``k``-th PPO update (once)."""

    def stop(k: int) -> None:
        original = TransferPPO.train
        calls = {"n": 0}

        def train(self: TransferPPO) -> None:
            calls["n"] += 1
            if calls["n"] == k:
                monkeypatch.setattr(TransferPPO, "train", original)
                raise KeyboardInterrupt
            original(self)

        monkeypatch.setattr(TransferPPO, "train", train)

    return stop


class _Sources(dict[str, Path]):
    """Tiny sources, pretrained on first use per family."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, family: str) -> Path:
        pretrain(family, seed=0, timesteps=512, hyperparams=HP, out=self.root / family)
        self[family] = self.root / family
        return self[family]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _Sources(tmp_path_factory.mktemp("sources"))


def _csv(path: Path) -> list[dict[str, str]]:
    """The CSV log without its wall-clock columns (fps, seconds elapsed)."""
    timing = {"time/fps", "time/time_elapsed"}
    return [{k: v for k, v in row.items() if k not in timing} for row in csv.DictReader(path.open())]


def _same_run(a: Path, b: Path) -> None:
    """Curves (a source's are in its manifest), weights and the CSV log, bit for bit."""
    if (a / "curves.npz").exists():
        with np.load(a / "curves.npz") as ca, np.load(b / "curves.npz") as cb:
            assert ca.files == cb.files
            for k in ca.files:
                np.testing.assert_array_equal(ca[k], cb[k], err_msg=k)
    else:
        assert (
            json.loads((a / "manifest.json").read_text())["curve"]
            == json.loads((b / "manifest.json").read_text())["curve"]
        )
    from stable_baselines3.common.save_util import load_from_zip_file

    _, wa, _ = load_from_zip_file(a / "model.zip", load_data=False)
    _, wb, _ = load_from_zip_file(b / "model.zip", load_data=False)
    assert wa is not None and wb is not None
    for k, v in wa["policy"].items():
        assert th.equal(v, wb["policy"][k]), k
    assert _csv(a / "logs" / "progress.csv") == _csv(b / "logs" / "progress.csv")


def _interrupted_then_resumed(run: Callable[..., Any], out: Path, stop: Callable[[int], None], k: int) -> Any:
    stop(k)
    with pytest.raises(KeyboardInterrupt):
        run(out=out, snapshot_every=0)
    partials = list(out.parent.glob(f"{out.name}.partial-*"))
    assert len(partials) == 1 and (partials[0] / SNAPSHOT_FILE).is_file(), "the interrupted run kept its snapshot"
    return run(out=out, snapshot_every=0, resume=True)


CASES = {
    # family, targets, strategy: batched envs, VecNormalize, gSDE, strategies with state of their
    # own, a DummyVecEnv whose wrapper draws noise, and targets of other families (padded spaces).
    "cartpole-finetune": ("cartpole", ["long", "longer"], "finetune"),
    "acrobot-normalized": ("acrobot", ["long1"], "freeze"),
    "pendulum-gsde": ("pendulum", ["g15"], "finetune"),
    "gradual": ("cartpole", ["long"], "gradual"),
    "dann": ("cartpole", ["long"], "dann"),
    "noisy-dummyvecenv": ("cartpole", ["long", "noisy"], "l2sp"),
    "cross-space": ("cartpole", ["acrobot/source", "mountaincar/source"], "finetune"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_resumed_finetune_is_the_uninterrupted_run(
    case: str, source: dict[str, Path], tmp_path: Path, stop_at_update: Callable[[int], None]
) -> None:
    family, targets, strategy = CASES[case]

    steps = 1024

    def run(**kw: Any) -> Any:
        return finetune(family, targets, source[family], strategy, seed=1, timesteps=steps, hyperparams=HP, **kw)

    whole = run(out=tmp_path / "whole", snapshot_every=None)
    resumed = _interrupted_then_resumed(run, tmp_path / "resumed", stop_at_update, 3)
    assert [r["exact"] for r in resumed.manifest["resumed"]] == [True]
    assert 0 < resumed.manifest["resumed"][0]["at_step"] < steps
    assert whole.manifest["resumed"] == []
    _same_run(tmp_path / "whole", tmp_path / "resumed")
    assert not (tmp_path / "resumed" / SNAPSHOT_FILE).exists(), "a finished run holds no snapshot"


def test_resumed_pretraining_is_the_uninterrupted_run(tmp_path: Path, stop_at_update: Callable[[int], None]) -> None:
    """MountainCarContinuous normalises observations and rewards as the RL Zoo does (and uses gSDE):
    VecNormalize's statistics and returns resume too."""

    def run(**kw: Any) -> Any:
        return pretrain("mountaincarcontinuous", seed=2, timesteps=1536, hyperparams=HP, **kw)

    whole = run(out=tmp_path / "whole")
    resumed = _interrupted_then_resumed(run, tmp_path / "resumed", stop_at_update, 7)
    assert resumed.manifest["resumed"][0]["exact"]
    assert resumed.manifest["curve"] == whole.manifest["curve"]
    for k, v in whole.manifest["obs_normalization"].items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(resumed.manifest["obs_normalization"][k]))
    assert (tmp_path / "whole" / "source_obs.npy").read_bytes() == (
        tmp_path / "resumed" / "source_obs.npy"
    ).read_bytes()
    for a, b in zip(whole.model.policy.parameters(), resumed.model.policy.parameters(), strict=True):
        assert th.equal(a, b)


def test_twice_interrupted_run_resumes_twice(
    source: dict[str, Path], tmp_path: Path, stop_at_update: Callable[[int], None]
) -> None:
    def run(**kw: Any) -> Any:
        return finetune(
            "cartpole", ["long"], source["cartpole"], "finetune", seed=0, timesteps=2048, hyperparams=HP, **kw
        )

    run(out=tmp_path / "whole", snapshot_every=None)
    out = tmp_path / "resumed"
    stop_at_update(3)
    with pytest.raises(KeyboardInterrupt):
        run(out=out, snapshot_every=0)
    stop_at_update(4)
    with pytest.raises(KeyboardInterrupt):
        run(out=out, snapshot_every=0, resume=True)
    done = run(out=out, snapshot_every=0, resume=True)
    steps = [r["at_step"] for r in done.manifest["resumed"]]
    assert len(steps) == 2 and steps[0] < steps[1]
    _same_run(tmp_path / "whole", out)


def test_state_not_restored_would_differ(
    source: dict[str, Path], tmp_path: Path, stop_at_update: Callable[[int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison has teeth: resuming without the environments' episodes gives other numbers."""

    def run(**kw: Any) -> Any:
        return finetune(
            "cartpole", ["long"], source["cartpole"], "finetune", seed=0, timesteps=1536, hyperparams=HP, **kw
        )

    run(out=tmp_path / "whole", snapshot_every=None)
    monkeypatch.setattr(env_state, "capture", lambda venv: env_state.EnvState([{"steps": 0}], None, "test"))
    _interrupted_then_resumed(run, tmp_path / "resumed", stop_at_update, 3)
    with pytest.raises(AssertionError):
        _same_run(tmp_path / "whole", tmp_path / "resumed")


def test_tensorboard_hides_the_killed_attempts_later_events(
    source: dict[str, Path], tmp_path: Path, stop_at_update: Callable[[int], None]
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def run(**kw: Any) -> Any:
        return finetune(
            "cartpole", ["long"], source["cartpole"], "finetune", seed=0, timesteps=1536, hyperparams=HP, **kw
        )

    run(out=tmp_path / "whole", snapshot_every=None)
    _interrupted_then_resumed(run, tmp_path / "resumed", stop_at_update, 4)
    logs = [EventAccumulator(str(tmp_path / d / "logs")).Reload() for d in ("whole", "resumed")]
    tags = logs[0].Tags()["scalars"]
    assert "eval/long/mean_return" in tags and "train/value_loss" in tags
    assert logs[1].Tags()["scalars"] == tags
    for tag in tags:
        if tag.startswith("time/"):
            continue
        a, b = ([(e.step, e.value) for e in log.Scalars(tag)] for log in logs)
        assert a == b, tag


@pytest.mark.skipif(not __import__("importlib").util.find_spec("mujoco"), reason="needs the mujoco extra")
def test_mujoco_simulation_resumes_exactly(tmp_path: Path, stop_at_update: Callable[[int], None]) -> None:
    """Gymnasium's MuJoCo envs pickle as a fresh env: their MjData is saved and copied back apart."""
    hp = {**HP, "n_envs": 1, "eval_episodes": 1, "eval_freq": 512}

    def run(**kw: Any) -> Any:
        return pretrain("hopper", seed=0, timesteps=768, hyperparams=hp, **kw)

    run(out=tmp_path / "whole")
    resumed = _interrupted_then_resumed(run, tmp_path / "resumed", stop_at_update, 6)
    assert resumed.manifest["resumed"][0]["exact"]
    _same_run(tmp_path / "whole", tmp_path / "resumed")


@pytest.mark.skipif(not __import__("importlib").util.find_spec("Box2D"), reason="needs the box2d extra")
def test_box2d_resumes_with_new_episodes_and_says_so(tmp_path: Path, stop_at_update: Callable[[int], None]) -> None:
    hp = {**HP, "eval_episodes": 1, "eval_freq": 512}

    def run(**kw: Any) -> Any:
        return pretrain("lunarlander", seed=0, timesteps=768, hyperparams=hp, **kw)

    resumed = _interrupted_then_resumed(run, tmp_path / "resumed", stop_at_update, 3)
    (record,) = resumed.manifest["resumed"]
    assert not record["exact"] and "LunarLander" in record["why_not"]
    assert resumed.manifest["timesteps"] == 768


# --- where snapshots live, and what resuming refuses -------------------------------------------


def _cartpole(out: Path, **kw: Any) -> Any:
    kw.setdefault("seed", 0)
    return pretrain("cartpole", timesteps=768, hyperparams=HP, out=out, **kw)


def test_interrupted_run_is_never_discarded_unasked(tmp_path: Path, stop_at_update: Callable[[int], None]) -> None:
    out = tmp_path / "src"
    stop_at_update(3)
    with pytest.raises(KeyboardInterrupt):
        _cartpole(out, snapshot_every=0)
    with pytest.raises(UserError, match=r"interrupted run .* pass --resume to continue it, or --overwrite"):
        _cartpole(out)
    assert len(list(tmp_path.glob("src.partial-*"))) == 1
    fresh = _cartpole(out, overwrite=True)  # starts over, discarding the snapshot
    assert fresh.manifest["resumed"] == [] and not list(tmp_path.glob("src.partial-*"))


def test_resume_with_other_settings_is_refused(tmp_path: Path, stop_at_update: Callable[[int], None]) -> None:
    out = tmp_path / "src"
    stop_at_update(3)
    with pytest.raises(KeyboardInterrupt):
        _cartpole(out, snapshot_every=0)
    with pytest.raises(UserError, match=r"interrupted run with other settings \(hyperparams, seed differ\)"):
        pretrain("cartpole", seed=1, timesteps=768, hyperparams={**HP, "n_epochs": 1}, out=out, resume=True)
    assert _cartpole(out, resume=True).manifest["resumed"], "the snapshot was kept for the right settings"


def test_interrupt_without_snapshot_leaves_nothing(tmp_path: Path, stop_at_update: Callable[[int], None]) -> None:
    stop_at_update(3)
    with pytest.raises(KeyboardInterrupt):
        _cartpole(tmp_path / "src", snapshot_every=None)
    assert list(tmp_path.iterdir()) == []
    assert _cartpole(tmp_path / "src", resume=True).manifest["resumed"] == []  # nothing to resume: from the start


def test_snapshot_every_seconds() -> None:
    assert parse_snapshot_every(0) == 0.0
    assert parse_snapshot_every("120") == 120.0
    assert parse_snapshot_every("off") is None and parse_snapshot_every(None) is None
    assert [parse_snapshot_every(v) for v in ("90s", "5m", "1.5h", " 2M ")] == [90.0, 300.0, 5400.0, 120.0]
    for bad in (-1, "soon", True, float("nan"), "m", "-5m", "5d"):
        with pytest.raises(UserError, match="snapshot_every must be seconds >= 0"):
            parse_snapshot_every(bad)


def test_spec_snapshot_every_is_an_execution_setting() -> None:
    base = parse_spec(grid_spec("s"))
    assert base.snapshot_every == 300.0
    often = parse_spec(grid_spec("s", snapshot_every=0))
    assert often.snapshot_every == 0.0 and often.fingerprint() == base.fingerprint()  # the same runs: resumable
    assert parse_spec(grid_spec("s", snapshot_every=False)).snapshot_every is None
    with pytest.raises(UserError, match="snapshot_every must be seconds"):
        parse_spec(grid_spec("s", snapshot_every="hourly"))


# --- a grid ---------------------------------------------------------------------------------------


def test_grid_resume_continues_a_run_from_its_snapshot(tmp_path: Path, stop_at_update: Callable[[int], None]) -> None:
    """A grid stopped mid-run (here in-process; kill -9 leaves the same staging directory, see
    test_reliability): --resume continues the run from its snapshot, and the report equals that of a
    grid never stopped and never snapshotted."""
    hp = {"n_steps": 64, "batch_size": 64, "n_epochs": 1, "n_envs": 1}
    spec = grid_spec("k", source={"timesteps": 256, "hyperparams": hp}, hyperparams=hp, timesteps=1536)
    spec["eval"] = {"freq": 768, "episodes": 2}
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump({**spec, "snapshot_every": False}))
    (tmp_path / "snap.yaml").write_text(yaml.safe_dump({**spec, "snapshot_every": 0}))
    run_experiment(tmp_path / "plain.yaml", out=tmp_path / "ref", workers=1, progress=False)

    out = tmp_path / "run"
    stop_at_update(30)  # the grid's 30th PPO update: the source takes 4, each run 24
    with pytest.raises(KeyboardInterrupt):
        run_experiment(tmp_path / "snap.yaml", out=out, workers=1, progress=False)
    assert list(out.glob(f"*/seed*.partial-*/{SNAPSHOT_FILE}")), "stopped before any run took a snapshot"
    run_experiment(tmp_path / "snap.yaml", out=out, workers=1, progress=False, resume=True)
    resumed = {
        str(m.parent.relative_to(out)): json.loads(m.read_text())["resumed"] for m in out.glob("*/seed*/manifest.json")
    }
    assert [r["exact"] for runs in resumed.values() for r in runs] == [True], resumed
    for name in ("scores.csv", "report.md", "summary.json"):  # both name their spec file
        resumed_text = (out / "report" / name).read_text().replace("snap.yaml", "plain.yaml")
        assert resumed_text == (tmp_path / "ref" / "report" / name).read_text(), name
    assert not list(out.glob("*/seed*.partial*"))


def test_progress_says_which_runs_continue_from_a_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rltransfer.experiment.progress import GridProgress
    from rltransfer.experiment.runner import SourceJob

    run = tmp_path / "freeze" / "seed0"
    dead = tmp_path / "freeze" / "seed0.partial-999999999-x"  # no such process
    dead.mkdir(parents=True)
    with GridProgress(2, enabled=False) as display:
        display("start", SourceJob(tmp_path / "source"), {})
        (dead / SNAPSHOT_FILE).write_bytes(b"")
        display("start", SourceJob(run), {})
    assert capsys.readouterr().err.split() == ["continuing", "from", "its", "last", "snapshot:", str(run)]


def test_report_names_runs_resumed_with_new_episodes(tmp_path: Path) -> None:
    """An exact resumption changes nothing and is not mentioned; one with new episodes is."""
    from rltransfer.experiment.report import build_report

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(grid_spec("r")))
    run_experiment(tmp_path / "spec.yaml", out=tmp_path / "out", workers=1, progress=False)
    records = {
        "scratch/seed0": {"at_step": 64, "exact": True, "why_not": None},
        "freeze/seed1": {"at_step": 96, "exact": False, "why_not": "LunarLander... pickles as ..."},
    }
    for run, record in records.items():
        manifest = tmp_path / "out" / run / "manifest.json"
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "resumed": [record]}))
    text = (build_report(tmp_path / "out") / "report.md").read_text()
    assert "resumed with new episodes" in text and "freeze/seed1 at step 96: LunarLander... pickles as ..." in text
    assert "scratch/seed0 at step 64" not in text


def test_unknown_wrapper_resumes_with_new_episodes() -> None:
    """A VecEnv wrapper rltransfer cannot save never stops training: its chain restarts its episodes."""
    from rltransfer.envs import get_family
    from rltransfer.envs.multitask import make_task_vec_env
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class Counting(VecEnvWrapper):
        def reset(self) -> Any:
            return self.venv.reset()

        def step_wait(self) -> Any:
            return self.venv.step_wait()

    env = Counting(make_task_vec_env(get_family("cartpole"), "source", 2, seed=0))
    env.reset()
    saved = env_state.capture(env)
    assert saved.base is None and saved.why_not == "Counting has no saved state"
    obs = env_state.restore(env, saved, reset_seed=5)
    assert obs is not None and obs.shape == (2, 4)
