"""Families written as data (a YAML file, or a spec's own ``family:``), and a user's family found
from any working directory: by the spec, the command line and a finished run."""

from __future__ import annotations

import json
import re
import textwrap
import uuid
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch
import yaml
from rltransfer.envs import FAMILIES, family_from_mapping, get_family
from specs import HP as TINY
from specs import grid_spec
from user_families import MODULE, PENDULUM_G, cli, write_family, write_module

from rltransfer.errors import UserError
from rltransfer.experiment.spec import load_spec
from rltransfer.resolve import resolve_family


def test_a_gymnasium_id_becomes_a_family_in_a_spec(tmp_path: Path) -> None:
    spec = grid_spec("pg", family=PENDULUM_G, targets=["g12", "g15"])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    family = load_spec(path).family
    assert family.title == "PendG" and family.ref == f"{path}#family"
    assert family.entry_point == "gymnasium.envs.classic_control.pendulum:PendulumEnv"
    assert family.max_episode_steps == 200  # the id's own time limit
    assert [(v.name, v.distance) for v in family.variants] == [("source", "source"), ("g12", "near"), ("g15", "far")]
    env = family.make("g15")
    assert env.unwrapped.g == 15.0 and env.spec is not None and env.spec.max_episode_steps == 200


def test_an_ids_own_arguments_are_kept_under_env_kwargs_and_parameters(tmp_path: Path) -> None:
    from gymnasium.envs.classic_control.pendulum import PendulumEnv

    gym.register(id="rltransfer-test/LowG-v0", entry_point=PendulumEnv, kwargs={"g": 5.0})
    with pytest.raises(UserError, match="registered with a callable; give its class as entry_point"):
        resolve_family(str(write_family(tmp_path, {**PENDULUM_G, "env": "rltransfer-test/LowG-v0"})))
    gym.register(
        id="rltransfer-test/LowGByName-v0",
        entry_point="gymnasium.envs.classic_control.pendulum:PendulumEnv",
        kwargs={"g": 5.0},
        max_episode_steps=77,
        reward_threshold=-100.0,
    )
    low = {"name": "low-g", "env": "rltransfer-test/LowGByName-v0", "params": {}, "far": {"same": {}}}
    family = resolve_family(str(write_family(tmp_path, low)))
    assert family.make("source").unwrapped.g == 5.0  # the id's own argument
    assert family.threshold == -100.0 and family.max_episode_steps == 77
    family = resolve_family(str(write_family(tmp_path, {**low, "name": "low-g7", "env_kwargs": {"g": 7.0}})))
    assert family.make("same").unwrapped.g == 7.0  # env_kwargs over the id's


