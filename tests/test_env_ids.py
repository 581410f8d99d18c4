"""The Gymnasium ids ``rltransfer envs`` lists name variants wherever a variant is named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rltransfer.envs import get_family, split_env_id

from rltransfer.checkpoint import load_checkpoint
from rltransfer.cli import main
from rltransfer.errors import UserError
from rltransfer.experiment.spec import parse_spec
from rltransfer.resolve import resolve_variant
from rltransfer.tasks import resolve_targets

TINY_HP = ["n_steps=32", "n_envs=1", "batch_size=32", "n_epochs=1", "eval_freq=64", "eval_episodes=1"]


def test_an_id_names_its_family_and_variant() -> None:
    cartpole = get_family("cartpole")
    assert split_env_id("rltransfer/CartPole-long-v0") == (cartpole, "long")
    assert split_env_id("rltransfer/CartPole-heldout0-v0") == (cartpole, "heldout0")
    assert split_env_id("long") is None and split_env_id("acrobot/long1") is None
    assert cartpole.variant("rltransfer/CartPole-heavy-v0") == cartpole.variant("heavy")
    assert resolve_variant(cartpole, "rltransfer/CartPole-long-v0").params == {"length": 0.75}
    with pytest.raises(ValueError, match="names no family rltransfer knows"):
        split_env_id("rltransfer/Cartpole-long-v0")  # titles are case-sensitive, as Gymnasium's ids
    with pytest.raises(UserError, match="no Gymnasium id of family 'cartpole', whose ids are rltransfer/CartPole-"):
        resolve_variant(cartpole, "rltransfer/Acrobot-long1-v0")


def test_targets_by_id_cross_families_too() -> None:
    tasks = resolve_targets("cartpole", ["rltransfer/CartPole-heavy-v0", "longer", "rltransfer/Acrobot-long1-v0"])
    assert tasks.names == ["cartpole/heavy", "cartpole/longer", "acrobot/long1"]
    assert tasks.tasks[2].family is get_family("acrobot")
    with pytest.raises(UserError, match=r"has no variant 'lnog' \(did you mean 'long'\?\); choose one of"):
        resolve_targets("cartpole", ["lnog"])
    with pytest.raises(UserError, match="has no variant 'nope'"):
        resolve_targets("cartpole", ["rltransfer/CartPole-nope-v0"])


def test_gymnasiums_own_id_as_a_variant_names_the_default_one() -> None:
    says = r"'CartPole-v1' is Gymnasium's own id; .* variant 'source' \(rltransfer/CartPole-source"
    with pytest.raises(UserError, match=says):
        resolve_targets("cartpole", ["CartPole-v1", "long"])
    with pytest.raises(UserError, match="has no variant 'Acrobot-v1'"):  # another family's id is no hint here
        resolve_targets("cartpole", ["Acrobot-v1"])


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("rltransfer/CartPole-long-v0", "is the Gymnasium id of variant 'long' of family 'cartpole'"),
        ("CartPole-v1", "is a Gymnasium id; rltransfer's family of CartPole environments is 'cartpole'"),
        ("MountainCarContinuous-v0", "family of MountainCarContinuous environments is 'mountaincarcontinuous'"),
        ("cartpole/long", "is variant 'long' of family 'cartpole'; name the family"),  # as --targets names one
    ],
)
def test_an_id_where_a_family_is_named_says_which_family(name: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        get_family(name)


@pytest.mark.parametrize("family", ["rltransfer/CartPole-long-v0", "cartpole/long"])
def test_pretrain_family_given_as_an_id(tmp_path: Path, capsys: pytest.CaptureFixture[str], family: str) -> None:
    hp = [arg for item in TINY_HP for arg in ("--hp", item)]
    out = tmp_path / "src"
    args = ["pretrain", "--family", family, "--timesteps", "64", "--quiet", *hp]
    assert main([*args, "--out", str(out)]) == 0
    assert load_checkpoint(out).manifest["variant"]["name"] == "long"
    assert main([*args, "--variant", "heavy", "--out", str(tmp_path / "two")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is variant 'long' of family 'cartpole'; drop --variant" in err
    assert main(["transfer", "--family", family, "--targets", "long", "--source", str(out)]) == 2
    assert "name the family (cartpole)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # nothing written by the refused commands


def test_spec_names_source_and_targets_by_id() -> None:
    raw = {
        "family": "cartpole",
        "source": {"variant": "rltransfer/CartPole-heavy-v0"},
        "targets": [
            "rltransfer/CartPole-long-v0",
            "rltransfer/Acrobot-long1-v0",
            {"variant": "rltransfer/CartPole-weak-v0"},
        ],
        "arms": ["scratch"],
    }
    spec = parse_spec(raw)
    assert spec.source.variant.name == "heavy"
    assert [f"{t.family.name}/{t.variant.name}" for t in spec.targets] == [
        "cartpole/long",
        "acrobot/long1",
        "cartpole/weak",
    ]


def test_one_task_under_two_names_is_trained_once(
    tmp_path: Path, source_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `--targets long,{length: 0.75}` trained two heads on one task and counted it twice
    in the pooled figures."""
    monkeypatch.chdir(tmp_path)
    base = ["transfer", "--source", str(source_dir), "--family", "cartpole", "--strategy", "finetune", "--out", "o"]
    for targets, names in [
        ("long,{length: 0.75}", "'cartpole/long' and 'cartpole/custom1'"),
        ("{length: 0.9},heavy,{length: 0.9}", "'cartpole/custom0' and 'cartpole/custom2'"),
        ("heavy,{name: mine, params: {masscart: 2.0, masspole: 0.5}}", "'cartpole/heavy' and 'cartpole/mine'"),
    ]:
        assert main([*base, "--targets", targets, "--timesteps", "64"]) == 2
        err = capsys.readouterr().err
        assert f"targets {names} are the same task" in err and not (tmp_path / "o").exists(), err
    spec = {"name": "twice", "family": "cartpole", "targets": ["source", {"name": "plain", "params": {}}],
            "arms": ["scratch"], "mode": "per-target"}  # fmt: skip
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["run", "spec.yaml", "--out", "g", "--dry-run"]) == 2
    assert "targets 'cartpole/source' and 'cartpole/plain' are the same task" in capsys.readouterr().err
