"""Source pretraining output on disk, and the command line (in-process, plus one real subprocess)."""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from rltransfer.envs import FAMILIES
from stable_baselines3 import PPO

from rltransfer.checkpoint import load_checkpoint
from rltransfer.cli import main
from rltransfer.errors import UserError

# The module, not the function of the same name that ``rltransfer/__init__.py`` re-exports.
pretrain_module = importlib.import_module("rltransfer.pretraining")
pretrain = pretrain_module.pretrain

TINY_HP = ["n_steps=32", "n_envs=1", "batch_size=32", "n_epochs=1", "eval_freq=64", "eval_episodes=2"]


def hp_args(items: list[str] = TINY_HP) -> list[str]:
    return [arg for item in items for arg in ("--hp", item)]


# --- pretrain -----------------------------------------------------------------------------


def test_pretrain_writes_a_complete_run(source_dir: Path, tiny: dict[str, Any]) -> None:
    assert {p.name for p in source_dir.iterdir()} >= {"model.zip", "manifest.json", "config.json", "logs"}
    assert not list(source_dir.parent.glob(source_dir.name + ".partial*"))
    manifest = json.loads((source_dir / "manifest.json").read_text())
    assert manifest["kind"] == "source"
    assert manifest["family"] == "cartpole"
    assert manifest["variant"]["name"] == "source"
    assert manifest["variant"]["params"] == FAMILIES["cartpole"].defaults()
    assert manifest["seed"] == 0
    assert manifest["timesteps"] >= 256
    for key, value in tiny.items():
        assert manifest["hyperparams"][key] == value
    assert manifest["hyperparams"]["n_timesteps"] == 256
    assert {"mean_return", "std_return", "episodes", "threshold"} <= set(manifest["eval"])
    assert np.isfinite(manifest["eval"]["mean_return"])
    assert {"python", "stable-baselines3", "gymnasium", "torch", "numpy"} <= set(manifest["versions"])
    assert manifest["zip_sha256"] == hashlib.sha256((source_dir / "model.zip").read_bytes()).hexdigest()
    assert manifest["curve"]["steps"][0] == 0 and manifest["curve"]["steps"][-1] == manifest["timesteps"]

    config = json.loads((source_dir / "config.json").read_text())
    assert config["family"] == "cartpole" and config["seed"] == 0 and config["n_steps"] == 32

    logs = source_dir / "logs"
    assert list(logs.glob("events.out.tfevents.*")), "no TensorBoard events file"
    progress = (logs / "progress.csv").read_text().splitlines()
    assert len(progress) >= 2 and "eval/source/mean_return" in progress[0]

    ckpt = load_checkpoint(source_dir)
    assert ckpt.has_trunk and ckpt.manifest == manifest


def test_pretrained_zip_loads_in_plain_sb3(source_dir: Path) -> None:
    model = PPO.load(source_dir / "model.zip", device="cpu")
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))
    env.close()
    trunk = model.policy.features_extractor.trunk
    assert trunk[0].in_features == 4


def test_pretrain_refuses_to_overwrite_a_finished_run(source_dir: Path, tiny: dict[str, Any]) -> None:
    before = (source_dir / "manifest.json").read_text()
    with pytest.raises(UserError, match=r"already holds a finished run.*--overwrite"):
        pretrain("cartpole", seed=1, timesteps=64, hyperparams=tiny, out=source_dir)
    with pytest.raises(UserError, match=r"already holds a finished run: nothing to resume \(--overwrite"):
        pretrain("cartpole", seed=1, timesteps=64, hyperparams=tiny, out=source_dir, resume=True)
    assert (source_dir / "manifest.json").read_text() == before


