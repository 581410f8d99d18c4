"""Finished runs as agents: rebuilt from their manifests, they repeat their own final evaluation
(normalisation statistics included) and play other targets with a chosen head."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rltransfer.envs import get_family, make_eval_env
from specs import grid_spec
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy

from rltransfer import finetune, load_agent, pretrain
from rltransfer.checkpoint import load_checkpoint
from rltransfer.cli import main
from rltransfer.errors import UserError
from rltransfer.experiment.run import run_experiment

HP = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "n_envs": 1, "eval_freq": 64, "eval_episodes": 2}


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A CartPole source and a run fine-tuned from it on two targets."""
    root = tmp_path_factory.mktemp("cartpole")
    pretrain("cartpole", seed=0, timesteps=128, hyperparams=HP, out=root / "src")
    finetune(
        "cartpole", ["long", "longer"], root / "src", "finetune", seed=1, timesteps=128, hyperparams=HP, out=root / "ft"
    )
    return root / "src", root / "ft"


@pytest.fixture(scope="module")
def normalised(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """MountainCarContinuous (observations normalised, continuous returns): a source and a run."""
    root = tmp_path_factory.mktemp("mcc")
    hp = {**HP, "eval_episodes": 1, "eval_freq": 10_000}
    pretrain("mountaincarcontinuous", seed=0, timesteps=128, hyperparams=hp, out=root / "src")
    finetune(
        "mountaincarcontinuous", ["source", "weak"], root / "src", "finetune", seed=0, timesteps=128,
        hyperparams=hp, out=root / "ft",
    )  # fmt: skip
    return root / "src", root / "ft"


def test_a_source_repeats_its_own_evaluation(cartpole: tuple[Path, Path]) -> None:
    src, _ = cartpole
    agent = load_agent(src)
    manifest = json.loads((src / "manifest.json").read_text())
    assert (agent.kind, agent.task_names, agent.tasks) == ("source", ["source"], None)
    assert agent.evaluate()["source"][0] == manifest["eval"]["mean_return"]
    assert set(agent.evaluate(["long", {"length": 0.9}])) == {"long", "custom (length=0.9)"}


def test_a_run_repeats_its_final_evaluation(cartpole: tuple[Path, Path]) -> None:
    _, ft = cartpole
    agent = load_agent(ft)
    final = json.loads((ft / "manifest.json").read_text())["final_eval"]
    assert agent.kind == "transfer" and agent.task_names == ["long", "longer"]
    assert {name: mean for name, (mean, _) in agent.evaluate().items()} == final


def test_normalised_observations_use_the_runs_final_statistics(normalised: tuple[Path, Path]) -> None:
    src, ft = normalised
    manifest = json.loads((ft / "manifest.json").read_text())
    assert (
        manifest["obs_normalization"]["count"]
        > json.loads((src / "manifest.json").read_text())["obs_normalization"]["count"]
    ), "the run's own statistics, updated while fine-tuning, not the source's"
    agent = load_agent(ft)
    returns = {name: mean for name, (mean, _) in agent.evaluate().items()}
    assert returns == pytest.approx(manifest["final_eval"], rel=1e-9)
    agent.obs_stats = {**agent.obs_stats, "mean": [0.0, 0.0], "var": [1.0, 1.0]}  # type: ignore[dict-item]
    raw = {name: mean for name, (mean, _) in agent.evaluate().items()}
    assert raw != pytest.approx(returns, rel=1e-6), "the statistics must change what the policy sees"


def test_a_normalised_run_without_statistics_is_refused(normalised: tuple[Path, Path], tmp_path: Path) -> None:
    _, ft = normalised
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.zip").write_bytes((ft / "model.zip").read_bytes())
    manifest = json.loads((ft / "manifest.json").read_text())
    del manifest["obs_normalization"]  # as runs finished before the statistics were recorded
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"does not hold their statistics .*; train the run again"):
        load_agent(old)


