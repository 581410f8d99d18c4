"""User-defined families: loaded by ``module:ATTRIBUTE`` from the CLI, specs and Python, with their
own hyperparameters, recorded in manifests, registered lazily in worker processes, and shipped to
Ray workers that lack the module; every mistake in a reference or a definition is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import yaml
from rltransfer.envs import FAMILIES, Family, Param, Variant, get_family
from specs import HP as TINY
from specs import grid_spec
from user_families import MODULE, cli, write_module

from rltransfer.errors import UserError
from rltransfer.experiment.spec import load_spec
from rltransfer.hyperparams import resolve_hyperparams
from rltransfer.io import sha256
from rltransfer.resolve import resolve_family

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.syspath_prepend(str(tmp_path))
    return write_module(tmp_path)


def test_reference_loads_registers_and_remembers_itself(user_module: str) -> None:
    family = get_family(f"{user_module}:FAMILY")
    assert family.name == "swing" and family.ref == f"{user_module}:FAMILY"
    assert "swing" not in FAMILIES  # shipped families stay as they are
    env = gym.make(family.env_id("g12"))
    assert env.unwrapped.g == 12.0 and env.spec is not None and env.spec.max_episode_steps == 50
    assert resolve_family(f"{user_module}:FAMILY") == family
    # The shipped families load by reference too, as themselves.
    assert get_family("rltransfer.envs.cartpole:CARTPOLE") is FAMILIES["cartpole"]


def test_a_family_unknown_to_this_process_registers_when_first_built(user_module: str) -> None:
    # As in a worker process: the Family arrives pickled, its ids not registered there yet.
    family = get_family(f"{user_module}:FAMILY")
    for variant in family.all_variants():
        gym.registry.pop(family.env_id(variant), None)
    assert family.make("g15").unwrapped.g == 15.0


def test_user_hyperparameters_sit_over_the_generic_defaults(user_module: str) -> None:
    family = get_family(f"{user_module}:FAMILY")
    hp = resolve_hyperparams(family, {"n_steps": 64})
    assert hp["n_timesteps"] == 4096 and hp["gamma"] == 0.9  # the family's own
    assert hp["n_steps"] == 64  # the caller's
    assert hp["batch_size"] == 64 and hp["n_epochs"] == 10 and hp["learning_rate"] == 3e-4  # SB3's PPO defaults
    assert hp["normalize"] is False and hp["trunk_arch"] == [64, 64]
    # A shipped family keeps its tuned block.
    assert resolve_hyperparams("cartpole")["n_steps"] == 32


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_module_xyz:FAMILY", "cannot import module 'no_such_module_xyz'"),
        ("{m}:MISSING", "has no attribute 'MISSING'"),
        ("{m}:NOT_A_FAMILY", "is a int, not a rltransfer.envs.Family"),
        ("{m}:", "must look like module:ATTRIBUTE"),
        ("nope", "unknown family 'nope'.*module:ATTRIBUTE"),
    ],
)
def test_bad_references_are_one_line(user_module: str, ref: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as e:
        resolve_family(ref.format(m=user_module))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("import not_installed_dep_xyz\n", "failed: No module named 'not_installed_dep_xyz'; install it"),
        ("raise RuntimeError('boom')\n", "failed: RuntimeError: boom"),
        (MODULE.replace('name="swing"', 'name="cartpole"'), "named 'cartpole' like a shipped family"),
        (MODULE.replace('title="Swing{tag}"', 'title="CartPole"'), "already registered for another environment"),
        (MODULE.replace('"g": 15.0', '"g": 99.0'), r"outside its valid range \[1.0, 30.0\]"),
        (MODULE.replace('Variant("g12", {{"g": 12.0}}, "near")', 'Variant("g12", {{}}, "source")'), "exactly one"),
        (MODULE.replace('Param("g", 10.0,', 'Param("g", 0.5,'), "default 0.5 lies outside"),
    ],
)
def test_bad_modules_and_definitions_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, message: str
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    name = write_module(tmp_path, body)
    with pytest.raises(UserError, match=message) as e:
        resolve_family(f"{name}:FAMILY")
    assert "\n" not in str(e.value)


def test_a_lookalike_of_a_shipped_family_is_refused() -> None:
    lookalike = Family(
        "cartpole",
        "Other",
        "gymnasium.envs.classic_control.cartpole:CartPoleEnv",
        (),
        (Variant("source", {}, "source"),),
    )
    with pytest.raises(UserError, match="like a shipped family"):
        resolve_family(lookalike)
    with pytest.raises(ValueError, match="must look like module:Class"):
        Family("x", "X", "CartPole-v1", (Param("a", 1, 0, 2),), (Variant("source", {}, "source"),))


def test_command_line_pretrains_and_runs_a_grid_of_a_user_family(tmp_path: Path, here: Any) -> None:
    name = write_module(tmp_path)
    ref = f"{name}:FAMILY"
    code, out, err = here("envs", "--family", ref, "--json")
    assert code == 0, err
    assert [v["name"] for v in json.loads(out)[0]["variants"]][:3] == ["source", "g12", "g15"]

    hp = [f"--hp={k}={v}" for k, v in TINY.items()]
    code, _, err = here("pretrain", "--family", ref, "--timesteps", "64", "--quiet", *hp)
    assert code == 0, err
    manifest = json.loads((tmp_path / "runs/sources/swing-source-seed0/manifest.json").read_text())
    definition = manifest["family_definitions"]["swing"]
    assert definition["ref"] == ref and definition["entry_point"] == f"{name}:Swing"
    assert manifest["hyperparams"]["gamma"] == 0.9  # the family's own hyperparameters

    spec = grid_spec("swing", family=ref, targets=["g12", {"name": "g14", "params": {"g": 14.0}}], timesteps=64)
    spec["source"]["timesteps"] = 64
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    # Two spawned worker processes: each gets the family pickled and the module from the inherited path.
    grid = cli(tmp_path, "run", "spec.yaml", "--workers", "2", "--quiet")
    assert grid.returncode == 0, grid.stderr
    runs = sorted((tmp_path / "runs/swing").glob("*/seed*/manifest.json"))
    assert len(runs) == 4 and not list((tmp_path / "runs/swing").glob("*/*.failed.json"))
    for path in runs:
        assert json.loads(path.read_text())["family_definitions"]["swing"]["ref"] == ref
    assert (tmp_path / "runs/swing/report/report.md").is_file()

    code, _, err = here("pretrain", "--family", "absent_module_xyz:FAMILY")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "cannot import module 'absent_module_xyz'" in err


def test_ray_ships_the_users_module_to_workers_without_it(tmp_path: Path) -> None:
    """The module is uploaded when the session opens; its directory then disappears, as on a node
    that never had it, so every run must import the shipped copy."""
    pytest.importorskip("ray")
    home = tmp_path / "home"
    home.mkdir()
    name = write_module(home)
    spec = grid_spec("swing", family=f"{name}:FAMILY", targets=["g12"], seeds=1, timesteps=32)
    spec["source"]["timesteps"] = 32
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    script = textwrap.dedent(
        f"""
        import contextlib, shutil, sys
        sys.path.insert(0, {str(home)!r})
        from rltransfer.experiment import ray_backend
        opened = ray_backend.ray_session

        @contextlib.contextmanager
        def session(*args, **kwargs):
            with opened(*args, **kwargs):
                shutil.rmtree({str(home)!r})  # uploaded already: the workers must not need it here
                yield

        ray_backend.ray_session = session
        from rltransfer.cli import main
        sys.exit(main(["run", {str(tmp_path / "spec.yaml")!r}, "--backend", "ray", "--workers", "2",
                       "--out", {str(tmp_path / "out")!r}, "--quiet"]))
        """
    )
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not home.exists()
    assert len(list((tmp_path / "out").glob("*/seed*/manifest.json"))) == 2
    assert not list((tmp_path / "out").glob("*/*.failed.json"))


def test_the_shipped_pointmass_example_spec_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    spec = load_spec(Path("experiments/pointmass.yaml"))
    assert spec.family.name == "pointmass" and spec.family.ref == "experiments.pointmass:POINT_MASS"
    assert resolve_hyperparams(spec.family)["n_steps"] == 128
    assert isinstance(spec.family.params[0], Param)
    assert spec.family.make("heavy").unwrapped.mass == 2.0


def test_a_changed_definition_refuses_resume_and_changed_code_is_not_comparable(tmp_path: Path, here: Any) -> None:
    name = write_module(tmp_path)
    module = tmp_path / f"{name}.py"
    spec = grid_spec("swing", family=f"{name}:FAMILY", targets=["g12"], arms=["scratch"], seeds=1, timesteps=32)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    code, _, err = here("run", "spec.yaml", "--workers", "1", "--quiet")
    assert code == 0, err
    manifest = json.loads((tmp_path / "runs/swing/scratch/seed0/manifest.json").read_text())
    assert manifest["family_definitions"]["swing"]["code_sha256"] == {name: sha256(module)}

    # Another definition under the same spec: the finished run is of another experiment.
    original = module.read_text()
    module.write_text(original.replace('"g": 12.0', '"g": 13.0'))
    code, _, err = here("run", "spec.yaml", "--resume", "--seeds", "2", "--workers", "1", "--quiet")
    assert (
        code == 2 and "holds runs of a different experiment ('swing', the definition of family 'swing' differs" in err
    )

    # The same definition, other code: the grid resumes, and its report says the runs differ.
    module.write_text(original.replace("super().__init__(", "super().__init__(  # edited\n            "))
    code, _, err = here("run", "spec.yaml", "--resume", "--seeds", "2", "--workers", "1", "--quiet")
    assert code == 0, err
    report = (tmp_path / "runs/swing/report/report.md").read_text()
    assert "NOT COMPARABLE" in report and f"family swing: code of {name}" in report
    assert f"| family loaded from | {name}:FAMILY |" in report


@pytest.mark.parametrize(
    ("entry_point", "params", "message"),
    [
        ("gymnasium.envs.toy_text.frozen_lake:FrozenLakeEnv", (), r"observations are Discrete\(16\); the trunk takes"),
        (
            "gymnasium.envs.classic_control.pendulum:PendulumEnv",
            (Param("gee", 10.0, 1.0, 30.0),),
            "'gee'.*constructor argument",
        ),
        ("no_module_here_xyz:Env", (), "building its source environment.*make the module importable"),
    ],
)
def test_an_environment_the_policy_cannot_take_is_refused_on_load(
    entry_point: str, params: tuple[Param, ...], message: str
) -> None:
    title = f"Check{uuid.uuid4().hex[:8]}"
    family = Family("check", title, entry_point, params, (Variant("source", {}, "source"),), max_episode_steps=20)
    with pytest.raises(UserError, match=message) as e:
        resolve_family(family)
    assert "\n" not in str(e.value)