def test_pretrain_overwrite_replaces_the_run(tmp_path: Path, tiny: dict[str, Any]) -> None:
    out = tmp_path / "run"
    pretrain("cartpole", seed=0, timesteps=64, hyperparams=tiny, out=out)
    pretrain("cartpole", seed=1, timesteps=64, hyperparams=tiny, out=out, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1
    assert not list(tmp_path.glob("run.partial*"))
    load_checkpoint(out)  # checksum of the new zip matches the new manifest


@pytest.mark.parametrize("overwrite", [False, True])
def test_overwrite_never_deletes_a_directory_that_holds_no_run(
    tmp_path: Path, tiny: dict[str, Any], overwrite: bool
) -> None:
    """``--out . --overwrite`` in a project directory once trained, then deleted the directory."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"is a directory holding no run; a run is written into a new or empty"):
        pretrain("cartpole", seed=0, timesteps=64, hyperparams=tiny, out=tmp_path, overwrite=overwrite)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"'.*file' is a file; a run is written into a new or empty directory"):
        pretrain("cartpole", seed=0, timesteps=64, hyperparams=tiny, out=tmp_path / "file", overwrite=overwrite)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "notes.txt"]


@pytest.mark.parametrize("out", [".", "..", "/"])
def test_the_working_directory_is_no_run_directory(
    tmp_path: Path, tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch, out: str
) -> None:
    """``--out .`` in an empty directory trained, then failed to rename the run onto it."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="is the working directory or above it; a run gets its own"):
        pretrain("cartpole", seed=0, timesteps=64, hyperparams=tiny, out=out)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_directory_takes_the_run(tmp_path: Path, tiny: dict[str, Any]) -> None:
    (tmp_path / "run").mkdir()
    pretrain("cartpole", seed=0, timesteps=64, hyperparams=tiny, out=tmp_path / "run")
    load_checkpoint(tmp_path / "run")


def test_failed_pretrain_leaves_no_partial(
    tmp_path: Path, tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("simulated crash mid-training")

    monkeypatch.setattr(pretrain_module, "learn", boom)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain("cartpole", seed=0, timesteps=64, hyperparams=tiny, out=out)
    assert not out.exists()
    assert not list(tmp_path.glob("run.partial*"))
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_run(
    tmp_path: Path, tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    pretrain("cartpole", seed=0, timesteps=64, hyperparams=tiny, out=out)
    before = (out / "manifest.json").read_text()
    monkeypatch.setattr(pretrain_module, "learn", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("crash")))
    with pytest.raises(RuntimeError):
        pretrain("cartpole", seed=1, timesteps=64, hyperparams=tiny, out=out, overwrite=True)
    assert (out / "manifest.json").read_text() == before
    assert not list(tmp_path.glob("run.partial*"))
    load_checkpoint(out)


def test_stale_partial_from_a_killed_run_is_replaced(tmp_path: Path, tiny: dict[str, Any]) -> None:
    stale = tmp_path / "run.partial-999999999-x1"  # a writer pid that does not exist
    stale.mkdir()
    (stale / "junk.bin").write_bytes(b"half-written")
    pretrain("cartpole", seed=0, timesteps=64, hyperparams=tiny, out=tmp_path / "run")
    assert not stale.exists()
    assert not (tmp_path / "run" / "junk.bin").exists()


def test_pretrain_input_errors(tmp_path: Path, tiny: dict[str, Any]) -> None:
    with pytest.raises(UserError, match="unknown family"):
        pretrain("nope", out=tmp_path / "a")
    with pytest.raises(UserError, match=r"length.*\[0\.1, 2\.0\]"):
        pretrain("cartpole", {"length": 99.0}, out=tmp_path / "b")
    with pytest.raises(UserError, match="n_timesteps"):
        pretrain("cartpole", timesteps=0, hyperparams=tiny, out=tmp_path / "c")
    with pytest.raises(UserError, match="unknown hyperparameter 'bogus'"):
        pretrain("cartpole", hyperparams={"bogus": 1}, out=tmp_path / "d")
    with pytest.raises(UserError, match="seed"):
        pretrain("cartpole", seed=-1, timesteps=64, hyperparams=tiny, out=tmp_path / "e")
    assert list(tmp_path.iterdir()) == []


def test_pretrain_closes_its_log_files(tmp_path: Path, tiny: dict[str, Any]) -> None:
    from stable_baselines3.common.logger import CSVOutputFormat

    result = pretrain("cartpole", seed=0, timesteps=64, hyperparams=tiny, out=tmp_path / "run")
    csv = [f for f in result.model.logger.output_formats if isinstance(f, CSVOutputFormat)]
    assert csv, "the run wrote no progress.csv"
    assert all(f.file.closed for f in csv)


def test_pretrain_custom_variant_without_output(tiny: dict[str, Any]) -> None:
    result = pretrain("cartpole", {"length": 0.8}, seed=0, timesteps=64, hyperparams=tiny)
    assert result.out is None
    assert result.manifest["variant"]["params"]["length"] == 0.8
    assert result.curve.steps[0] == 0


# --- CLI ------------------------------------------------------------------------------------


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("rltransfer: error: ")
    return lines[0]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # default output paths (runs/...) must not land in the repository
    return tmp_path


def test_cli_envs_lists_every_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for family in FAMILIES.values():
        assert family.name in out
        assert family.env_id(family.source) in out
    assert main(["envs", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert {f["family"] for f in listing} == set(FAMILIES)
    cartpole = next(f for f in listing if f["family"] == "cartpole")
    assert {"name": "long", "distance": "near", "params": {"length": 0.75}, "id": "rltransfer/CartPole-long-v0"} in (
        cartpole["variants"]
    )


def test_cli_envs_keeps_units_in_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    # rich reads "[m/s^2]" as markup and drops it unless the text is escaped
    assert main(["envs", "--family", "pendulum"]) == 0
    out = capsys.readouterr().out
    assert "gravitational acceleration [m/s^2]" in out
    # The held-out band no run may train in, beside each parameter it bounds.
    assert re.search(r"│ g +│ 10 +│ \[1, 30\] +│ \[10\.5, 11\.5\] +│", out), out
    assert re.search(r"│ l +│ 1 +│ \[[0-9.]+, [0-9.]+\] +│ +│", out) and "nothing trains where every held-out" in out


def test_cli_envs_unknown_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envs", "--family", "nope"]) == 2
    assert "unknown family 'nope'" in one_line_error(capsys.readouterr().err)


def test_console_script_envs() -> None:
    script = Path(sys.executable).with_name("rltransfer")
    proc = subprocess.run([str(script), "envs"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    for family in FAMILIES:
        assert family in proc.stdout


def test_a_reader_gone_is_no_error(tmp_path: Path) -> None:
    """``rltransfer run ... --dry-run | head -1``: the pipe closes before the output is written; no error line."""
    args = ["run", "experiments/cartpole.yaml", "experiments/acrobot.yaml", "--dry-run", "--out", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rltransfer.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the command has imported anything, let alone printed
    assert proc.wait(timeout=60) == 1
    assert proc.stderr.read() == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--family", "nope"], "unknown family 'nope'"),
        (["--family", "cartpole", "--param", "length=99"], "length"),
        (["--family", "cartpole", "--param", "nope=1"], "no parameter 'nope'"),
        (["--family", "cartpole", "--variant", "nope"], "no variant 'nope'"),
        (["--family", "cartpole", "--timesteps", "0"], "n_timesteps"),
        (["--family", "cartpole", "--hp", "bogus=1"], "unknown hyperparameter 'bogus'"),
        (["--family", "cartpole", "--hp", "n_steps"], "must look like KEY=VALUE, e.g. --hp n_steps=64"),
        (
            ["--family", "cartpole", "--param", "length"],
            "--param 'length' must look like KEY=VALUE, e.g. --param length",
        ),
        (["--family", "cartpole", "--hp", "learning_rate=lin_abc"], "lin_"),
        (
            ["--family", "cartpole", "--timesteps", "256", "--hp", "n_timesteps=1e3"],
            "--timesteps 256 and --hp n_timesteps=1e3 both set the budget; keep one",
        ),
    ],
)
def test_cli_pretrain_usage_errors(
    args: list[str], message: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pretrain", *args, "--out", str(in_tmp / "out"), "--quiet"]) == 2
    assert message in one_line_error(capsys.readouterr().err)
    assert not (in_tmp / "out").exists() and not (in_tmp / "runs").exists()


def test_cli_param_out_of_range_names_the_range(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain", "--family", "cartpole", "--param", "length=99", "--out", str(in_tmp / "o")]) == 2
    assert "[0.1, 2.0]" in one_line_error(capsys.readouterr().err)


def test_cli_out_under_a_regular_file(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = in_tmp / "a_file"
    blocker.write_text("not a directory")
    code = main(
        ["pretrain", "--family", "cartpole", "--timesteps", "64", *hp_args(), "--out", str(blocker / "run"), "--quiet"]
    )
    assert code == 2
    assert "a_file" in one_line_error(capsys.readouterr().err)
    assert blocker.read_text() == "not a directory"


def test_cli_transfer_needs_a_source(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transfer", "--family", "cartpole", "--targets", "long", "--strategy", "freeze", "--quiet"]) == 2
    assert "--source" in one_line_error(capsys.readouterr().err)
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "nope"], "unknown strategy 'nope'"),
        (["--strategy", "partial:x"], "partial:N"),
        (["--strategy", "finetune", "--option", "coef=0.1"], "belongs to l2sp"),
        (["--strategy", "finetune", "--transfer", "bogus"], "unknown transfer part 'bogus'"),
        (["--strategy", "finetune", "--targets", "nope"], "no variant 'nope'"),
        (["--strategy", "finetune", "--targets", "long,{length: 99}"], "outside its valid range"),
        (["--strategy", "finetune", "--targets", "long,{length: [0.9"], "cannot read --targets"),
        (["--strategy", "finetune", "--targets", "{name: x, params: {lenght: 0.9}}"], "no parameter 'lenght'"),
    ],
)
def test_cli_transfer_usage_errors(
    args: list[str], message: str, source_dir: Path, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["transfer", "--family", "cartpole", "--source", str(source_dir), *args]
    if "--targets" not in args:
        argv += ["--targets", "long"]
    assert main([*argv, "--out", str(in_tmp / "out"), "--quiet"]) == 2
    assert message in one_line_error(capsys.readouterr().err)
    assert not (in_tmp / "out").exists()


def test_cli_transfer_missing_source_path(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["transfer", "--family", "cartpole", "--source", str(in_tmp / "nope"), "--targets", "long", "--quiet"]
    assert main(argv) == 2
    assert "does not exist" in one_line_error(capsys.readouterr().err)


def test_cli_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["transfer", "--family", "cartpole"])  # --targets is required
    assert info.value.code == 2
    assert "--targets" in capsys.readouterr().err


def test_cli_pretrain_tiny(in_tmp: Path) -> None:
    out = in_tmp / "src"
    assert (
        main(["pretrain", "--family", "cartpole", "--timesteps", "64", *hp_args(), "--out", str(out), "--quiet"]) == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["timesteps"] == 64 and manifest["hyperparams"]["n_envs"] == 1
    assert (out / "model.zip").exists()


def test_cli_transfer_tiny(source_dir: Path, in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = in_tmp / "transfer"
    argv = [
        "transfer",
        "--family",
        "cartpole",
        "--source",
        str(source_dir),
        "--targets",
        "long,heavy,{length: 0.9},{name: light, params: {masspole: 0.05}}",
        "--strategy",
        "freeze",
        "--timesteps",
        "256",  # two rollouts of the four tasks: one update learns
        *hp_args(),
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} >= {"model.zip", "manifest.json", "transfer_report.json", "curves.npz"}
    assert not list(out.parent.glob("transfer.partial*"))

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "transfer"
    assert manifest["strategy"]["name"] == "freeze"
    assert [t["name"] for t in manifest["targets"]] == ["long", "heavy", "custom2", "light"]
    assert manifest["targets"][2]["params"]["length"] == 0.9 and manifest["targets"][3]["params"]["masspole"] == 0.05
    assert manifest["source"]["zip_sha256"] == load_checkpoint(source_dir).sha256

    report = json.loads((out / "transfer_report.json").read_text())
    assert report["n_copied"] == 4
    assert sorted(report["frozen"]) == sorted(
        f"features_extractor.trunk.{i}.{leaf}" for i in (0, 2) for leaf in ("weight", "bias")
    )

    with np.load(out / "curves.npz") as curves:
        assert list(curves["task_names"]) == ["long", "heavy", "custom2", "light"]
        assert curves["returns"].shape == (4, len(curves["steps"]))
        assert curves["steps"][0] == 0
        assert np.all(np.isfinite(curves["returns"]))

    load_checkpoint(out)  # its own checksum matches
    # The fine-tuned multi-task policy is an ordinary SB3 zip.
    model = PPO.load(out / "model.zip", device="cpu")
    obs = {"obs": np.zeros((2, 4), dtype=np.float32), "task_id": np.array([0, 1])}
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (2,)
    # A second run into the same directory is refused.
    assert main(argv) == 2
    assert "already holds a finished run" in one_line_error(capsys.readouterr().err)


def test_timesteps_as_users_write_them(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hp = [
        arg
        for key, value in {"n_steps": 32, "batch_size": 32, "n_epochs": 1}.items()
        for arg in ("--hp", f"{key}={value}")
    ]
    assert (
        main(["pretrain", "--family", "cartpole", "--timesteps", "6.4e1", "--out", str(in_tmp / "a"), "--quiet", *hp])
        == 0
    )
    assert json.loads((in_tmp / "a" / "manifest.json").read_text())["hyperparams"]["n_timesteps"] == 64
    with pytest.raises(SystemExit):
        main(["pretrain", "--family", "cartpole", "--timesteps", "10.5", "--out", str(in_tmp / "b")])
    assert "'10.5' is not a whole number of steps (e.g. 100000 or 1e5)" in capsys.readouterr().err
    assert not (in_tmp / "b").exists()