def test_another_target_is_played_by_the_nearest_or_a_named_head(cartpole: tuple[Path, Path]) -> None:
    _, ft = cartpole
    agent = load_agent(ft)
    # As `generalize` plays it: the nearest task in range-normalised parameters (long: 0.75, longer: 1.0).
    nearest = agent.evaluate(["heavy", {"length": 0.9}, {"length": 0.8}])
    assert list(nearest) == [
        "heavy (head long)",
        "custom (length=0.9) (head longer)",
        "custom (length=0.8) (head long)",
    ]
    assert nearest["heavy (head long)"] == agent.evaluate("heavy", head="long")["heavy (head long)"]
    with pytest.raises(
        UserError, match=r"no cartpole task of this run learnt from permute-shifted .*, or name the head to play it"
    ):
        agent.evaluate(["permuted"])  # not silently through a head that never saw such inputs
    assert list(agent.evaluate(["permuted"], head="long")) == ["permuted (head long)"]
    played = agent.evaluate(["heavy", {"length": 0.9}, "longer"], head="long")
    assert list(played) == ["heavy (head long)", "custom (length=0.9) (head long)", "longer (head long)"]
    # The head decides: the same target under its own head and another's.
    assert agent.evaluate("longer", head="longer") == {"longer": agent.evaluate()["longer"]}
    with pytest.raises(UserError, match="head 'nope' is not a task of this run; choose one of: long, longer"):
        agent.evaluate(head="nope")
    with pytest.raises(UserError, match="given twice"):
        agent.evaluate(["long", "long"])
    with pytest.raises(
        UserError, match=r"^'acrobot/source' is of family acrobot and no task of this run is; .*\(cartpole\)$"
    ):
        agent.evaluate(["acrobot/source"])
    with pytest.raises(UserError, match="episodes must be at least 1"):
        agent.evaluate(episodes=0)
    with pytest.raises(UserError, match="seed must be >= 0, got -1"):
        agent.evaluate(seed=-1)


def test_the_env_serves_plain_sb3(cartpole: tuple[Path, Path]) -> None:
    """The rebuilt policy is the saved one: ``PPO.load`` of the zip acts the same on ``agent.env``."""
    _, ft = cartpole
    agent = load_agent(ft)
    env = agent.env("longer", n_envs=3)
    obs = env.reset()
    loaded = PPO.load(ft / "model.zip", device="cpu")
    for _ in range(20):
        ours = agent.model.predict(obs, deterministic=True)[0]
        np.testing.assert_array_equal(ours, loaded.predict(obs, deterministic=True)[0])
        obs = env.step(ours)[0]
    assert np.all(obs["task_id"] == 1)
    mean, _ = evaluate_policy(loaded, agent.env("long", n_envs=2), n_eval_episodes=2)
    assert mean > 0


def test_a_cross_space_run_plays_each_familys_targets(tmp_path: Path, cartpole: tuple[Path, Path]) -> None:
    src, _ = cartpole
    out = tmp_path / "cross"
    finetune("cartpole", ["long", "acrobot/source"], src, "freeze", seed=0, timesteps=64, hyperparams=HP, out=out)
    agent = load_agent(out)
    final = json.loads((out / "manifest.json").read_text())["final_eval"]
    assert {name: mean for name, (mean, _) in agent.evaluate().items()} == final
    assert list(agent.evaluate(["acrobot/long1"], head="acrobot/source")) == ["acrobot/long1 (head acrobot/source)"]
    with pytest.raises(UserError, match="head 'cartpole/long' plays cartpole tasks, not acrobot"):
        agent.evaluate(["acrobot/long1"], head="cartpole/long")
    # A task of the run by any of its names.
    assert list(agent.evaluate(["long", "rltransfer/Acrobot-source-v0"])) == ["cartpole/long", "acrobot/source"]


def test_a_chain_charges_every_step_and_carries_the_statistics(normalised: tuple[Path, Path], tmp_path: Path) -> None:
    """A fine-tuned run as the next source: its steps and its source's are charged, and the
    target starts from its final observation statistics."""
    src, ft = normalised
    first = load_checkpoint(ft)
    assert first.trained_steps == first.manifest["timesteps"] + load_checkpoint(src).trained_steps  # type: ignore[index]
    hp = {**HP, "eval_episodes": 1, "eval_freq": 10_000}
    result = finetune("mountaincarcontinuous", ["strong"], ft, "freeze", seed=0, timesteps=64, hyperparams=hp)
    assert result.manifest["source"]["timesteps"] == first.trained_steps
    assert result.report is not None
    count = first.manifest["obs_normalization"]["count"]  # type: ignore[index]
    assert f"statistics carried from the source (count {count:g})" in " ".join(result.report.notes)