@pytest.mark.parametrize(
    ("changes", "token", "message"),
    [
        ({"colour": "red"}, "colour:", "unknown key 'colour'"),
        ({"env": "NoSuchEnv-v0"}, "env:", "NoSuchEnv.*give a registered Gymnasium id"),
        ({"entry_point": "x:Y"}, "env:", "either env .* or entry_point"),
        ({"threshold": None}, "family:", "declares no reward_threshold; give threshold"),
        ({"params": {"g": [10.0, 1.0]}}, "g:", r"give \[default, low, high\] or"),
        ({"params": {"g": {"default": 10.0, "low": 1.0}}}, "g:", r"give \{default, low, high\}"),
        ({"far": {"g15": {"g": 99.0}}}, "family:", r"g=99.0 is outside its valid range \[1.0, 30.0\]"),
        ({"far": {"g15": {"gee": 15.0}}}, "family:", "no parameter 'gee'"),
        ({"far": {"g15": 15.0}}, "g15:", "a variant is a mapping of parameter values"),
        ({"held_out": {"g": [25.0, 40.0]}}, "family:", r"held-out band g \[25.0, 40.0\] must lie within"),
        ({"held_out": {"g": [11.0, 13.0]}}, "family:", "variant 'g12' lies in the held-out band, which no variant"),
        ({"max_episode_steps": 0}, "max_episode_steps:", "must be a positive integer"),
        ({"params": {"gee": [10.0, 1.0, 30.0]}, "near": {}, "far": {}}, "family:", "unexpected keyword argument 'gee'"),
    ],
)
def test_mistakes_in_a_written_family_name_their_line(
    tmp_path: Path, changes: dict[str, Any], token: str, message: str
) -> None:
    definition = {k: v for k, v in {**PENDULUM_G, **changes}.items() if v is not None}
    if "entry_point" in changes:
        definition["env"] = PENDULUM_G["env"]
    spec = {"name": "bad", "family": definition, "targets": ["source"], "arms": ["scratch"]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(UserError, match=message) as e:
        load_spec(path)
    found = re.match(rf"{re.escape(str(path))}:(\d+): ", str(e.value))
    assert found is not None and "\n" not in str(e.value)
    # The line named is the key at fault (or `family:` for what only the whole definition shows).
    assert path.read_text().splitlines()[int(found.group(1)) - 1].strip().startswith(token)


def test_command_line_takes_a_family_file(tmp_path: Path, here: Any) -> None:
    write_family(tmp_path, PENDULUM_G)
    code, out, err = here("envs", "--family", "pend-g.yaml", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["family"] == "pend-g"
    hp = [f"--hp={k}={v}" for k, v in TINY.items()]
    code, _, err = here("pretrain", "--family", "pend-g.yaml", "--timesteps", "32", "--quiet", *hp)
    assert code == 0, err
    manifest = json.loads((tmp_path / "runs/sources/pend-g-source-seed0/manifest.json").read_text())
    assert manifest["family_definitions"]["pend-g"]["ref"] == "pend-g.yaml"
    # An experiment spec given as the family: the family it defines, recorded as the spec's runs record it.
    spec = {"name": "exp", "family": PENDULUM_G, "targets": ["source"], "arms": ["scratch"]}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    code, out, err = here("envs", "--family", "exp.yaml", "--json")
    assert code == 0 and json.loads(out)[0]["family"] == "pend-g", err
    assert load_spec(tmp_path / "exp.yaml").family.ref == get_family(str(tmp_path / "exp.yaml")).ref
    (tmp_path / "named.yaml").write_text("family: cartpole\ntargets: [long]\narms: [scratch]\n")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- pend-g\n")
    for family, message in (
        ("broken.yaml", "malformed YAML"),
        ("absent.yaml", "cannot read family file"),
        ("list.yaml", "list.yaml: family definition: must be a mapping"),
        ("named.yaml", "'named.yaml' is an experiment spec of family 'cartpole'; pass --family cartpole"),
        ("fams/pend.py:PEND", "names a Python file; name its module and the Family in it instead: fams.pend:PEND"),
    ):
        code, _, err = here("envs", "--family", family)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_written_family_learns_exactly_as_the_shipped_one_of_the_same_dynamics() -> None:
    """Gymnasium's Pendulum-v1 written as data, against the shipped pendulum family (the same
    physics at its default mass and length; batched there, a DummyVecEnv here): same numbers."""
    from rltransfer.finetuning import finetune
    from rltransfer.hyperparams import default_hyperparams
    from rltransfer.pretraining import pretrain

    shipped = FAMILIES["pendulum"]
    written = resolve_family(family_from_mapping({**PENDULUM_G, "hyperparams": default_hyperparams("pendulum")}))
    hp = {**TINY, "n_envs": 2, "eval_freq": 64, "eval_episodes": 2}
    results = []
    for family in (shipped, written):
        source = pretrain(family, seed=3, timesteps=128, hyperparams=hp)
        tuned = finetune(family, ["g12", "g15"], None, "scratch", seed=3, timesteps=128, hyperparams=hp)
        weights = [p.detach().clone() for p in source.model.policy.parameters()]
        results.append((source.curve.returns, tuned.curve.returns, weights))
    (src_a, tuned_a, w_a), (src_b, tuned_b, w_b) = results
    assert src_a == src_b and tuned_a == tuned_b
    assert all(torch.equal(a, b) for a, b in zip(w_a, w_b, strict=True))


def test_a_family_beside_its_spec_is_found_from_another_directory(tmp_path: Path, here: Any) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    name = write_module(specs)
    spec = grid_spec("swing", family=f"{name}:FAMILY", targets=["g12"], arms=["scratch"], seeds=1, timesteps=32)
    (specs / "spec.yaml").write_text(yaml.safe_dump(spec))
    # Run from tmp_path: the module is neither importable nor in the working directory, but beside the spec.
    code, _, err = here("run", "specs/spec.yaml", "--workers", "1", "--quiet")
    assert code == 0, err
    code, _, err = here("report", "runs/swing")  # rebuilt from the recorded spec, found the same way
    assert code == 0, err

    write_family(specs, PENDULUM_G)
    (specs / "data.yaml").write_text(yaml.safe_dump({**spec, "family": "pend-g.yaml"}))
    assert load_spec(Path("specs/data.yaml")).family.ref == str(Path("specs") / "pend-g.yaml")


def test_a_runs_family_is_found_from_any_working_directory(
    tmp_path: Path, here: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spec naming its family by a package path from a directory above it (``lab.mod:FAMILY`` for a
    spec in ``proj/lab/``) runs from elsewhere; its runs, and those of a family the spec defines
    (recorded as ``spec.yaml#family``), act from any working directory."""
    package = f"lab{uuid.uuid4().hex[:8]}"
    home = tmp_path / "proj" / package
    home.mkdir(parents=True)
    name = f"userfam_{uuid.uuid4().hex[:8]}"
    (home / f"{name}.py").write_text(textwrap.dedent(MODULE).format(module=f"{package}.{name}", tag=name[-8:]))
    spec = grid_spec("swing", family=f"{package}.{name}:FAMILY", targets=["g12"], arms=["scratch"], seeds=1)
    (home / "spec.yaml").write_text(yaml.safe_dump({**spec, "timesteps": 32}))
    (home / "data.yaml").write_text(yaml.safe_dump({**spec, "name": "data", "family": PENDULUM_G, "timesteps": 32}))
    for spec_file, out in (("spec.yaml", "grid"), ("data.yaml", "data")):
        code, _, err = here("run", f"proj/{package}/{spec_file}", "--out", out, "--workers", "1", "--quiet")
        assert code == 0, err
    definition = json.loads((tmp_path / "grid" / "scratch" / "seed0" / "manifest.json").read_text())
    assert definition["family_definitions"]["swing"]["found_in"] == str((tmp_path / "proj").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # A fresh process, where the module is not imported yet: found where the run found it.
    played = cli(elsewhere, "evaluate", str(tmp_path / "grid" / "scratch" / "seed0"), "--episodes", "1", "--json")
    assert played.returncode == 0, played.stderr
    assert list(json.loads(played.stdout)) == ["g12"]
    rebuilt = cli(elsewhere, "report", "../grid")  # the recorded spec's directory leads to the module
    assert rebuilt.returncode == 0, rebuilt.stderr

    monkeypatch.chdir(elsewhere)
    code, out, err = here("evaluate", "../data/scratch/seed0", "--episodes", "1", "--json")
    assert code == 0 and list(json.loads(out)) == ["g12"], err
    # Resumed from there, the spec's family is read as ../proj/...: the same family, comparable runs.
    code, _, err = here(
        "run", f"../proj/{package}/data.yaml", "--out", "../data", "--resume", "--seeds", "2", "--quiet"
    )
    assert code == 0, err
    assert "NOT COMPARABLE" not in (tmp_path / "data" / "report" / "report.md").read_text()