def test_command_line(cartpole: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, ft = cartpole
    assert main(["evaluate", str(ft)]) == 0
    out = capsys.readouterr().out
    assert "transfer run" in out and "long" in out and "longer" in out and "threshold" in out
    assert main(["evaluate", str(ft), "--targets", "heavy,{length: 0.9}", "--head", "long", "--json"]) == 0
    played = json.loads(capsys.readouterr().out)
    assert list(played) == ["heavy (head long)", "custom1 (length=0.9) (head long)"]
    heavy = played["heavy (head long)"]
    assert heavy["head"] == "long" and heavy["threshold"] == 475.0 and heavy["reached"] == (heavy["mean"] >= 475)
    assert heavy["episodes"] == 2 and heavy["seeds"] == [10001, 10002] and heavy["deterministic"] is True
    assert main(["evaluate", str(ft), "--targets", "heavy", "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == ["heavy (head long)"]
    assert main(["evaluate", str(ft.parent)]) == 2
    err = capsys.readouterr().err
    assert "holds no model.zip; pass one run's directory:" in err and str(ft) in err
    assert main(["evaluate", str(ft.parent / "nope")]) == 2
    assert "does not exist; pass a run directory" in capsys.readouterr().err


def test_a_plain_zip_is_not_a_run(tmp_path: Path) -> None:
    PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, device="cpu").save(tmp_path / "plain.zip")
    with pytest.raises(UserError, match=r"is a plain SB3 zip, not an rltransfer run; load it with PPO\.load") as e:
        load_agent(tmp_path / "plain.zip")
    assert f"`rltransfer advise --source {tmp_path / 'plain.zip'} --family F --targets ...`" in str(e.value)


def test_a_manifest_without_its_kind_is_damaged(cartpole: tuple[Path, Path], tmp_path: Path) -> None:
    _, ft = cartpole
    run = tmp_path / "run"
    shutil.copytree(ft, run)
    (run / "manifest.json").write_text("{}")
    with pytest.raises(UserError, match=r"manifest.json' is damaged \(it records no kind\); restore it"):
        load_agent(run)


def test_a_grid_from_a_fine_tuned_run_reports_its_lineage(cartpole: tuple[Path, Path], tmp_path: Path) -> None:
    """A spec's ``checkpoint:`` may be a fine-tuned run: the report charges the chain and says how
    to read the source's own returns."""
    _, ft = cartpole
    spec = grid_spec("chain", source={"checkpoint": str(ft)}, targets=["heavy"], seeds=1, timesteps=64)
    result, report = run_experiment(spec, out=tmp_path / "chain", workers=1, progress=False)
    assert not result.failed and report is not None
    text = (report / "report.md").read_text()
    assert f"`rltransfer evaluate {ft}` gives its return on each" in text
    charged = load_checkpoint(ft).trained_steps
    assert charged is not None and charged > json.loads((ft / "manifest.json").read_text())["timesteps"]
    assert f"| freeze | heavy | {charged:,} |" in text


def test_an_observation_shift_target_keeps_its_shift(
    cartpole: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest records a shift variant by name and parameters; the rebuilt task shifts again."""
    src, _ = cartpole
    finetune("cartpole", ["long", "permuted"], src, "freeze", seed=0, timesteps=64, hyperparams=HP, out=tmp_path / "r")
    agent = load_agent(tmp_path / "r")
    family = get_family("cartpole")
    expected = make_eval_env(family, family.variant("permuted"), 2, 1, 2)
    expected.seed(3)
    env = agent.env("permuted", n_envs=2)
    env.seed(3)
    np.testing.assert_array_equal(env.reset()["obs"], expected.reset()["obs"])
    plain = make_eval_env(family, family.variant("source"), 2, 1, 2)  # the same physics unshifted
    plain.seed(3)
    assert not np.array_equal(env.reset()["obs"], plain.reset()["obs"])
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert {name: mean for name, (mean, _) in agent.evaluate().items()} == manifest["final_eval"]
    # `evaluate` plays a head on other observations when asked, and says so.
    assert main(["evaluate", str(tmp_path / "r"), "--targets", "heavy", "--head", "permuted", "--episodes", "1"]) == 0
    assert (
        "note: heavy (head permuted): the head learnt from permute-shifted observations, the target gives "
        "unshifted observations" in " ".join(capsys.readouterr().out.split())
    )
    assert manifest["targets"][1]["shift"] == {"kind": "permute", "amount": 0.0, "offset": 0.0, "seed": 0}
    # A manifest written before shifts were recorded: the family's own variant of that name and values.
    older = tmp_path / "older"
    older.mkdir()
    (older / "model.zip").write_bytes((tmp_path / "r" / "model.zip").read_bytes())
    del manifest["targets"][1]["shift"]
    (older / "manifest.json").write_text(json.dumps(manifest))
    again = load_agent(older).env("permuted", n_envs=2)
    again.seed(3)
    expected.seed(3)
    np.testing.assert_array_equal(again.reset()["obs"], expected.reset()["obs"])
